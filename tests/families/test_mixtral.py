"""Mixtral: the spec, its config.json as MODEL, the weight map both ways, and the port against
MixtralForCausalLM at TP=1 and expert-parallel 2 -- on DeepSpeed's own MoE layer."""

import json

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec, parse
from porter.cli import app
from porter.errors import PorterError
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import edited_copy

MIXTRAL = load_spec("mixtral")
LAYER0 = "language_model.encoder.layers.0"

# Mixtral-8x7B-v0.1's config.json as Mistral AI published it (transformers 4 spelling)
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32,
    "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1e6, "router_aux_loss_coef": 0.02,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0", "use_cache": True, "vocab_size": 32000,
}


def tiny_mixtral(folder, experts=4, **more):
    """A tiny MixtralForCausalLM (std-0.1 weights) saved by save_pretrained; returns (folder, model)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=250, num_local_experts=experts, num_experts_per_tok=2,
                           max_position_embeddings=64, rms_norm_eps=3e-5, router_aux_loss_coef=0.01,
                           bos_token_id=5, eos_token_id=7, **more)
    torch.manual_seed(0)
    model = MixtralForCausalLM(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder, model


def model_folder(tmp_path, config, name="Mixtral-8x7B-v0.1"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# -- the spec and config.json ----------------------------------------------------------------------


def test_the_spec_is_8_experts_top_2_and_the_port_defaults_to_it(moe_tree):
    assert (MIXTRAL["moe.num_experts"], MIXTRAL["moe.top_k"], MIXTRAL["moe.aux_loss_coef"]) == (8, 2, 0.02)
    assert MIXTRAL.hf_class == "MixtralForCausalLM"
    listed = CliRunner().invoke(app, ["list"])
    assert listed.exit_code == 0 and "mixtral  (model_diffs/mixtral.toml)" in listed.output
    assert "moe.num_experts                8 (GPT: None)" in listed.output
    entry = (moe_tree / "pretrain_mixtral.py").read_text()
    for default in ("num_experts=[8]", "topk=2", "moe_norm_topk_prob=True", "moe_loss_coeff=0.02",
                    "no_pipeline_parallel=True", "expert_interval=1", "moe_dense_layers=[]"):
        assert default in entry


def test_mixtrals_config_json_is_the_mixtral_family_with_its_numbers(tmp_path):
    spec = load_spec(str(model_folder(tmp_path, MIXTRAL_8X7B)))
    assert "(family: mixtral)" in spec.description and spec.hf_class == "MixtralForCausalLM"
    assert (spec["moe.num_experts"], spec["moe.top_k"], spec["moe.aux_loss_coef"]) == (8, 2, 0.02)
    assert spec["attention.num_query_groups"] == 8 and spec["mlp.ffn_hidden_size"] == 14336
    assert spec["position_embedding.rope_theta"] == 1e6


def test_the_config_save_pretrained_writes_ports_too(tmp_path):
    """transformers 5 writes every field of MixtralConfig: `sliding_window: null`, `head_dim: null`."""
    folder, _ = tiny_mixtral(tmp_path / "tiny", experts=4)
    written = json.loads((folder / "config.json").read_text())
    assert written["sliding_window"] is None and "num_local_experts" in written
    spec = load_spec(str(folder))
    assert (spec["moe.num_experts"], spec["moe.top_k"], spec["moe.aux_loss_coef"]) == (4, 2, 0.01)


@pytest.mark.parametrize(("change", "field"), [
    ({"router_jitter_noise": 0.1}, "router_jitter_noise"),
    ({"num_experts_per_tok": 9}, "moe.top_k"),
])
def test_what_porter_cannot_honour_is_refused_by_name(tmp_path, change, field):
    # (a field MixtralConfig does not define and its modeling code does not read, such as
    # Qwen3-MoE's moe_intermediate_size, is harmless, as transformers reads it: issue 17)
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, {**MIXTRAL_8X7B, **change})))
    error = caught.value
    assert field in f"{error.construct} {error.found} {error.message}", error
    assert error.file.endswith("config.json")


@pytest.mark.parametrize(("sections", "field"), [
    ({"moe": {"top_k": 2}}, "moe.top_k"),  # experts per token without experts
    ({"moe": {"num_experts": 8, "top_k": 9}}, "moe.top_k"),  # more experts per token than experts
    ({"moe": {"num_experts": 8}, "linear": {"bias": True}}, "linear.mlp_bias"),  # DeepSpeed drops the MLP bias
])
def test_specs_porter_cannot_build_on_deepspeeds_moe_layer_are_refused(sections, field):
    with pytest.raises(PorterError) as caught:
        parse({"model": {"name": "x", "class_prefix": "X"}, **sections})
    assert caught.value.construct == field


def test_a_tree_with_deepspeeds_moe_behind_its_own_switches_is_reused_not_rewritten():
    """microsoft/Megatron-DeepSpeed's spelling (HEAD): --num-experts, --topk, --expert-interval
    (default 2: Mixtral needs 1), --disable-moe-token-dropping, ... implemented by its layer."""
    import dataclasses

    from porter.catalog import profile_of, spellings
    from porter.plan import make_plan
    from porter.profile.arguments import Argument
    from porter.render import render
    from porter.resources import sample_tree_dir
    from porter.source import SourceTree

    sample = profile_of(SourceTree.open(sample_tree_dir()))
    options = {"moe_top_k": ("--topk", "topk", "int"), "moe_interval": ("--expert-interval", "expert_interval", "int"),
               "moe_expert_parallel": ("--moe-expert-parallel-size", "moe_expert_parallel_size", "int"),
               "moe_token_dropping": ("--disable-moe-token-dropping", "moe_token_dropping", None),
               "moe_second_expert_sampling": ("--disable-moe-top2-2nd-expert-sampling", "moe_top2_2nd_expert_sampling",
                                              None),
               "moe_loss_coeff": ("--moe-loss-coeff", "moe_loss_coeff", "float")}
    arguments = sample.arguments.arguments + tuple(
        Argument(options=(option,), dest=dest, function="_add_network_size_args", action=None, default=None,
                 choices=None, keywords={"type": kind} if kind else {}) for option, dest, kind in options.values())
    profile = dataclasses.replace(sample, arguments=dataclasses.replace(sample.arguments, arguments=arguments))
    found = dict(profile.spellings)
    for switch in ("experts", *options):
        found[switch] = next(s for s in spellings()[switch] if s.origin == "tree").with_(implemented=True)
    plan = make_plan(MIXTRAL, dataclasses.replace(profile, spellings=found))
    assert not [e for e in plan.edits if e.feature == "experts" or e.feature.startswith("moe_")]
    assert plan.defaults["expert_interval"] == 1 and plan.defaults["topk"] == 2 and plan.defaults["num_experts"] == [8]
    assert plan.defaults["moe_top2_2nd_expert_sampling"] is False and plan.defaults["moe_token_dropping"] is False
    assert any("reuses the tree's --num-experts and its implementation" in r for r in plan.reused)
    model = next(e for e in plan.edits if e.template == "model.py.j2")
    assert "mixture_of_experts" not in render(model.template, plan, model.context, model.feature)

    # microsoft f01c9e6e has no such switch: DeepSpeed samples the second expert, even in eval
    found["moe_second_expert_sampling"] = None
    older = dataclasses.replace(sample.arguments, arguments=tuple(
        a for a in arguments if a.dest != "moe_top2_2nd_expert_sampling"))
    with pytest.raises(PorterError) as caught:
        make_plan(MIXTRAL, dataclasses.replace(profile, arguments=older, spellings=found))
    assert "Gumbel" in caught.value.found and caught.value.file == "megatron/model/transformer.py"


# -- weights -------------------------------------------------------------------------------------------


def test_both_hf_spellings_convert_bit_exact_both_ways(moe_tree, tmp_path):
    """save_pretrained's per-expert w1/w3/w2 and transformers 5's fused gate_up_proj/down_proj give
    the same tree weights; a plain-engine checkpoint (one file per expert) reads back to the same
    bits in HF's on-disk names."""
    folder, model = tiny_mixtral(tmp_path / "hf", experts=4)
    port = convert.Port("mixtral", moe_tree)
    config, on_disk = convert.read_hf(folder)
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in on_disk  # what save_pretrained writes
    fused = model.state_dict()
    assert fused["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 192, 64)
    from_disk = port.to_megatron(on_disk, config)
    from_memory = port.to_megatron(fused, config)
    for mine, theirs in zip(from_disk.layers, from_memory.layers, strict=True):
        assert sorted(mine) == sorted(theirs)
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    expert = "mlp.deepspeed_moe.experts.deepspeed_experts.3.dense_h_to_4h.weight"
    assert torch.equal(from_disk.layers[1][expert], fused["model.layers.1.mlp.experts.gate_up_proj"][3])
    assert torch.equal(from_disk.layers[1]["mlp.deepspeed_moe.gate.wg.weight"], fused["model.layers.1.mlp.gate.weight"])

    numbers = {dest: value for dest, (_, value) in port.numbers(port.spec_for(config)).items()}
    assert numbers["num_experts"] == [4] and numbers["topk"] == 2
    files = convert.write_checkpoint(from_disk, tmp_path / "ckpt", pipe=False, args=numbers)
    names = sorted(p.name for p in files)
    assert "layer_1_expert_3_mp_rank_00_model_states.pt" in names and len(names) == 2 * 4 + 1
    main = torch.load(tmp_path / "ckpt/release/mp_rank_00_model_states.pt", weights_only=False)
    assert main["num_experts"] == [4, 4]
    encoder = main["module"]["language_model"]["encoder"]
    assert "layers.0.mlp.deepspeed_moe.gate.wg.weight" in encoder and not any("experts" in k for k in encoder)
    back = convert.megatron_to_hf(port.read_checkpoint(tmp_path / "ckpt", vocab_size=250))
    assert sorted(back) == sorted(on_disk)
    assert all(torch.equal(back[k], on_disk[k]) for k in on_disk)


def test_convert_writes_the_plain_engines_checkpoint_the_moe_model_runs_on(moe_tree, tmp_path):
    folder, _ = tiny_mixtral(tmp_path / "hf")
    runner = CliRunner()
    convert_to = ["convert", "hf-to-megatron", "--hf", str(folder), "--model", "mixtral", "--target", str(moe_tree)]
    done = runner.invoke(app, [*convert_to, "--out", str(tmp_path / "c")])  # no engine named: the port's
    assert done.exit_code == 0 and "plain (--no-pipeline-parallel) engine" in done.output, done.output
    assert (tmp_path / "c/release/layer_1_expert_3_mp_rank_00_model_states.pt").exists()
    done = runner.invoke(app, [*convert_to, "--out", str(tmp_path / "p"), "--pipe"])
    assert done.exit_code == 2 and "--no-pipe" in done.output and not (tmp_path / "p").exists(), done.output
    done = runner.invoke(app, ["verify", "mixtral", "--target", str(moe_tree), "--models", "pipe",
                               "--workdir", str(tmp_path / "v")])
    assert done.exit_code == 2 and "MixtralModelPipe cannot carry experts" in done.output


# -- the port against MixtralForCausalLM ------------------------------------------------------------------


def passed(result):
    assert result.passed, result.as_dict()
    (r,) = result.results
    assert r.model_class == "MixtralModel" and r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
    assert not [p for p in r.probes if p.diverges]
    moe = [p.name for p in r.probes if "mlp" in p.name]
    assert f"{LAYER0}.mlp.deepspeed_moe.gate" in moe and f"{LAYER0}.mlp" in moe  # the router and the MoE layer
    return r


@pytest.mark.parametrize("ep", [1, 2], ids=["tp1", "ep2"])
def test_mixtral_matches_hf(moe_tree, tmp_path, ep):
    result = verify(MIXTRAL, moe_tree, tmp_path, VerifyOptions(expert_parallel=ep))
    passed(result)
    assert result.config["expert_parallel"] == ep
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_local_experts"], config["num_experts_per_tok"], config["router_jitter_noise"]) == (8, 2, 0.0)
    if ep == 2:
        log = (tmp_path / "worker.log").read_text()
        assert "data parallel 2" in log and "ep_size_2" in log  # two processes, the experts split over them


# the test command keeps test_mixtral_matches_hf[ep2] (converted, loaded by the tree's own loader on
# 2 ranks) and the bit-exact round trips of both HF spellings
@pytest.mark.slow
def test_a_converted_checkpoint_loads_with_the_trees_own_loader_at_expert_parallel_2(moe_tree, tmp_path):
    """HF (4 experts, its own numbers) -> `porter convert` -> the tree's load_checkpoint on 2 ranks,
    each reading its own experts' files -> HF's logits; and back to HF bit-exact."""
    folder, _ = tiny_mixtral(tmp_path / "hf", experts=4)
    runner = CliRunner()
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(folder), "--out", str(ckpt), "--no-pipe",
                               "--model", "mixtral", "--target", str(moe_tree)])
    assert done.exit_code == 0, done.output
    args = torch.load(ckpt / "release" / "mp_rank_00_model_states.pt", weights_only=False)["args"]
    assert (args.num_experts, args.topk, args.moe_loss_coeff, args.num_key_value_heads) == ([4], 2, 0.01, 2)
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(ckpt), "--out", str(back),
                               "--model", "mixtral", "--target", str(moe_tree)])
    assert done.exit_code == 0, done.output
    (config, state), (config2, state2) = convert.read_hf(folder), convert.read_hf(back)
    assert sorted(state) == sorted(state2) and all(torch.equal(state[k], state2[k]) for k in state)
    for key in ("num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "rms_norm_eps", "eos_token_id"):
        assert config2[key] == config[key], key

    result = verify(MIXTRAL, moe_tree, tmp_path / "verify", VerifyOptions(checkpoint=ckpt, expert_parallel=2))
    (r,) = result.results
    assert result.passed and r.max_logit_diff <= 1e-5, result.as_dict()
    assert r.loaded_by == "the tree's megatron.checkpointing.load_checkpoint"


@pytest.mark.parametrize(("name", "edit"), [
    ("top-1", ("k=args.topk,", "k=1,")),
    pytest.param("probabilities not renormalised", ("normalize=args.moe_norm_topk_prob,", "normalize=False,"),
                 marks=pytest.mark.slow),
    pytest.param("DeepSpeed's gate kept", ("self.mlp.deepspeed_moe.gate = Router(", "Router("),
                 marks=pytest.mark.slow),
])
def test_wrong_routing_fails_verify_at_the_moe_router(moe_tree, tmp_path, name, edit):
    broken = edited_copy(moe_tree, tmp_path / "broken", ("megatron/model/transformer.py", *edit))
    result = verify(MIXTRAL, broken, tmp_path / "verify")
    assert not result.passed
    (r,) = result.results
    first = r.first_divergence
    assert first is not None and first.name.startswith(f"{LAYER0}.mlp"), [(p.name, p.max_diff) for p in r.probes]
    assert "MoE" in first.what


# -- training -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_checkpoint_the_tree_trains_at_expert_parallel_2_converts_and_verifies(moe_tree, smoke_workdir, tmp_path):
    """Two processes train with --moe-expert-parallel-size 2 and DeepSpeed saves (each rank its own
    experts' files); porter converts that to HF, and the tree loading it matches HF's logits."""
    from porter.smoke import SmokeConfig
    from porter.smoke.argv import training_arguments
    from porter.smoke.data import prepare_data
    from porter.smoke.port import SmokePort
    from porter.source import SourceTree
    from porter.treerun.script import launch

    config = SmokeConfig(steps=2, nproc=2, extra_args=["--moe-expert-parallel-size", "2"])
    model, prefix = prepare_data(moe_tree, smoke_workdir, config.vocab_size)
    args = training_arguments(SmokePort.of(MIXTRAL, SourceTree.open(moe_tree), config), tmp_path, config, model, prefix)
    save = tmp_path / "checkpoint"
    run = launch(moe_tree, MIXTRAL.script, args + ["--save", str(save), "--save-interval", "2"], nproc=2)
    assert run.returncode == 0, run.log[-3000:]
    assert "ep_size_2" in run.log and "moe loss" in run.log
    folder = save / (save / "latest").read_text().strip()
    assert len(list(folder.glob("layer_*_expert_*_mp_rank_00_model_states.pt"))) == 2 * 8
    first, second = (torch.load(folder / f"layer_0_expert_{e}_mp_rank_00_model_states.pt")
                     for e in (0, 5))  # 0 on rank 0, 5 on rank 1; trained apart from the same copy
    assert all(not torch.equal(a, b) for a, b in zip(first.values(), second.values(), strict=True))

    done = CliRunner().invoke(app, ["convert", "megatron-to-hf", "--load", str(save), "--out", str(tmp_path / "hf"),
                                    "--model", "mixtral", "--target", str(moe_tree)])
    assert done.exit_code == 0, done.output
    config_json = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config_json["num_local_experts"], config_json["num_experts_per_tok"]) == (8, 2)
    result = verify(MIXTRAL, moe_tree, tmp_path / "verify", VerifyOptions(checkpoint=save))
    (r,) = result.results
    assert result.passed and r.max_logit_diff <= 1e-5, result.as_dict()


@pytest.mark.slow
def test_smoke_training_loss_falls(moe_tree, smoke_workdir):
    result = CliRunner().invoke(app, ["smoke", "mixtral", "--target", str(moe_tree), "--workdir",
                                      str(smoke_workdir), "--steps", "20"])
    assert result.exit_code == 0, result.output
    assert "smoke passed" in result.output
