"""HF LLaMA <-> the ported tree's checkpoints: bit-exact both ways, for every TP/PP sharding."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec, profile_of
from porter.cli import app
from porter.differences.ffn_rule import ffn_hidden_size
from porter.errors import PorterError
from porter.profile.layout import read_layout
from porter.source import SourceTree
from porter.verify.reference import TinyConfig, random_reference
from tests.helpers.trees import edited_copy

SPEC = load_spec("llama")
# 250 tokens: the tree pads them to 256 (TP 1, 2) or 512 (TP 4), so padding is exercised.
TINY = TinyConfig(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=250, seq_length=16)


@pytest.fixture(scope="module")
def port(ported_tree):
    return convert.Port(SPEC, ported_tree)


@pytest.fixture(scope="module")
def layout(port):
    return port.layout


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = random_reference(SPEC, TINY)
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    convert.write_hf(folder, model.config.to_dict(), model.state_dict())
    return folder


def _same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("tp,pp,pipe", [(1, 1, True), (1, 1, False), (2, 1, True), (2, 1, False),
                                        (1, 2, True), (2, 2, True), (4, 1, True)])
def test_hf_to_megatron_to_hf_is_bit_exact(port, layout, hf_dir, tmp_path, tp, pp, pipe):
    config, state = convert.read_hf(hf_dir)
    weights = port.to_megatron(state, config, tensor_parallel=tp)
    assert weights.embedding.shape[0] == layout.padded_vocab(250, tp)
    numbers = {dest: value for dest, (_, value) in port.numbers(port.spec_for(config)).items()}
    convert.write_checkpoint(weights, tmp_path / "ckpt", tp=tp, pp=pp, pipe=pipe, args=numbers,
                             hf_config=config)
    back = port.read_checkpoint(tmp_path / "ckpt")
    assert back.extra["tensor_parallel"] == tp and back.extra["pipe"] == pipe
    out = convert.write_hf(tmp_path / "hf-again", convert.hf_config_for(port, back, torch.float32),
                           convert.megatron_to_hf(back))
    config_again, state_again = convert.read_hf(out)
    _same_state(state, state_again)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "rms_norm_eps", "tie_word_embeddings", "attention_bias", "mlp_bias"):
        assert config_again[key] == config[key], key


def test_the_output_is_what_from_pretrained_reads(port, layout, hf_dir, tmp_path):
    from transformers import LlamaForCausalLM

    config, state = convert.read_hf(hf_dir)
    weights = port.to_megatron(state, config, tensor_parallel=2)
    convert.write_checkpoint(weights, tmp_path / "ckpt", tp=2)
    back = port.read_checkpoint(tmp_path / "ckpt")
    out = convert.write_hf(tmp_path / "hf", convert.hf_config_for(port, back, torch.float32),
                           convert.megatron_to_hf(back))
    original = LlamaForCausalLM.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    again = LlamaForCausalLM.from_pretrained(str(out), attn_implementation="eager").eval()
    tokens = torch.randint(0, 250, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(original(tokens).logits, again(tokens).logits)


def test_shards_hold_whole_heads_and_gate_then_up(port, layout, hf_dir):
    """What rank 1 of 2 holds, spelled out against HF's tensors."""
    config, state = convert.read_hf(hf_dir)
    local = convert.shard(port.to_megatron(state, config, tensor_parallel=2), 2, 1)
    layer = local.layers[0]
    hn, ffn = 16, ffn_hidden_size(SPEC, 64)
    p = "model.layers.0."
    qkv = layer[f"{layout.attention}.{layout.qkv}.weight"].view(2, 3, hn, 64)  # heads 2 and 3 of 4
    for head in (0, 1):
        rows = slice((2 + head) * hn, (3 + head) * hn)
        for i, name in enumerate("qkv"):
            assert torch.equal(qkv[head, i], state[f"{p}self_attn.{name}_proj.weight"][rows])
    fc1 = layer[f"{layout.mlp}.{layout.fc1}.weight"]
    half = ffn // 2
    assert torch.equal(fc1[:half], state[f"{p}mlp.gate_proj.weight"][half:])  # the gate first
    assert torch.equal(fc1[half:], state[f"{p}mlp.up_proj.weight"][half:])
    assert torch.equal(layer[f"{layout.attention}.{layout.dense}.weight"], state[f"{p}self_attn.o_proj.weight"][:, 32:])
    assert torch.equal(layer[f"{layout.mlp}.{layout.fc2}.weight"], state[f"{p}mlp.down_proj.weight"][:, half:])
    # vocabulary rows 128..255 on rank 1: 122 real tokens, then 6 rows of padding
    assert torch.equal(local.embedding[:122], state["model.embed_tokens.weight"][128:])
    assert not local.embedding[122:].any()
    assert torch.equal(local.output[:122], state["lm_head.weight"][128:])


def test_a_model_the_port_cannot_run_is_refused_by_field(port, hf_dir):
    """LLaMA-1's port has no grouped-query attention and no QKV bias: such a model is refused."""
    config, _ = convert.read_hf(hf_dir)
    with pytest.raises(PorterError) as caught:
        port.spec_for({**config, "num_key_value_heads": 2, "attention_bias": True})
    assert "attention.num_query_groups = 2 (the port: None)" in caught.value.found
    assert "linear.qkv_bias" in caught.value.found


def test_layout_follows_the_tree_names(ported_tree, tmp_path):
    """A tree that calls the attention `self_attention` (microsoft HEAD's spelling)."""
    tree = tmp_path / "variant"
    shutil.copytree(ported_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / "megatron" / "model" / "transformer.py"
    path.write_text(path.read_text().replace("self.attention(", "self.self_attention(")
                    .replace("self.attention = ParallelAttention(", "self.self_attention = ParallelAttention("))
    layout = read_layout(profile_of(SourceTree.open(tree)), SPEC)
    assert layout.attention == "self_attention"
    assert layout.qkv == "query_key_value" and layout.fc1 == "dense_h_to_4h"


def test_a_head_held_by_the_language_model(ported_tree, hf_dir, tmp_path):
    """microsoft HEAD's shape: TransformerLanguageModel owns the untied head (`output_layer`)."""
    anchor = "        self._encoder_key = 'encoder'\n"
    tree = edited_copy(ported_tree, tmp_path / "head",
                       ("megatron/model/language_model.py", anchor,
                        anchor + "        self.output_layer = mpu.ColumnParallelLinear(\n"
                        "            args.hidden_size, args.padded_vocab_size, bias=False)\n"
                        "        self._output_layer_key = 'output_layer'\n"))
    layout = read_layout(profile_of(SourceTree.open(tree)), SPEC)
    port = convert.Port(SPEC, tree)
    assert layout.head_module == "language_model.output_layer"
    assert layout.head_keys == ("language_model", "output_layer", "weight")
    config, state = convert.read_hf(hf_dir)
    weights = port.to_megatron(state, config, tensor_parallel=2)
    convert.write_checkpoint(weights, tmp_path / "ckpt", tp=2, pipe=False)
    module = torch.load(tmp_path / "ckpt" / "release" / "mp_rank_01_model_states.pt", weights_only=False)["module"]
    assert torch.equal(module["language_model"]["output_layer"]["weight"][:122], state["lm_head.weight"][128:])
    assert "output_layer" not in module
    _same_state(state, convert.megatron_to_hf(port.read_checkpoint(tmp_path / "ckpt")))


def test_grouped_qkv_of_multi_head_attention_is_the_per_head_layout(ported_tree, tmp_path):
    """microsoft HEAD views the fused QKV as [ng, np/ng + 2, hn]: with ng = np, [np, 3, hn]."""
    tree = tmp_path / "grouped"
    shutil.copytree(ported_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / "megatron" / "model" / "transformer.py"
    path.write_text(path.read_text().replace("3 * self.hidden_size_per_attention_head",
                                             "(self.num_key_value_groups + 2) * self.hidden_size_per_attention_head"))
    assert read_layout(profile_of(SourceTree.open(tree)), SPEC).qkv_order == "per_head"


def test_a_qkv_layout_porter_does_not_convert_is_refused(ported_tree, tmp_path):
    tree = tmp_path / "sliced"
    shutil.copytree(ported_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / "megatron" / "model" / "transformer.py"
    path.write_text(path.read_text().replace("3 * self.hidden_size_per_attention_head", "(2 + 1) * hn"))
    with pytest.raises(PorterError, match="per-head"):
        read_layout(profile_of(SourceTree.open(tree)), SPEC)


def test_convert_commands_round_trip(ported_tree, hf_dir, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf_dir), "--out", str(tmp_path / "ckpt"),
                               "--target", str(ported_tree), "--tp", "2", "--pp", "2", "--json"])
    assert done.exit_code == 0, done.output
    assert '"tensor_parallel": 2' in done.output
    assert '"args": "the tree\'s own parser"' in done.output
    args = torch.load(tmp_path / "ckpt" / "release" / "mp_rank_00_model_states.pt", weights_only=False)["args"]
    assert (args.num_layers, args.hidden_size, args.padded_vocab_size) == (2, 64, 256)
    assert (args.tensor_model_parallel_size, args.pipeline_model_parallel_size) == (2, 2)
    assert args.position_embedding_type == "rotary" and args.no_bias  # the spec's defaults, as the tree parsed them
    names = sorted(p.name for p in (tmp_path / "ckpt" / "release").iterdir())
    assert "layer_02-model_01-model_states.pt" in names and "mp_rank_03_model_states.pt" in names
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(tmp_path / "ckpt"),
                               "--out", str(tmp_path / "hf"), "--target", str(ported_tree)])
    assert done.exit_code == 0, done.output
    _same_state(convert.read_hf(hf_dir)[1], convert.read_hf(tmp_path / "hf")[1])


def test_convert_refuses_what_is_not_a_model(ported_tree, tmp_path):
    done = CliRunner().invoke(app, ["convert", "hf-to-megatron", "--hf", str(tmp_path), "--out",
                                    str(tmp_path / "ckpt"), "--target", str(ported_tree)])
    assert done.exit_code == 2
    assert "no config.json" in done.output
    done = CliRunner().invoke(app, ["convert", "megatron-to-hf", "--load", str(tmp_path), "--out",
                                    str(tmp_path / "hf"), "--target", str(ported_tree)])
    assert done.exit_code == 2
    assert "is not a DeepSpeed checkpoint" in done.output


def _as_if_the_tree_saved_it(checkpoint, tokenizer_model):
    """Strip porter's own record from a checkpoint, as the tree's --save writes none, and point
    its args at a tokenizer file."""
    for path in (checkpoint / "release").glob("mp_rank_*_model_states.pt"):
        state = torch.load(path, weights_only=False)
        state.pop("porter", None)
        state["args"].tokenizer_model = str(tokenizer_model)
        torch.save(state, path)


def test_the_real_vocabulary_is_never_guessed(ported_tree, hf_dir, tmp_path):
    """Without porter's record and without the tokenizer the run trained with, megatron-to-hf
    refuses (it would otherwise write 256 padded rows for 250 tokens); --vocab-size gives it."""
    runner = CliRunner()
    ckpt = tmp_path / "ckpt"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf_dir), "--out", str(ckpt),
                               "--target", str(ported_tree)])
    assert done.exit_code == 0, done.output
    _as_if_the_tree_saved_it(ckpt, tmp_path / "gone" / "tokenizer.model")
    refused = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(tmp_path / "hf"),
                                  "--target", str(ported_tree)])
    assert refused.exit_code == 2
    assert "--vocab-size" in refused.output and "gone/tokenizer.model" in refused.output
    assert not (tmp_path / "hf").exists()
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(tmp_path / "hf"),
                               "--target", str(ported_tree), "--vocab-size", "250"])
    assert done.exit_code == 0, done.output
    _same_state(convert.read_hf(hf_dir)[1], convert.read_hf(tmp_path / "hf")[1])


def test_exported_token_ids_come_from_the_tokenizer(ported_tree, hf_dir, tmp_path):
    """The HF config of a checkpoint takes bos/eos from the tokenizer the run trained with (ids
    other than HF's defaults 1 and 2, so that defaults cannot pass)."""
    import sentencepiece

    from porter.corpus import write_corpus

    text, _ = write_corpus(tmp_path / "corpus", max_bytes=60_000)
    sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "spm"), vocab_size=300,
                                             model_type="bpe", unk_id=0, bos_id=5, eos_id=6, pad_id=-1,
                                             num_threads=1, minloglevel=2)
    sentencepiece_model = tmp_path / "spm.model"
    runner = CliRunner()
    ckpt = tmp_path / "ckpt"
    assert runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf_dir), "--out", str(ckpt),
                               "--target", str(ported_tree)]).exit_code == 0
    _as_if_the_tree_saved_it(ckpt, sentencepiece_model)
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(tmp_path / "hf"),
                               "--target", str(ported_tree), "--vocab-size", "250"])
    assert done.exit_code == 0, done.output
    config, _ = convert.read_hf(tmp_path / "hf")
    assert (config["bos_token_id"], config["eos_token_id"]) == (5, 6)
