"""`porter convert` streams: HF and Megatron files read a tensor at a time, every output file
planned and then filled tensor by tensor, sharded HF output, the figures, the bar, the disk
check, the temporary folder, and block-fp8 checkpoints. (The memory and the speed themselves
are measured by bench/convert.py, not here.)"""

import json
import re
import weakref

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.convert import output
from porter.convert.stream import Progress
from porter.verify.reference import TinyConfig, random_reference
from tests.helpers.synthetic_llama import same_bits

SPEC = load_spec("llama")
TINY = TinyConfig(num_layers=6, hidden_size=64, num_attention_heads=4, vocab_size=250, seq_length=16)


@pytest.fixture(scope="module")
def port(ported_tree):
    return convert.Port(SPEC, ported_tree)


@pytest.fixture(scope="module")
def model():
    return random_reference(SPEC, TINY)


@pytest.fixture(scope="module")
def hf_dir(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    convert.write_hf(folder, model.config.to_dict(), model.state_dict())
    return folder


def run(*args):
    return CliRunner().invoke(app, ["convert", *[str(a) for a in args]])


def to_megatron(hf, out, tree, *more):
    return run("hf-to-megatron", "--hf", hf, "--out", out, "--target", tree, *more)


def to_hf(ckpt, out, tree, *more):
    return run("megatron-to-hf", "--load", ckpt, "--out", out, "--target", tree, *more)


def same(a, b):
    assert same_bits(a, b) == []


# -- reading --------------------------------------------------------------------------------------


def test_an_hf_folder_is_read_a_tensor_at_a_time(hf_dir):
    source = convert.HFDir(hf_dir)
    assert source.bytes_read == 0  # opening reads the headers only
    take = source.take()
    norm = take("model.layers.3.input_layernorm.weight")
    assert source.bytes_read == norm.numel() * norm.element_size()
    assert torch.equal(norm, convert.read_hf(hf_dir)[1]["model.layers.3.input_layernorm.weight"])
    planned = source.take(meta=True)("model.embed_tokens.weight")
    assert planned.device.type == "meta" and planned.shape == (250, 64)
    assert source.bytes_read == norm.numel() * norm.element_size()  # the plan reads nothing


def test_the_index_says_which_file_holds_which_tensor(hf_dir, port, ported_tree, tmp_path):
    """save_pretrained's shards with their index, beside a stray file with the same names
    (Mistral ships consolidated.safetensors next to its shards): the index is honoured."""
    from safetensors.torch import save_file

    sharded = tmp_path / "sharded"
    _, state = convert.read_hf(hf_dir)
    convert.write_hf(sharded, json.loads((hf_dir / "config.json").read_text()), state, max_shard_size="60KB")
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) >= 3
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(sharded / "consolidated.safetensors"))
    done = to_megatron(sharded, tmp_path / "ckpt", ported_tree)
    assert done.exit_code == 0, done.output
    assert to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree).exit_code == 0
    same(hf_dir, tmp_path / "back")


def test_pytorch_model_bin_is_read_too(hf_dir, ported_tree, tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((hf_dir / "config.json").read_text())
    torch.save({k: v.clone() for k, v in convert.read_hf(hf_dir)[1].items()}, legacy / "pytorch_model.bin")
    done = to_megatron(legacy, tmp_path / "ckpt", ported_tree, "--tp", "2")
    assert done.exit_code == 0, done.output
    assert to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree).exit_code == 0
    same(hf_dir, tmp_path / "back")


def test_a_missing_shard_is_refused_by_name(hf_dir, ported_tree, tmp_path):
    broken = tmp_path / "broken"
    _, state = convert.read_hf(hf_dir)
    convert.write_hf(broken, json.loads((hf_dir / "config.json").read_text()), state, max_shard_size="60KB")
    next(broken.glob("model-00002-of-*.safetensors")).unlink()
    done = to_megatron(broken, tmp_path / "ckpt", ported_tree)
    assert done.exit_code == 2 and "model.safetensors.index.json names shards that are not there" in done.output
    assert not (tmp_path / "ckpt").exists()


# -- streaming ------------------------------------------------------------------------------------


class Alive(Progress):
    """Counts the source tensors still alive each time a tensor is written."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.most = 0

    def track(self, tensor):
        self.refs.append(weakref.ref(tensor))
        return tensor

    def advance(self, tensors, nbytes):
        self.most = max(self.most, sum(r() is not None for r in self.refs))


def test_hf_to_megatron_holds_one_layer_at_a_time(port, hf_dir, tmp_path, monkeypatch):
    """Of the model's 57 tensors, no more than a layer's (9) and what waits to be written (the
    largest tensor's bytes) are alive at any write."""
    alive = Alive()
    original = convert.HFDir.tensor
    monkeypatch.setattr(convert.HFDir, "tensor", lambda self, name, meta=False: original(self, name, meta)
                        if meta else alive.track(original(self, name, meta)))
    convert.checkpoint_from_hf(SPEC, port.profile.tree.root, hf_dir, tmp_path / "ckpt", tp=2, pp=2, progress=alive)
    assert len(alive.refs) == 6 * 9 + 3
    assert 0 < alive.most < 2 * 9


def test_megatron_to_hf_holds_one_layer_at_a_time(port, hf_dir, tmp_path, monkeypatch):
    assert to_megatron(hf_dir, tmp_path / "ckpt", port.profile.tree.root, "--tp", "2", "--pp", "2").exit_code == 0
    alive = Alive()
    read = convert.CheckpointReader._get
    monkeypatch.setattr(convert.CheckpointReader, "_get", lambda self, place, meta: read(self, place, meta)
                        if meta else alive.track(read(self, place, meta)))
    convert.hf_from_checkpoint(SPEC, port.profile.tree.root, tmp_path / "ckpt", tmp_path / "back", progress=alive)
    assert len(alive.refs) == 2 + 6 * (2 * 4 + 2) + 1 + 2  # each rank's shard of each tensor, a replica from rank 0
    assert 0 < alive.most < 2 * (2 * 4 + 2)  # a layer's, of both ranks, and what waits to be written


def test_the_figures_are_the_bytes_moved(port, hf_dir, ported_tree, tmp_path):
    done = to_megatron(hf_dir, tmp_path / "ckpt", ported_tree, "--tp", "2", "--pp", "2", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    _, state = convert.read_hf(hf_dir)
    assert summary["bytes_read"] == sum(t.numel() * t.element_size() for t in state.values())
    files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
    assert summary["bytes_written"] == sum(p.stat().st_size for p in files if p.suffix == ".pt")
    assert summary["peak_bytes"] > 0 and summary["seconds"] > 0
    back = to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree, "--json")
    figures = json.loads(back.stdout)
    assert figures["bytes_written"] == sum(p.stat().st_size for p in (tmp_path / "back").iterdir())
    assert figures["bytes_read"] >= summary["bytes_read"]  # the checkpoint's padding rows are read too
    assert {"peak_bytes", "seconds", "files", "tensors"} <= set(figures)


def test_the_plain_engine_file_is_written_in_place_too(port, hf_dir, ported_tree, tmp_path):
    """--no-pipe: each rank's model is one file; its tensors go in as they are made."""
    assert to_megatron(hf_dir, tmp_path / "ckpt", ported_tree, "--no-pipe", "--tp", "2").exit_code == 0
    first = torch.load(tmp_path / "ckpt/release/mp_rank_00_model_states.pt", weights_only=False)
    encoder = first["module"]["language_model"]["encoder"]
    assert len([k for k in encoder if k.startswith("layers.5.")]) == 6
    assert first["args"].tensor_model_parallel_size == 2
    assert to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree).exit_code == 0
    same(hf_dir, tmp_path / "back")


# -- writing HF -----------------------------------------------------------------------------------


def test_max_shard_size_shards_as_save_pretrained_does(hf_dir, ported_tree, tmp_path):
    from transformers import LlamaForCausalLM

    assert to_megatron(hf_dir, tmp_path / "ckpt", ported_tree, "--tp", "2").exit_code == 0
    done = to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree, "--max-shard-size", "100KB")
    assert done.exit_code == 0, done.output
    shards = sorted(p.name for p in (tmp_path / "back").glob("*.safetensors"))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "back/model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert all((tmp_path / "back" / s).stat().st_size <= 100_000 for s in shards[:-1])
    original = LlamaForCausalLM.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    again = LlamaForCausalLM.from_pretrained(str(tmp_path / "back"), attn_implementation="eager").eval()
    tokens = torch.randint(0, 250, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(original(tokens).logits, again(tokens).logits)
    one = to_hf(tmp_path / "ckpt", tmp_path / "one", ported_tree)  # the default, 5GB: one file, no index
    assert one.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.json", "model.safetensors"]


def test_a_shard_size_that_is_not_one_is_refused(hf_dir, ported_tree, tmp_path):
    assert to_megatron(hf_dir, tmp_path / "ckpt", ported_tree).exit_code == 0
    done = to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree, "--max-shard-size", "5 parsecs")
    assert done.exit_code == 2 and "--max-shard-size 5 parsecs is not a size" in done.output
    assert not (tmp_path / "back").exists()


# -- what is printed ------------------------------------------------------------------------------


def test_one_summary_line_and_no_bar_when_piped(hf_dir, ported_tree, tmp_path):
    done = to_megatron(hf_dir, tmp_path / "ckpt", ported_tree, "--tp", "2", "--pp", "2")
    assert done.exit_code == 0
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert re.fullmatch(rf"wrote {tmp_path / 'ckpt'}: 22 files, TP=2 PP=2, pipeline engine, vocabulary 250 padded to "
                        r"256, args by the tree's own parser; [0-9.]+ [kM]B read, [0-9.]+ [kM]B written in [0-9.]+ s, "
                        r"peak memory [0-9.]+ [MG]B\. Train from it with --load .*", line), line


def test_a_terminal_gets_a_bar_of_tensors_and_bytes(hf_dir, ported_tree, tmp_path, monkeypatch):
    import porter.cli.common as common

    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    done = to_megatron(hf_dir, tmp_path / "ckpt", ported_tree)
    assert done.exit_code == 0
    assert re.search(r"\b(\d+)/\1 tensors", done.stderr) and "hf-to-megatron" in done.stderr  # the bar's last state
    assert len(done.stdout.splitlines()) == 1


# -- the output folder ----------------------------------------------------------------------------


def test_too_little_disk_space_is_refused_before_anything_is_written(hf_dir, ported_tree, tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage

    def small(path):
        usage = real(path)
        return usage._replace(free=100_000)

    monkeypatch.setattr(output.shutil, "disk_usage", small)
    done = to_megatron(hf_dir, tmp_path / "out" / "ckpt", ported_tree, "--tp", "2")
    assert done.exit_code == 2
    assert re.search(r"not enough disk space for the conversion: it writes [0-9.]+ [kM]B, 100\.00 kB are free", done.output)
    assert "bytes to write, 100000 free" in done.output
    assert not (tmp_path / "out").exists()  # not even its parent folder


def test_an_interrupted_conversion_leaves_nothing(hf_dir, ported_tree, tmp_path, monkeypatch):
    from porter.convert import stream

    put = stream.Fill.put
    calls = []

    def interrupted(self, *args):
        calls.append(args)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return put(self, *args)

    monkeypatch.setattr(stream.Fill, "put", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert.checkpoint_from_hf(SPEC, ported_tree, hf_dir, tmp_path / "ckpt", tp=2)
    assert list(tmp_path.iterdir()) == []  # neither --out nor the temporary folder


def test_an_earlier_conversion_is_replaced_and_nothing_else(hf_dir, ported_tree, tmp_path):
    assert to_megatron(hf_dir, tmp_path / "ckpt", ported_tree, "--tp", "2").exit_code == 0
    assert to_megatron(hf_dir, tmp_path / "ckpt", ported_tree).exit_code == 0  # TP=1 replaces TP=2 whole
    assert not list((tmp_path / "ckpt/release").glob("*model_01*"))
    (tmp_path / "ckpt" / "notes.txt").write_text("mine")
    done = to_megatron(hf_dir, tmp_path / "ckpt", ported_tree)
    assert done.exit_code == 2 and "notes.txt" in done.output
    assert (tmp_path / "ckpt" / "notes.txt").read_text() == "mine"


# -- fp8 --------------------------------------------------------------------------------------------


def _fp8_folder(hf_dir, folder, block=(32, 16)):
    """The tiny model with its projections block-quantized to float8_e4m3fn, as DeepSeek-V3 stores them."""
    from safetensors.torch import save_file

    config, state = convert.read_hf(hf_dir)
    quantized, expected = {}, {}
    for name, tensor in state.items():
        if name.endswith("_proj.weight"):
            rows, cols = tensor.shape
            scales = torch.rand((rows + block[0] - 1) // block[0], (cols + block[1] - 1) // block[1]) + 0.5
            spread = scales.repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
            weight = (tensor / spread).to(torch.float8_e4m3fn)
            quantized[name], quantized[name + "_scale_inv"] = weight, scales
            expected[name] = (weight.float() * spread).to(torch.bfloat16)
        else:
            quantized[name] = expected[name] = tensor.to(torch.bfloat16)
    folder.mkdir()
    save_file(quantized, str(folder / "model.safetensors"), metadata={"format": "pt"})
    fp8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block)}
    config = {**config, "quantization_config": fp8}
    config["dtype" if "dtype" in config else "torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    return expected


def test_block_fp8_is_dequantized_to_bf16_as_it_is_read(hf_dir, ported_tree, tmp_path):
    expected = _fp8_folder(hf_dir, tmp_path / "fp8")
    done = to_megatron(tmp_path / "fp8", tmp_path / "ckpt", ported_tree, "--tp", "2", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["dequantized"] == "block-fp8 (32x16 blocks) read as bf16"
    assert to_hf(tmp_path / "ckpt", tmp_path / "back", ported_tree).exit_code == 0
    config, state = convert.read_hf(tmp_path / "back")
    assert "quantization_config" not in config and config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == torch.bfloat16 and torch.equal(state[name], tensor), name


def test_other_quantizations_are_refused_by_name(hf_dir, ported_tree, tmp_path):
    folder = tmp_path / "gptq"
    folder.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    (folder / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    done = to_megatron(folder, tmp_path / "ckpt", ported_tree)
    assert done.exit_code == 2 and "porter does not convert gptq-quantized checkpoints" in done.output
    assert not (tmp_path / "ckpt").exists()
