"""`porter convert` keeps the user's config.json: hf-to-megatron stores it in the checkpoint,
megatron-to-hf writes it back changed only where the checkpoint's args (what training can
change) differ; every tensor's shape is checked against the config before anything is written."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from porter.cli import app
from porter.convert.checkpoint import TAG
from porter.verify.user_model import reference_from_file, shrink
from tests.families.battery import published


def users_folder(folder, stem):
    """A tiny model of a published config: the user's file (sizes shrunk) and its weights."""
    shrunk = shrink(published(stem))
    reference_from_file(shrunk.config, "LlamaForCausalLM", 0.1, 3, "sdpa").save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps(shrunk.config, indent=2))
    return folder, shrunk.config


def convert(*args):
    return CliRunner().invoke(app, ["convert", *args])


@pytest.fixture(scope="module")
def llama3_round_trip(families_tree, tmp_path_factory):
    """Meta-Llama-3-8B's file (rope_scaling null) through the llama3 port (LLaMA-3.1's scaling as
    its default) and back."""
    root = tmp_path_factory.mktemp("users_file")
    folder, sent = users_folder(root / "Meta-Llama-3-8B", "meta-llama--Meta-Llama-3-8B")
    there = convert("hf-to-megatron", "--hf", str(folder), "--out", str(root / "ckpt"), "--target", str(families_tree),
                    "--model", "llama3")
    assert there.exit_code == 0, there.output
    back = convert("megatron-to-hf", "--load", str(root / "ckpt"), "--out", str(root / "back"),
                   "--target", str(families_tree), "--model", "llama3")
    assert back.exit_code == 0, back.output
    return root, folder, sent


def test_the_users_file_comes_back_as_it_was(llama3_round_trip):
    root, folder, sent = llama3_round_trip
    returned = json.loads((root / "back" / "config.json").read_text())
    # the weights are fp32 (the file said bfloat16): the one field that says what the weights are
    assert returned == {**sent, "torch_dtype": "float32"}
    mine, theirs = load_file(str(root / "back" / "model.safetensors")), load_file(str(folder / "model.safetensors"))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_checkpoint_holds_the_file_and_the_args_say_no_scaling(llama3_round_trip):
    root, _, sent = llama3_round_trip
    state = torch.load(root / "ckpt" / TAG / "mp_rank_00_model_states.pt", weights_only=False)
    assert state["porter"]["hf_config"] == sent
    args = state["args"]
    assert args.rope_scaling_type == "none" and args.rope_theta == 500000.0  # not the llama3 port's default


def test_what_training_changed_is_all_that_changes(llama3_round_trip, families_tree):
    root, _, sent = llama3_round_trip
    path = root / "ckpt" / TAG / "mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=False)
    state["args"].rope_theta = 1e6  # a run that trained with --rope-theta 1e6
    state["args"].layernorm_epsilon = 1e-6
    trained = root / "ckpt-trained"
    import shutil

    shutil.copytree(root / "ckpt", trained)
    torch.save(state, trained / TAG / "mp_rank_00_model_states.pt")
    for name in (trained / TAG).glob("mp_rank_*_model_states.pt"):
        torch.save(state, name)
    back = convert("megatron-to-hf", "--load", str(trained), "--out", str(root / "back-trained"),
                   "--target", str(families_tree), "--model", "llama3")
    assert back.exit_code == 0, back.output
    returned = json.loads((root / "back-trained" / "config.json").read_text())
    assert returned == {**sent, "torch_dtype": "float32", "rope_theta": 1e6, "rms_norm_eps": 1e-6}


def test_a_tensor_that_contradicts_the_config_is_refused_before_anything_is_written(families_tree, tmp_path):
    folder, sent = users_folder(tmp_path / "Meta-Llama-3-8B", "meta-llama--Meta-Llama-3-8B")
    state = load_file(str(folder / "model.safetensors"))
    key = "model.layers.1.self_attn.k_proj.weight"
    expected = list(state[key].shape)
    state[key] = torch.zeros(expected[0] * 2, expected[1])  # the rows of twice the key/value heads
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "ckpt"
    result = convert("hf-to-megatron", "--hf", str(folder), "--out", str(out), "--target", str(families_tree),
                     "--model", "llama3")
    assert result.exit_code == 2, result.output
    assert key in result.output and str([expected[0] * 2, expected[1]]) in result.output
    assert str(expected) in result.output and "2 key/value heads" in result.output
    assert not out.exists()


def test_a_checkpoint_whose_tensors_contradict_its_args_is_refused(llama3_round_trip, families_tree, tmp_path):
    import shutil

    root, _, _ = llama3_round_trip
    broken = tmp_path / "ckpt"
    shutil.copytree(root / "ckpt", broken)
    for path in (broken / TAG).glob("mp_rank_*_model_states.pt"):
        state = torch.load(path, weights_only=False)
        state["args"].num_key_value_heads = 1  # the args say 1 key/value head; the tensors hold 2
        torch.save(state, path)
    out = tmp_path / "hf"
    result = convert("megatron-to-hf", "--load", str(broken), "--out", str(out), "--target", str(families_tree),
                     "--model", "llama3")
    assert result.exit_code == 2, result.output
    assert "query_key_value.weight" in result.output and "the checkpoint's args" in result.output
    assert not out.exists()
