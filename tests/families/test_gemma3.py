"""Gemma-3 (text) ported into the tree Gemma and Gemma-2 were ported into: verified against
Gemma3ForCausalLM at TP=1, PP=2 and TP=2 (two key/value heads: gemma-3-1b-pt's one does not split),
gemma-3-1b-pt's config.json as MODEL, broken on purpose, converted both ways bit-exact at TP=2 and
PP=2 (every norm: four per layer and the per-head q/k norms), and trained on both engines.

The tiny model shows what Gemma-3 adds to Gemma-2's sandwich norms and score scale: per-head q/k
norms x (1 + w) before rotary, layer 0 under an 8-position window (of 32) rotating with base 10000,
layer 1 global with base 1e6 (the pattern of 6 becomes 2 of verify's 2 layers); no soft-caps.
"""

import json
import re
import shutil

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.errors import PorterError
from porter.hf_config import hf_config_of
from porter.verify.parity import VerifyOptions, verify
from tests.families.test_gemma2 import passed
from tests.helpers.trees import edited_copy

GEMMA3 = load_spec("gemma3")
LAYER0, LAYER1 = "language_model.encoder.layers.0", "language_model.encoder.layers.1"

# gemma-3-1b-pt's config.json as published (transformers 4 spelling: rope_theta, rope_local_base_freq,
# sliding_window_pattern)
GEMMA3_1B = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
    "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144,
}


def folder_of(tmp_path, config, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_gemma_3_1b_pt_config_json_is_the_bundled_spec(tmp_path):
    spec = load_spec(str(folder_of(tmp_path, GEMMA3_1B, "gemma-3-1b-pt")))
    assert spec.hf_class == GEMMA3.hf_class == "Gemma3ForCausalLM"
    biases = ("linear.qkv_bias", "linear.attention_output_bias")  # unset (no bias) or false, as the file says
    assert {k: v for k, v in spec.values.items() if k not in biases} == {
        k: v for k, v in GEMMA3.values.items() if k not in biases}
    assert not any(spec[k] or GEMMA3[k] for k in biases)
    assert (GEMMA3["position_embedding.rope_theta"], GEMMA3["position_embedding.local_rope_theta"]) == (1e6, 1e4)
    assert (GEMMA3["attention.sliding_window"], GEMMA3["attention.sliding_window_pattern"]) == (512, 6)
    assert (GEMMA3["attention.qk_norm"], GEMMA3["norm.placement"], GEMMA3["attention.softcap"]) == \
        ("per_head", "sandwich", None)


def test_transformers_5s_nested_rope_parameters_read_and_written():
    """The local and global bases as transformers 5 writes them (rope_parameters per layer type),
    both ways, and read by Gemma3TextConfig as the published file's."""
    from transformers import Gemma3TextConfig

    config = hf_config_of(GEMMA3)
    assert config["rope_parameters"] == {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    ours = Gemma3TextConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    theirs = Gemma3TextConfig(**{k: v for k, v in GEMMA3_1B.items() if k not in ("architectures", "model_type")})
    for field in ("rope_parameters", "layer_types", "sliding_window", "query_pre_attn_scalar", "head_dim",
                  "attn_logit_softcapping", "final_logit_softcapping"):
        assert getattr(ours, field) == getattr(theirs, field), field
    nested = {k: v for k, v in GEMMA3_1B.items() if k not in ("rope_theta", "rope_local_base_freq", "rope_scaling",
                                                               "sliding_window_pattern")}
    nested.update(rope_parameters=config["rope_parameters"], layer_types=theirs.layer_types)
    from porter.differences.local_rotary import LocalRotary
    from porter.hf_config import HFConfig

    assert LocalRotary().from_hf(HFConfig(nested)) == {"position_embedding.local_rope_theta": 1e4}
    assert HFConfig(nested).rope_parameters()["rope_theta"] == 1e6


def test_a_local_rotary_base_needs_local_layers_and_a_class_with_one():
    from porter.catalog import parse

    with pytest.raises(PorterError) as caught:
        parse({"extends": "llama", "model": {"name": "mine", "class_prefix": "Mine"},
               "position_embedding": {"local_rope_theta": 10000.0}}, "mine.toml")
    assert caught.value.construct == "position_embedding.local_rope_theta"
    with pytest.raises(PorterError) as caught:
        hf_config_of(load_spec("gemma2").with_values(**{"position_embedding.local_rope_theta": 10000.0}))
    assert caught.value.construct == "position_embedding.local_rope_theta" and "Gemma2ForCausalLM" in caught.value.message


def test_gemma3_matches_hf(gemmas_tree, tmp_path):
    result = passed(verify(GEMMA3, gemmas_tree, tmp_path), ["Gemma3Model", "Gemma3ModelPipe"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["layer_types"] == ["sliding_attention", "full_attention"] and config["sliding_window"] == 8
    assert config["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0
    names = {p.name for p in result.results[0].probes}
    for name in ("attention.q_layernorm", "attention.k_layernorm", "attention.rotary_emb", "attention_output_layernorm",
                 "mlp_output_layernorm"):
        assert f"{LAYER0}.{name}" in names and f"{LAYER1}.{name}" in names, name


def test_every_layer_windowed_is_said_to_the_trees_parser_as_a_pattern_past_the_layers(gemmas_tree):
    """gemma-3-1b-pt's pattern 6 at 2 layers windows both (transformers' layer_types): the port's
    entry point defaults the pattern to 6 and the tree's check takes N >= 2, so convert and verify
    say 3 (no layer is a 3rd), not 0."""
    from porter.convert.run import Port

    port = Port(GEMMA3, gemmas_tree)
    argv = port.run_argv(GEMMA3.with_values(**{"attention.sliding_window_pattern": None, "sizes.num_layers": 2}))
    assert argv[argv.index("--sliding-window-pattern") + 1] == "3"
    argv = port.run_argv(GEMMA3.with_values(**{"attention.sliding_window": 0, "attention.sliding_window_pattern": None,
                                               "sizes.num_layers": 4}))
    assert argv[argv.index("--sliding-window") + 1] == "0"


@pytest.mark.parametrize("layout", ["pp2", "tp2"])
def test_gemma3_matches_hf_at_pp2_and_tp2(gemmas_tree, tmp_path, layout):
    """PP=2: the local layer on one stage, the global one on the other. TP=2: gemma-3-1b-pt's structure
    with two key/value heads (its own one is refused by name at TP=2)."""
    if layout == "pp2":
        result = passed(verify(GEMMA3, gemmas_tree, tmp_path, VerifyOptions(pipeline_parallel=2, kinds=("pipe",))),
                        ["Gemma3ModelPipe"])
    else:
        refused = CliRunner().invoke(app, ["verify", "gemma3", "--target", str(gemmas_tree), "--tp", "2",
                                           "--workdir", str(tmp_path / "mqa")])
        assert refused.exit_code == 2 and "key/value heads 1, --tp 2" in refused.output
        folder = folder_of(tmp_path, {**GEMMA3_1B, "num_key_value_heads": 2}, "gemma-3-1b-kv2")
        tree = tmp_path / "tree"
        shutil.copytree(gemmas_tree, tree, ignore=shutil.ignore_patterns("__pycache__"))
        assert CliRunner().invoke(app, ["apply", str(folder), "--target", str(tree)]).exit_code == 0
        spec = load_spec(str(folder))
        result = passed(verify(spec, tree, tmp_path / "verify", VerifyOptions(tensor_parallel=2)),
                        [spec.model_class, f"{spec.model_class}Pipe"])
    print(f"gemma3 {layout}: " + ", ".join(f"{r.model_class} {r.max_logit_diff:.3g}" for r in result.results))


@pytest.mark.slow
def test_gemma2_ported_before_gemma3_still_matches_hf(gemmas_tree, tmp_path):
    """Gemma-2 shares the sandwich norms, the layer windows and the score scale with Gemma-3: its port still holds."""
    passed(verify(load_spec("gemma2"), gemmas_tree, tmp_path, VerifyOptions(kinds=("model",))), ["Gemma2Model"])


BREAKS = {
    "one rotary base on every layer": ("megatron/model/transformer.py",
                                       ("theta=args.local_rope_theta)", "theta=args.rope_theta)"),
                                       f"{LAYER0}.attention.rotary_emb"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_module_of_a_missing_gemma3_difference(gemmas_tree, tmp_path, name):
    file, (old, new), module = BREAKS[name]
    broken = edited_copy(gemmas_tree, tmp_path / "broken", (file, old, new))
    result = verify(GEMMA3, broken, tmp_path / "verify", VerifyOptions(kinds=("model",)))
    (r,) = result.results
    assert not result.passed and r.max_logit_diff > 1e-5
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    print(f"{name}: first divergence {first.name}, {first.max_diff:.3g}; logits {r.max_logit_diff:.3g}")


def tiny_gemma3(folder):
    """A tiny Gemma3ForCausalLM with its own numbers, two key/value heads, three local layers to one
    global, and every norm drawn (q/k norms included)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=32, vocab_size=250, max_position_embeddings=64,
                              rms_norm_eps=3e-6, query_pre_attn_scalar=24, sliding_window=16,
                              sliding_window_pattern=4, rope_theta=1e6, rope_local_base_freq=1e4)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder


def round_trip(target, tmp_path, layout):
    """HF -> Megatron at `layout` -> HF: bit-exact, every norm weight where the tree's norm does its work,
    the config's fields back as they were. Returns the Megatron checkpoint."""
    hf = tiny_gemma3(tmp_path / "hf")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(hf), "--out", str(ckpt), "--model", "gemma3",
                               "--target", str(target), *layout])
    assert done.exit_code == 0, done.output
    args = torch.load(next((ckpt / "release").glob("mp_rank_00*model_states.pt")), weights_only=False)["args"]
    assert (args.local_rope_theta, args.rope_theta, args.sliding_window_pattern, args.qk_norm) == (1e4, 1e6, 4, "per_head")
    _, hf_state = convert.read_hf(hf)
    if layout == ["--pp", "2"]:
        first = torch.load(ckpt / "release" / "layer_02-model_00-model_states.pt", weights_only=False)
        for tree, theirs in (("attention.q_layernorm", "self_attn.q_norm"), ("attention.k_layernorm", "self_attn.k_norm"),
                             ("attention_output_layernorm", "post_attention_layernorm"),
                             ("post_attention_layernorm", "pre_feedforward_layernorm"),
                             ("mlp_output_layernorm", "post_feedforward_layernorm")):
            assert torch.equal(first[f"{tree}.weight"], hf_state[f"model.layers.0.{theirs}.weight"]), tree
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "gemma3", "--target", str(target)])
    assert done.exit_code == 0, done.output
    (config, state), (config2, state2) = convert.read_hf(hf), convert.read_hf(back)
    assert sorted(state) == sorted(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    for key in ("rope_parameters", "layer_types", "sliding_window", "query_pre_attn_scalar", "head_dim",
                "num_key_value_heads", "rms_norm_eps"):
        assert config2[key] == config[key], key
    return ckpt


@pytest.mark.parametrize("layout", [["--pp", "2"], ["--tp", "2"]], ids=["pp2", "tp2"])
def test_convert_round_trips_bit_exact(tmp_path, layout, gemmas_tree):
    round_trip(gemmas_tree, tmp_path, layout)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["--pp", "2"], ["--tp", "2"]], ids=["pp2", "tp2"])
def test_convert_round_trips_bit_exact_and_the_tree_loads_it(gemmas_tree, tmp_path, layout):
    ckpt = round_trip(gemmas_tree, tmp_path, layout)
    # the tree's own load_checkpoint reads it, and the model gives the HF class's logits
    result = verify(GEMMA3, gemmas_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt))
    assert result.passed, result.as_dict()


@pytest.mark.parametrize("engine", [[], ["--no-pipe"]], ids=["pipe", "plain"])
def test_gemma3_trains(gemmas_tree, smoke_workdir, engine):
    done = CliRunner().invoke(app, ["smoke", "gemma3", "--target", str(gemmas_tree), "--steps", "10",
                                    "--workdir", str(smoke_workdir), "--json", *engine])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    log = (smoke_workdir / "train.log").read_text()
    for option in ("--sliding-window-pattern 2", "--local-rope-theta 10000.0"):
        assert option in log.split("\n\n", 1)[0], option
    assert re.search(r"qk_norm \.+ per_head", log)  # the entry point's default, in the tree's argument dump
    print(f"smoke gemma3 {' '.join(engine) or 'pipe'}: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
