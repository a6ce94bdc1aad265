"""Qwen3-MoE: the spec is Qwen3-30B-A3B's, its config.json works as MODEL (read as transformers
reads it), the weights convert both ways bit-exact (dense layers between sparse ones, experts of
their own width, tensor-parallel shards), and the port matches Qwen3MoeForCausalLM: 16 experts,
top-8 renormalised, a dense layer between MoE layers, RMSNorm on q and k."""

import json

import pytest
import torch

from porter import convert
from porter.catalog import load_spec
from porter.hf_config import hf_config_of
from porter.verify.parity import VerifyOptions, verify
from porter.verify.reference import TinyConfig
from tests.families.battery import published
from tests.helpers.trees import edited_copy

QWEN3_MOE = load_spec("qwen3_moe")
LAYER = "language_model.encoder.layers"

# Qwen3-30B-A3B's config.json as Alibaba published it (transformers 4.51 spelling; the battery's)
QWEN3_30B_A3B = published("Qwen--Qwen3-30B-A3B")
# the fields transformers' Qwen3MoeConfig holds for the experts, and what the model is built from
READ = ("num_local_experts", "num_experts_per_tok", "norm_topk_prob", "moe_intermediate_size", "decoder_sparse_step",
        "mlp_only_layers", "router_aux_loss_coef", "intermediate_size", "head_dim", "num_key_value_heads",
        "num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "tie_word_embeddings")


def model_folder(tmp_path, config, name="Qwen3-30B-A3B"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def transformers_reads(config: dict) -> dict:
    from transformers import Qwen3MoeConfig

    read = Qwen3MoeConfig.from_dict({k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    return {key: getattr(read, key) for key in READ}


def tiny_qwen3_moe(folder, **more):
    """A tiny Qwen3MoeForCausalLM (std-0.1 weights; 3 layers, the middle one dense) saved by
    save_pretrained; returns (folder, model)."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(**{
        "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 250, "num_experts": 8,
        "num_experts_per_tok": 4, "norm_topk_prob": True, "mlp_only_layers": [1], "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "bos_token_id": 5, "eos_token_id": 7, **more})
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder, model


# -- the spec and config.json ----------------------------------------------------------------------


def test_the_bundled_spec_is_qwen3_30b_a3b_and_its_config_json_ports_as_transformers_reads_it(tmp_path):
    read = load_spec(str(model_folder(tmp_path, QWEN3_30B_A3B)))
    assert "(family: qwen3_moe)" in read.description and read.hf_class == "Qwen3MoeForCausalLM"
    for spec in (QWEN3_MOE, read):
        assert (spec["moe.num_experts"], spec["moe.top_k"], spec["moe.norm_topk_prob"], spec["moe.aux_loss_coef"],
                spec["moe.ffn_hidden_size"], spec["moe.layer_interval"], spec["moe.dense_layers"]) == \
            (128, 8, True, 0.001, 768, 1, [])
        assert (spec["attention.qk_norm"], spec["attention.head_dim"], spec["attention.num_query_groups"]) == \
            ("per_head", 128, 4)
        assert transformers_reads(hf_config_of(spec)) == transformers_reads(QWEN3_30B_A3B), spec.name


def test_a_field_config_json_leaves_out_is_transformers_default(tmp_path):
    """Qwen3MoeConfig's defaults: no renormalisation, experts of width 768 in every layer."""
    config = {k: v for k, v in QWEN3_30B_A3B.items()
              if k not in ("norm_topk_prob", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers")}
    spec = load_spec(str(model_folder(tmp_path, config)))
    assert (spec["moe.norm_topk_prob"], spec["moe.ffn_hidden_size"], spec["moe.layer_interval"],
            spec["moe.dense_layers"]) == (False, 768, 1, [])
    assert transformers_reads(hf_config_of(spec)) == transformers_reads(config)


def test_dense_layers_between_sparse_ones_are_the_ports_switches(tmp_path, moe_tree):
    config = {**QWEN3_30B_A3B, "decoder_sparse_step": 2, "mlp_only_layers": [5, 7]}
    spec = load_spec(str(model_folder(tmp_path, config)))
    assert (spec["moe.layer_interval"], spec["moe.dense_layers"]) == (2, [5, 7])
    argv = convert.Port("qwen3_moe", moe_tree).run_argv(spec)
    assert "--expert-interval 2" in " ".join(argv) and "--moe-dense-layers 5 7" in " ".join(argv)
    entry = (moe_tree / "pretrain_qwen3_moe.py").read_text()
    for default in ("num_experts=[128]", "topk=8", "moe_norm_topk_prob=True", "moe_ffn_hidden_size=768",
                    "moe_loss_coeff=0.001", "no_pipeline_parallel=True"):
        assert default in entry


# -- weights -------------------------------------------------------------------------------------------


def test_convert_is_bit_exact_both_ways_with_a_dense_layer_and_tensor_parallel_experts(moe_tree, tmp_path):
    """save_pretrained's per-expert gate/up/down and transformers 5's fused experts give the same
    tree weights; HF layer 1 stays a dense MLP; checkpoints at TP=1 and TP=2 (each expert split
    over the ranks, in files of their own for MoE layers 0 and 1) read back to the same bits."""
    folder, model = tiny_qwen3_moe(tmp_path / "hf")
    port = convert.Port("qwen3_moe", moe_tree)
    config, on_disk = convert.read_hf(folder)
    assert "model.layers.2.mlp.experts.7.up_proj.weight" in on_disk and "model.layers.1.mlp.up_proj.weight" in on_disk
    from_disk, from_memory = port.to_megatron(on_disk, config), port.to_megatron(model.state_dict(), config)
    for mine, theirs in zip(from_disk.layers, from_memory.layers, strict=True):
        assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    expert = "mlp.deepspeed_moe.experts.deepspeed_experts.7"
    assert from_disk.layers[2][f"{expert}.dense_h_to_4h.weight"].shape == (64, 64)  # [gate; up] of width 32
    assert "mlp.dense_h_to_4h.weight" in from_disk.layers[1] and not any("deepspeed" in k for k in from_disk.layers[1])
    numbers = {dest: value for dest, (_, value) in port.numbers(port.spec_for(config)).items()}
    assert (numbers["moe_ffn_hidden_size"], numbers["moe_dense_layers"], numbers["topk"]) == (32, [1], 4)
    for tp in (1, 2):
        files = convert.write_checkpoint(from_disk, tmp_path / f"tp{tp}", tp=tp, pipe=False, args=numbers)
        experts = sorted(p.name for p in files if "expert" in p.name)
        assert len(experts) == 2 * 8 * tp and experts[0] == "layer_0_expert_0_mp_rank_00_model_states.pt"
        assert not any(name.startswith("layer_2_") for name in experts)  # MoE layers 0 and 1: HF layers 0 and 2
        shard = torch.load(tmp_path / f"tp{tp}/release/layer_1_expert_7_mp_rank_00_model_states.pt")
        assert shard[f"{LAYER}.2.{expert}.dense_h_to_4h.weight"].shape == (64 // tp, 64)
        main = torch.load(tmp_path / f"tp{tp}/release/mp_rank_00_model_states.pt", weights_only=False)
        assert main["num_experts"] == [8, 8] and main["args"].moe_dense_layers == [1]
        back = convert.megatron_to_hf(port.read_checkpoint(tmp_path / f"tp{tp}", vocab_size=250))
        assert sorted(back) == sorted(on_disk) and all(torch.equal(back[k], on_disk[k]) for k in on_disk)


# -- the port against Qwen3MoeForCausalLM ------------------------------------------------------------------

DENSE_BETWEEN = {"moe.dense_layers": [1]}  # three layers: MoE, dense, MoE


def passed(result):
    assert result.passed, result.as_dict()
    (r,) = result.results
    assert r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
    names = [p.name for p in r.probes]
    assert f"{LAYER}.0.mlp.deepspeed_moe.gate" in names and f"{LAYER}.2.mlp.deepspeed_moe.gate" in names
    assert f"{LAYER}.1.mlp.dense_4h_to_h" in names and f"{LAYER}.1.mlp.deepspeed_moe.gate" not in names
    return r


def test_qwen3_moe_with_a_dense_layer_between_matches_hf(moe_tree, tmp_path):
    spec = QWEN3_MOE.with_values(**DENSE_BETWEEN)
    passed(verify(spec, moe_tree, tmp_path, VerifyOptions(tiny=TinyConfig(num_layers=3))))
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert (config["num_local_experts"], config["num_experts_per_tok"], config["norm_topk_prob"],
            config["moe_intermediate_size"], config["mlp_only_layers"]) == (16, 8, True, 32, [1])


@pytest.mark.slow
@pytest.mark.parametrize(("tp", "ep", "values", "layers"), [
    (2, 1, DENSE_BETWEEN, 3), (1, 2, DENSE_BETWEEN, 3), (2, 2, {}, 2),
    (1, 1, {"moe.layer_interval": 2, "moe.dense_layers": [3]}, 4),  # experts in layer 1 only
], ids=["tp2", "ep2", "tp2-ep2", "interval"])
def test_qwen3_moe_matches_hf_at_every_parallel_size(moe_tree, tmp_path, tp, ep, values, layers):
    result = verify(QWEN3_MOE.with_values(**values), moe_tree, tmp_path,
                    VerifyOptions(tiny=TinyConfig(num_layers=layers), tensor_parallel=tp, expert_parallel=ep))
    assert result.passed, result.as_dict()
    (r,) = result.results
    assert (r.tensor_parallel, result.config["expert_parallel"]) == (tp, ep)


def test_a_head_size_of_hidden_over_heads_is_said_to_the_trees_parser(moe_tree):
    """The port's entry point defaults --kv-channels to the bundled spec's head size (128): a
    checkpoint of a model at hidden / heads must say its own, or the way back reads 128."""
    from porter.convert.run import Port

    port = Port(QWEN3_MOE, moe_tree)
    at_hidden_over_heads = QWEN3_MOE.with_values(**{"attention.head_dim": None, "sizes.hidden_size": 64,
                                                    "sizes.num_attention_heads": 4})
    argv = port.run_argv(at_hidden_over_heads)
    assert argv[argv.index("--kv-channels") + 1] == "16"
    argv = port.run_argv(QWEN3_MOE.with_values(**{"attention.head_dim": 32}))
    assert argv[argv.index("--kv-channels") + 1] == "32"


@pytest.mark.slow
def test_a_converted_checkpoint_loads_with_the_trees_own_loader_at_tensor_and_expert_parallel_2(moe_tree, tmp_path):
    from typer.testing import CliRunner

    from porter.cli import app

    folder, _ = tiny_qwen3_moe(tmp_path / "hf")
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(folder), "--out", str(ckpt), "--tp", "2",
                               "--model", "qwen3_moe", "--target", str(moe_tree)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "qwen3_moe", "--target", str(moe_tree)])
    assert done.exit_code == 0, done.output
    (config, state), (config2, state2) = convert.read_hf(folder), convert.read_hf(back)
    assert sorted(state) == sorted(state2) and all(torch.equal(state[k], state2[k]) for k in state)
    assert transformers_reads(config2) == transformers_reads(config)
    result = verify(QWEN3_MOE, moe_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt, expert_parallel=2))
    (r,) = result.results
    assert result.passed and r.max_logit_diff <= 1e-5 and r.tensor_parallel == 2, result.as_dict()
    assert r.loaded_by == "the tree's megatron.checkpointing.load_checkpoint"


# -- broken on purpose ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "file", "edit", "module"), [
    ("experts in every layer", "megatron/model/mixture_of_experts.py",
     ("if layer_number - 1 in dense_layers or layer_number % interval:", "if layer_number % interval:"), f"{LAYER}.1"),
    pytest.param("experts at the dense MLP's width", "megatron/model/transformer.py",
                 ("built_at_width(args, args.moe_ffn_hidden_size, lambda: ParallelMLP(init_method, "
                  "output_layer_init_method))", "ParallelMLP(init_method, output_layer_init_method)"),
                 f"{LAYER}.0.mlp", marks=pytest.mark.slow),
])
def test_a_broken_qwen3_moe_port_fails_verify_at_the_module(moe_tree, tmp_path, name, file, edit, module):
    broken = edited_copy(moe_tree, tmp_path / "broken", (file, *edit))
    result = verify(QWEN3_MOE.with_values(**DENSE_BETWEEN), broken, tmp_path / "verify",
                    VerifyOptions(tiny=TinyConfig(num_layers=3)))
    assert not result.passed
    (r,) = result.results
    assert r.structure  # the tree's experts are not the HF model's
    first = r.first_divergence
    assert first is not None and first.name.startswith(module), [(p.name, p.max_diff) for p in r.probes]


# -- training ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_trains_at_expert_parallel_2(moe_tree, smoke_workdir):
    from typer.testing import CliRunner

    from porter.cli import app

    result = CliRunner().invoke(app, ["smoke", "qwen3_moe", "--target", str(moe_tree), "--workdir",
                                      str(smoke_workdir), "--nproc", "2", "--ep", "2", "--steps", "20", "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    doc = json.loads(result.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    assert "ep_size_2" in (smoke_workdir / "train.log").read_text()
    print(f"smoke qwen3_moe EP=2: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
