"""DeepSeek-V2-Lite and DeepSeek-V3: the specs against their published config.json, what porter
refuses to guess, DeepSeek's router against transformers' routers, the weights both ways bit for
bit (latent attention, routed experts in files of their own, shared experts, the correction
bias; block-fp8 and the multi-token prediction layer), and the ports against
DeepseekV2ForCausalLM / DeepseekV3ForCausalLM (latent attention alone against them too)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.errors import PorterError
from porter.verify.parity import VerifyOptions, verify
from tests.helpers.trees import edited_copy

DATA = Path(__file__).parent / "data"
V2_LITE, V3 = load_spec("deepseek_v2_lite"), load_spec("deepseek_v3")
LAYER0, LAYER1 = "language_model.encoder.layers.0", "language_model.encoder.layers.1"
PUBLISHED = {"deepseek_v2_lite": "deepseek-ai--DeepSeek-V2-Lite.json", "deepseek_v3": "deepseek-ai--DeepSeek-V3.json"}


def published(name: str) -> dict:
    return json.loads((DATA / "hf_configs" / PUBLISHED[name]).read_text())


def model_folder(tmp_path, config, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# -- the specs and config.json --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_spec_is_its_published_config(tmp_path, name):
    """The published config.json as MODEL reads as the bundled spec, field for field (YaRN's
    numbers too)."""
    config = published(name)
    read = load_spec(str(model_folder(tmp_path, config, name.replace("_", "-"))))
    bundled = load_spec(name)
    assert read.hf_class == bundled.hf_class
    # a difference's fields that spell the same model another way (a bias per site, or one for all)
    same = {k for d in bundled.differences if d.same_model(bundled, dict(read.values)) for k in d.fields}
    differ = {k: (read[k], bundled[k]) for k in bundled.values if read[k] != bundled[k] and k not in same}
    assert not differ
    assert read["position_embedding.rope_scaling.type"] == "yarn" and read["position_embedding.rope_scaling.factor"] == 40


@pytest.mark.parametrize(("name", "change", "named"), [
    ("deepseek_v2_lite", {"moe_layer_freq": 2}, "moe_layer_freq"),  # transformers ignores it
    ("deepseek_v2_lite", {"norm_topk_prob": True}, "norm_topk_prob"),  # transformers' V2 router ignores it
    ("deepseek_v2_lite", {"scoring_func": "sigmoid"}, "scoring_func"),  # transformers' V2 router: softmax
    ("deepseek_v2_lite", {"topk_method": "noaux_tc"}, "topk_method"),
    ("deepseek_v2_lite", {"seq_aux": False}, "seq_aux"),  # DeepSeek's other loss is not ported
    ("deepseek_v2_lite", {"qk_head_dim": 100}, "qk_head_dim"),  # transformers' derived field, contradicted
    ("deepseek_v3", {"topk_method": "greedy"}, "topk_method"),  # transformers' V3 router: grouped anyway
    ("deepseek_v3", {"scoring_func": "softmax"}, "scoring_func"),
])
def test_what_transformers_would_read_otherwise_is_refused_by_name(tmp_path, name, change, named):
    config = published(name)
    with pytest.raises(PorterError) as caught:
        load_spec(str(model_folder(tmp_path, {**config, **change}, "model")))
    error = caught.value
    assert named in f"{error.construct} {error.found} {error.message}", error
    assert error.file.endswith("config.json")


@pytest.mark.parametrize(("sections", "field"), [
    ({"attention": {"latent": {"kv_lora_rank": 8}}}, "attention.latent.qk_nope_head_dim"),
    ({"attention": {"latent": {"q_lora_rank": 8}}}, "attention.latent.q_lora_rank"),
    ({"moe": {"router": {"score": "sigmoid"}}}, "moe.router.score"),  # a router needs experts
    ({"moe": {"num_experts": 16, "top_k": 4, "router": {"num_groups": 3, "group_topk": 1}}}, "moe.router.num_groups"),
    ({"moe": {"num_experts": 16, "top_k": 6, "router": {"num_groups": 4, "group_topk": 1}}}, "moe.router.group_topk"),
    ({"moe": {"shared_ffn_hidden_size": 64}}, "moe.shared_ffn_hidden_size"),
])
def test_specs_that_make_no_sense_are_refused_by_field(sections, field):
    from porter.catalog import parse

    base = {"model": {"name": "x", "class_prefix": "X"}, "position_embedding": {"type": "rotary"},
            "norm": {"type": "rmsnorm"}, "linear": {"bias": False}}
    with pytest.raises(PorterError) as caught:
        parse({**base, **sections})
    assert caught.value.construct == field


@pytest.mark.slow  # in the test command: tests/verify/test_shrink.py's V3 shrink; end to end: the -m slow battery's V3 too
def test_deepseek_v3s_own_config_is_verified_with_an_expert_layer(deepseek_tree, tmp_path):
    """`porter verify ./DeepSeek-V3`: shrunk to 4 layers, not 2, so that a layer with experts (its
    4th: first_k_dense_replace 3) is among them (2 dense layers were another architecture than
    the port's, refused), the latent's head size its rope part, as transformers derives it."""
    folder = model_folder(tmp_path, published("deepseek_v3"), "deepseek_v3")
    done = CliRunner().invoke(app, ["verify", str(folder), "--target", str(deepseek_tree), "--models", "model",
                                    "--workdir", str(tmp_path / "verify"), "--json"])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["results"][0]["max_abs_logit_diff"] <= 2e-5, doc
    assert "4 layers, not 2: its first dense layer (0) and first expert layer (3) among them" in done.output


def test_the_entry_points_default_to_the_models(deepseek_tree):
    v3 = (deepseek_tree / "pretrain_deepseek_v3.py").read_text()
    for default in ("multi_latent_attention=True", "q_lora_rank=1536", "kv_lora_rank=512", "qk_head_dim=128",
                    "qk_pos_emb_head_dim=64", "v_head_dim=128", "num_experts=[256]", "topk=8",
                    "moe_dense_layers=[0, 1, 2]", "moe_router_score_function='sigmoid'",
                    "moe_router_enable_expert_bias=True", "moe_router_num_groups=8", "moe_router_group_topk=4",
                    "moe_router_topk_scaling_factor=2.5", "moe_shared_expert_intermediate_size=2048",
                    "no_pipeline_parallel=True"):
        assert default in v3, default
    v2 = (deepseek_tree / "pretrain_deepseek_v2_lite.py").read_text()
    assert "moe_router_load_balancing_type='seq_aux_loss'" in v2 and "moe_loss_coeff=0.001" in v2
    assert "q_lora_rank" not in v2  # a plain query projection


# -- DeepSeek's router against transformers' ----------------------------------------------------------


@pytest.fixture(scope="module")
def router_module(deepseek_tree):
    """The port's grouped_routing.py, imported from the tree over its mixture_of_experts.py (torch only)."""
    modules, saved = {}, {}
    try:
        for name in ("mixture_of_experts", "grouped_routing"):
            found = importlib.util.spec_from_file_location(f"megatron.model.{name}",
                                                           deepseek_tree / f"megatron/model/{name}.py")
            modules[name] = importlib.util.module_from_spec(found)
            saved[found.name] = sys.modules.get(found.name)
            sys.modules[found.name] = modules[name]
            found.loader.exec_module(modules[name])
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return modules["grouped_routing"]


@pytest.mark.parametrize("family", ["v2_greedy", "v2_groups", "v3"])
def test_the_router_chooses_and_weighs_as_transformers_does(router_module, family):
    """DeepSeek-V2's softmax (greedy, and group-limited by each group's best expert) and V3's
    biased sigmoid over the best groups by their two best, renormalised and scaled, against
    transformers' own routers on the same weights: the same experts, the same weights."""
    from transformers import DeepseekV2Config, DeepseekV3Config
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2TopkRouter
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    torch.manual_seed(3)
    sizes = dict(hidden_size=24, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=16, num_experts_per_tok=3)
    if family == "v3":
        config = DeepseekV3Config(**sizes, n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True)
        theirs = DeepseekV3TopkRouter(config)
        options = dict(score="sigmoid", expert_bias=True, groups=4, group_topk=2, group_score="top2_sum", scaling=2.5)
    else:
        grouped = family == "v2_groups"
        config = DeepseekV2Config(**sizes, topk_method="group_limited_greedy" if grouped else "greedy",
                                  n_group=4 if grouped else None, topk_group=2 if grouped else None,
                                  routed_scaling_factor=1.5)
        theirs = DeepseekV2TopkRouter(config)
        options = dict(groups=4, group_topk=2, group_score="max") if grouped else {}
        options["scaling"] = 1.5
    mine = router_module.GroupedRouter(24, 16, k=3, normalize=family == "v3", std=0.5, seed=(1, 2), **options)
    with torch.no_grad():
        theirs.weight.copy_(mine.wg.weight)
        if family == "v3":
            mine.e_score_correction_bias.copy_(torch.randn(16) * 0.3)
            theirs.e_score_correction_bias.copy_(mine.e_score_correction_bias)
    x = torch.randn(40, 24)
    _, weights, experts = theirs(x)
    _, capacity, count, indices, _, mine_weights, _ = mine(x, None, True)
    order, mine_order = experts.sort(dim=-1), indices.t().long().sort(dim=-1)
    assert count == 16 and torch.equal(order.values, mine_order.values)
    torch.testing.assert_close(mine_weights.t().gather(1, mine_order.indices), weights.gather(1, order.indices))


def test_the_correction_bias_stays_fp32_in_a_bf16_model(router_module):
    router = router_module.GroupedRouter(8, 4, k=2, normalize=True, std=0.5, seed=(1, 1), score="sigmoid",
                                         expert_bias=True)
    router.e_score_correction_bias.fill_(1e-3 + 1e-6)
    router.bfloat16()
    assert router.wg.weight.dtype == torch.bfloat16
    assert router.e_score_correction_bias.dtype == torch.float32 and router.e_score_correction_bias[0] == 1e-3 + 1e-6
    assert "e_score_correction_bias" in router.state_dict()


def test_the_sequence_level_loss_is_deepseeks(router_module):
    """DeepSeek-V2's seq_aux loss (its modeling code's MoEGate): per sequence, each expert's routes
    over seq_len * k / E times its mean softmax score, summed, averaged over sequences, times
    alpha; the router sees the tokens of [s, b] in a row and the batch's shape from the MoE layer."""
    torch.manual_seed(5)
    s, b, hidden, experts, k, alpha = 7, 3, 16, 8, 3, 0.001
    router = router_module.GroupedRouter(hidden, experts, k=k, normalize=False, std=0.5, seed=(2, 2),
                                         load_balancing="seq_aux_loss", loss_coeff=alpha)
    x = torch.randn(s, b, hidden)
    router.see_sequences(None, (x,))
    loss = router(x.reshape(-1, hidden), None, True)[0]
    loss.backward()

    weight = router.wg.weight.detach().clone().requires_grad_()
    per_sequence = x.transpose(0, 1)  # [b, s, h]: the sequences as DeepSeek's gate sees them
    scores = torch.softmax(per_sequence @ weight.t(), dim=-1)
    chosen = scores.topk(k, dim=-1).indices.reshape(b, -1)
    ce = torch.zeros(b, experts).scatter_add_(1, chosen, torch.ones(b, s * k)) / (s * k / experts)
    theirs = (ce * scores.mean(dim=1)).sum(dim=1).mean() * alpha
    theirs.backward()
    torch.testing.assert_close(loss, theirs)
    torch.testing.assert_close(router.wg.weight.grad, weight.grad)


# -- weights ------------------------------------------------------------------------------------------


def tiny_deepseek(folder, version=3, layers=3, **more):
    """A tiny DeepSeek (4 experts top-2 after a dense layer, 1 shared expert; V3: a query latent,
    2 groups, the bias) saved by save_pretrained, weights and saved buffers std 0.1."""
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

    sizes = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=layers,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=250, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                 first_k_dense_replace=1, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
                 max_position_embeddings=64, bos_token_id=5, eos_token_id=7)
    if version == 3:
        config, cls = DeepseekV3Config(**sizes, q_lora_rank=24, n_group=2, topk_group=1, **more), DeepseekV3ForCausalLM
    else:
        config, cls = DeepseekV2Config(**sizes, q_lora_rank=None, **more), DeepseekV2ForCausalLM
    torch.manual_seed(0)
    model = cls(config).float().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    return folder, model


@pytest.mark.parametrize("version", [2, 3])
def test_the_weights_convert_bit_exact_both_ways(deepseek_tree, tmp_path, version):
    """Latent attention (rotary rows reordered on the way in, back on the way out), the routed
    experts in files of their own, the shared experts, the correction bias: HF -> the plain
    engine's checkpoint at TP=2 -> HF, the same bits in HF's on-disk names."""
    folder, model = tiny_deepseek(tmp_path / "hf", version)
    name = "deepseek_v3" if version == 3 else "deepseek_v2_lite"
    port = convert.Port(name, deepseek_tree)
    config, on_disk = convert.read_hf(folder)
    assert "model.layers.1.mlp.experts.3.gate_proj.weight" in on_disk  # what save_pretrained writes
    mine = port.to_megatron(on_disk, config, tensor_parallel=2)
    layer = mine.layers[1]
    if version == 3:
        assert torch.equal(layer["mlp.deepspeed_moe.gate.e_score_correction_bias"],
                           on_disk["model.layers.1.mlp.gate.e_score_correction_bias"])
        query = "attention.q_b_proj.weight"
    else:
        query = "attention.q_proj.weight"
    hf_query = on_disk[f"model.layers.1.self_attn.{query.split('.')[1]}.weight"].view(4, 20, -1)
    tree_query = layer[query].view(4, 20, -1)
    assert torch.equal(tree_query[:, :12], hf_query[:, :12])  # the part without rotary as it is
    assert torch.equal(tree_query[:, 12:16], hf_query[:, 12::2]) and torch.equal(tree_query[:, 16:], hf_query[:, 13::2])
    assert torch.equal(layer["shared_experts.dense_4h_to_h.weight"], on_disk["model.layers.1.mlp.shared_experts.down_proj.weight"])
    assert "mlp.dense_h_to_4h.weight" in mine.layers[0] and "shared_experts.dense_h_to_4h.weight" not in mine.layers[0]

    numbers = {dest: value for dest, (_, value) in port.numbers(port.spec_for(config)).items()}
    assert numbers["num_experts"] == [4] and numbers["kv_lora_rank"] == 16 and numbers["moe_dense_layers"] == [0]
    files = convert.write_checkpoint(mine, tmp_path / "ckpt", tp=2, pipe=False, args=numbers)
    names = sorted(p.name for p in files)
    assert "layer_1_expert_3_mp_rank_01_model_states.pt" in names and len(names) == 2 * (2 * 4 + 1)
    back = convert.megatron_to_hf(port.read_checkpoint(tmp_path / "ckpt", vocab_size=250))
    assert sorted(back) == sorted(on_disk)
    assert all(torch.equal(back[k], on_disk[k]) for k in on_disk)


def test_block_fp8_and_the_multi_token_prediction_layer(deepseek_tree, tmp_path):
    """DeepSeek-V3's published layout, tiny: every projection block-fp8 (ragged edge blocks: the
    latent's 16 + 8 rows), router, bias, norms and embeddings not, and one more layer of
    multi-token prediction. convert reads the projections as bf16, leaves the extra layer out
    and says so; the way back is the dequantized model."""
    from safetensors.torch import save_file

    folder, _ = tiny_deepseek(tmp_path / "hf", 3, layers=3)
    config, state = convert.read_hf(folder)
    block, quantized, expected = (16, 16), {}, {}
    for name, tensor in state.items():
        if name.endswith("_proj.weight") or name.endswith("_proj_with_mqa.weight"):
            rows, cols = tensor.shape
            scales = torch.rand(-(-rows // block[0]), -(-cols // block[1])) + 0.5
            spread = scales.repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
            quantized[name] = (tensor / spread).to(torch.float8_e4m3fn)
            quantized[name + "_scale_inv"] = scales
            expected[name] = (quantized[name].float() * spread).to(torch.bfloat16)
        else:
            quantized[name] = tensor if tensor.dtype == torch.float32 and "correction" in name else tensor.to(torch.bfloat16)
            expected[name] = quantized[name]
    fp8 = tmp_path / "fp8"
    fp8.mkdir()
    save_file(quantized, str(fp8 / "model.safetensors"), metadata={"format": "pt"})
    # the tiny model's third layer plays the prediction layer: the config has two decoder layers
    config.update(num_hidden_layers=2, num_nextn_predict_layers=1, torch_dtype="bfloat16",
                  quantization_config={"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                       "weight_block_size": list(block)})
    (fp8 / "config.json").write_text(json.dumps(config))
    runner = CliRunner()
    done = runner.invoke(app, ["convert", "hf-to-megatron", "--hf", str(fp8), "--out", str(tmp_path / "ckpt"),
                               "--model", "deepseek_v3", "--target", str(deepseek_tree), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["dequantized"] == "block-fp8 (16x16 blocks) read as bf16"
    extra = sum(1 for name in state if name.startswith("model.layers.2."))
    assert summary["dropped"] == [f"model.layers.2.* ({extra} tensors): a multi-token prediction layer "
                                  "(num_nextn_predict_layers = 1), not part of transformers' model"], summary
    done = runner.invoke(app, ["convert", "megatron-to-hf", "--load", str(tmp_path / "ckpt"), "--out",
                               str(tmp_path / "back"), "--model", "deepseek_v3", "--target", str(deepseek_tree)])
    assert done.exit_code == 0, done.output
    back_config, back = convert.read_hf(tmp_path / "back")
    kept = {k: v for k, v in expected.items() if not k.startswith("model.layers.2.")}
    assert sorted(back) == sorted(kept) and back_config["num_nextn_predict_layers"] == 0
    for name, tensor in kept.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


# -- the ports against transformers' DeepSeek classes ------------------------------------------------------


def passed(result, model_class):
    assert result.passed, result.as_dict()
    (r,) = result.results
    assert r.model_class == model_class and r.max_logit_diff <= 1e-5 and r.argmax_equal and not r.structure
    assert not [p for p in r.probes if p.diverges]
    return {p.name for p in r.probes}


def test_deepseek_v3_matches_hf_at_expert_parallel_2(deepseek_tree, tmp_path):
    """The query latent, the latent, the biased grouped sigmoid router, the routed experts split
    over two ranks, the shared expert: every probe on the way, the logits."""
    result = verify(V3, deepseek_tree, tmp_path, VerifyOptions(expert_parallel=2))
    probes = passed(result, "DeepSeekV3Model")
    assert {f"{LAYER1}.attention.q_a_layernorm", f"{LAYER1}.attention.kv_a_layernorm",
            f"{LAYER1}.mlp.deepspeed_moe.gate", f"{LAYER1}.mlp", f"{LAYER1}.shared_experts"} <= probes
    assert f"{LAYER0}.mlp.dense_4h_to_h" in probes  # the first layer is dense
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["n_group"], config["topk_group"], config["num_experts_per_tok"], config["first_k_dense_replace"],
            config["n_shared_experts"]) == (4, 2, 3, 1, 1)
    # YaRN as DeepSeek-V3's: the latent attention's softmax scale times mscale(40, 1.0)^2 = 1.87
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    assert (rope["rope_type"], rope["factor"], rope["mscale_all_dim"]) == ("yarn", 40.0, 1.0)
    hf = convert.read_hf(tmp_path / "hf")[1]["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert hf.abs().max() > 0.05  # the bias was drawn, so the router probe proves it is carried
    assert "ep_size_2" in (tmp_path / "worker.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "options"), [
    ("deepseek_v2_lite", {}), ("deepseek_v2_lite", {"expert_parallel": 2}),
    ("deepseek_v2_lite", {"tensor_parallel": 2}), ("deepseek_v3", {}), ("deepseek_v3", {"tensor_parallel": 2}),
], ids=["v2_lite", "v2_lite-ep2", "v2_lite-tp2", "v3", "v3-tp2"])
def test_the_ports_match_hf(deepseek_tree, tmp_path, spec, options):
    result = verify(load_spec(spec), deepseek_tree, tmp_path, VerifyOptions(**options))
    passed(result, load_spec(spec).model_class)


@pytest.fixture(scope="module")
def mla_tree(tmp_path_factory):
    """The sample tree with latent attention on LLaMA's dense layers (DeepSeek's attention alone)."""
    from tests.conftest import copy_sample_tree

    tree = copy_sample_tree(tmp_path_factory.mktemp("mla") / "Megatron-DeepSpeed")
    for spec in ("mla_dense_v2", "mla_dense_v3"):
        done = CliRunner().invoke(app, ["apply", str(DATA / f"{spec}.toml"), "--target", str(tree)])
        assert done.exit_code == 0, done.output
    return tree


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "tp"), [("mla_dense_v2", 1), ("mla_dense_v3", 2)])
def test_latent_attention_alone_matches_hf_on_both_engines(mla_tree, tmp_path, spec, tp):
    """Dense layers: the latent attention on the pipeline engine too, and split by heads at TP=2."""
    result = verify(load_spec(str(DATA / f"{spec}.toml")), mla_tree, tmp_path, VerifyOptions(tensor_parallel=tp))
    assert result.passed and [r.kind for r in result.results] == ["model", "pipe"], result.as_dict()
    assert all(r.tensor_parallel == tp for r in result.results)


# -- broken on purpose ----------------------------------------------------------------------------------

BREAKS = {
    # latent attention: the softmax scale of the rotary part alone, 1 / sqrt(rope)
    "latent attention scale": ("megatron/model/latent_attention.py",
                               ("self.softmax_scale = softmax_scale(qk_head_dim, scaling)",
                                "self.softmax_scale = softmax_scale(self.rope, scaling)"),
                               f"{LAYER0}.attention"),
    # YaRN: the softmax scale without mscale(factor, mscale_all_dim)^2 (cos and sin keep theirs)
    "yarn softmax scale": ("megatron/model/latent_attention.py",
                           ('scale *= yarn_mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2', "scale *= 1.0"),
                           f"{LAYER0}.attention"),
    # DeepSeek's router: the correction bias left out of the choice
    "correction bias ignored": ("megatron/model/grouped_routing.py",
                                ("choice = scores if self.e_score_correction_bias is None else "
                                 "scores + self.e_score_correction_bias", "choice = scores"),
                                f"{LAYER1}.mlp.deepspeed_moe.gate"),
    # shared experts fed the residual stream instead of the post-attention norm's output
    "shared experts' input": ("megatron/model/transformer.py",
                              ("shared_output, _ = self.shared_experts(layernorm_output)",
                               "shared_output, _ = self.shared_experts(layernorm_input)"),
                              f"{LAYER1}.shared_experts"),
}


@pytest.mark.slow  # each a verify of its own (the correction bias's alone took 77 s of the test command)
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_broken_module(deepseek_tree, tmp_path, name):
    file, (old, new), module = BREAKS[name]
    broken = edited_copy(deepseek_tree, tmp_path / "broken", (file, old, new))
    result = verify(V3, broken, tmp_path / "verify")
    assert not result.passed
    (r,) = result.results
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    assert first.max_diff > 1e-3


# -- training ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", ["deepseek_v2_lite", "deepseek_v3"])
def test_smoke_trains_at_expert_parallel_2(deepseek_tree, smoke_workdir, family):
    """Two processes, each layer's routed experts split over them (--moe-expert-parallel-size 2):
    the loss (with the model's router loss) falls over 20 steps on the plain engine."""
    done = CliRunner().invoke(app, ["smoke", family, "--target", str(deepseek_tree), "--workdir", str(smoke_workdir),
                                    "--nproc", "2", "--ep", "2", "--steps", "20", "--json"])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    log = (smoke_workdir / "train.log").read_text()
    assert "ep_size_2" in log and f"pretrain_{family}.py" in log
    print(f"smoke {family} EP=2: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
