"""The plan's decisions per variant, on profiles shaped like each real tree.

Each profile starts from the sample tree's (read for real) and is changed where a variant
differs, so the decisions are tested without the real trees: reuse an option the tree has
(never a second option or dest), add only the implementation that is missing, skip guards
the tree's bias path does not need, wire a tree that implements everything to its switches.
"""

import dataclasses

import pytest

from porter.catalog import load_spec, profile_of, spellings
from porter.errors import PorterError
from porter.plan import make_plan
from porter.profile.arguments import Argument
from porter.render import render
from porter.resources import sample_tree_dir
from porter.source import SourceTree

SPEC = load_spec("llama")


@pytest.fixture(scope="module")
def sample():
    return profile_of(SourceTree.open(sample_tree_dir()))


def tree_spelling(feature, option, implemented, **changes):
    spelling = next(s for s in spellings()[feature] if s.origin == "tree" and s.option == option)
    return spelling.with_(implemented=implemented, **changes)


def with_options(profile, *arguments):
    registered = profile.arguments.arguments + tuple(
        Argument(options=(option,), dest=dest, function=function, action=None, default=None, choices=None,
                 keywords={"type": kind} if kind else {})
        for option, dest, function, kind in arguments
    )
    return dataclasses.replace(profile, arguments=dataclasses.replace(profile.arguments, arguments=registered))


def rendered(plan) -> dict[str, str]:
    """Every file the plan creates, rendered and compiled."""
    out = {}
    for edit in plan.edits:
        if edit.template:
            out[edit.file] = render(edit.template, plan, edit.context, edit.feature)
            compile(out[edit.file], edit.file, "exec")
    return out


def edits(plan, name=None, feature=None):
    return [e for e in plan.edits if (name is None or e.name == name) and (feature is None or e.feature == feature)]


def test_the_sample_tree_gets_every_feature_from_porter(sample):
    plan = make_plan(SPEC, sample)
    assert plan.style == "explicit"
    added = [e.reason for e in edits(plan, "AddArguments")]
    assert any("--no-bias" in r for r in added) and any("--layernorm-type" in r for r in added)
    assert plan.defaults["no_bias"] is True and plan.defaults["position_embedding_type"] == "rotary"


def microsoft_head(sample):
    """The sample tree's profile with microsoft HEAD's switches, each implemented by the tree."""
    profile = with_options(
        sample,
        ("--swiglu", "swiglu", "_add_network_size_args", None),
        ("--use-rotary-position-embeddings", "use_rotary_position_embeddings", "_add_network_size_args", None),
        ("--rotary-position-embeddings-theta", "rope_theta", "_add_network_size_args", "int"),
        ("--normalization", "normalization", "_add_network_size_args", "str"),
        ("--disable-bias-linear", "add_bias_linear", "_add_training_args", None),
        ("--untie-embeddings-and-output-weights", "untie_embeddings_and_output_weights", "_add_network_size_args", None),
    )
    spellings = dict(profile.spellings)
    spellings.update(
        swiglu=tree_spelling("swiglu", "--swiglu", True),
        rotary=tree_spelling("rotary", "--use-rotary-position-embeddings", True),
        rope_theta=tree_spelling("rope_theta", "--rotary-position-embeddings-theta", True),
        rmsnorm=tree_spelling("rmsnorm", "--normalization", True),
        no_bias=tree_spelling("no_bias", "--disable-bias-linear", True),
        untied=tree_spelling("untied", "--untie-embeddings-and-output-weights", True),
    )
    entry = dataclasses.replace(
        profile.entry, config="core_transformer_config_from_args(args)",
        rotary_cache=("args.use_rotary_position_embeddings", "update_rotary_pos_emb(args.seq_length)"),
        pretrain_positional=("train_valid_test_datasets_provider", "model_provider", "ModelType.encoder_or_decoder",
                             "forward_step"),
        imports={**profile.entry.imports, "ModelType": "from megatron.core.enums import ModelType",
                 "update_rotary_pos_emb": "from megatron.utils import update_rotary_pos_emb",
                 "core_transformer_config_from_args": "from megatron.arguments import core_transformer_config_from_args"})
    return dataclasses.replace(profile, spellings=spellings, entry=entry)


def test_microsoft_head_is_wired_to_its_switches(sample):
    plan = make_plan(SPEC, microsoft_head(sample))
    assert plan.style == "flags"
    model_code = {"megatron/model/transformer.py", "megatron/model/language_model.py", "megatron/model/gpt_model.py",
                  "megatron/optimizer/__init__.py"}
    # nothing duplicated in the model code (the fused attention is a kernel choice, not a feature)
    assert not {e.file for e in plan.edits if e.feature != "attention"} & model_code
    added = [e.reason for e in edits(plan, "AddArguments") if e.feature != "tokenizer_model"]  # tokenizer not emulated
    assert added == ["adds --ffn-multiple-of: no ffn_rule switch found",
                     "adds --ffn-dim-multiplier: no ffn_multiplier switch found",
                     "adds --add-bos-token: no add_bos switch found"]
    assert plan.defaults["add_bias_linear"] is False and plan.defaults["swiglu"] is True
    assert plan.defaults["rope_theta"] == 10000 and isinstance(plan.defaults["rope_theta"], int)  # an int option
    assert any("reuses the tree's --swiglu" in r for r in plan.reused)
    model = next(e for e in plan.edits if e.template == "model_flags.py.j2")
    assert ("not args.add_bias_linear", "--disable-bias-linear") in model.context["switches"]
    files = rendered(plan)
    assert "class LLaMAModel(GPTModel):" in files["megatron/model/llama_model.py"]
    assert 'assert not args.add_bias_linear, "LLaMA needs --disable-bias-linear"' in files["megatron/model/llama_model.py"]
    script = files["pretrain_llama.py"]
    assert "from megatron.core.enums import ModelType" in script
    assert "model = LLaMAModelPipe(config=config, num_tokentypes=0, parallel_output=True)" in script
    assert "            update_rotary_pos_emb(args.seq_length)" in script
    assert "pretrain(train_valid_test_datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step," in script


def test_a_qkv_bias_on_a_tree_with_its_own_bias_switch_keeps_the_switch_and_widens_one_site(sample):
    """Qwen2 on microsoft HEAD: the tree's --disable-bias-linear stays in charge of every linear
    but the QKV projection's, which takes `--add-qkv-bias` besides (KeepSiteBias); no linear gets
    porter's `--no-bias` test."""
    plan = make_plan(load_spec("qwen2"), microsoft_head(sample))
    assert plan.defaults["add_bias_linear"] is False and plan.defaults["add_qkv_bias"] is True
    assert "adds --add-qkv-bias: no qkv_bias switch found" in [e.reason for e in edits(plan, "AddArguments")]
    assert "no_bias" not in plan.defaults and not edits(plan, "LinearBias")
    (keep,) = edits(plan, "KeepSiteBias")
    assert keep.file == "megatron/model/transformer.py"
    assert keep.rewrite.keywords["cls"] == "ParallelAttention" and keep.rewrite.keywords["switch"] == "args.add_qkv_bias"
    assert set(keep.rewrite.keywords["attrs"]) == {"query_key_value", "query", "key_value"}
    assert "--disable-bias-linear with --add-qkv-bias" in keep.reason


def test_habana_option_only_rotary_gets_porters_implementation_on_the_trees_option(sample):
    profile = with_options(sample, ("--position-embedding-type", "position_embedding_type", "_add_network_size_args",
                                    "lambda x: PositionEmbeddingType[x]"))
    spellings = dict(profile.spellings)
    spellings["rotary"] = tree_spelling("rotary", "--position-embedding-type", False,
                                        imports=("from megatron.enums import PositionEmbeddingType",))
    model = dataclasses.replace(profile.model, qk_method="sub_forward",
                                core_attention=True, embedding_params=profile.model.embedding_params + ("use_position",),
                                column_returns_bias=False, pipe_keywords=("use_hpu=args.device.type=='hpu'",))
    facts = {**profile.facts,
             "rotary": dataclasses.replace(profile.facts["rotary"], position_gate="self.use_position"),
             "no_bias": dataclasses.replace(profile.facts["no_bias"], mlp_bias_unguarded=False, expand_as_unguarded=False)}
    arguments = dataclasses.replace(profile.arguments, forbids_max_positions=True)
    plan = make_plan(SPEC, dataclasses.replace(profile, spellings=spellings, model=model, arguments=arguments,
                                               facts=facts))
    assert not any("--position-embedding-type" in e.reason for e in edits(plan, "AddArguments"))
    assert edits(plan, "OptionalRequiredArg")  # required, yet forbidden with rotary
    assert edits(plan, "NarrowPositionGate") and not edits(plan, "EmbeddingPositionsInit")
    assert [e.context for e in edits(plan, "GuardPositionsState")] == [{}, {}]
    guards = [e.rewrite.keywords["test"] for e in edits(plan, "GuardPositionsState")]
    assert guards == ["self.use_position", "self.use_position"]
    apply = edits(plan, "ApplyRotaryEmbedding")[0]
    assert apply.rewrite.keywords["func"] == "sub_forward"
    imports = [e for e in edits(plan, "InsertImport") if "PositionEmbeddingType" in e.rewrite.keywords["source"]]
    assert {e.file for e in imports} == {"megatron/model/transformer.py", "megatron/model/language_model.py"}
    assert not edits(plan, "NoneSafeBiasAdd") and not edits(plan, "NoneSafeExpandAs")
    assert plan.defaults["position_embedding_type"] == "rotary"  # the member name: argparse converts it
    llama = next(e for e in plan.edits if e.template == "model.py.j2")
    assert llama.context["output_returns_bias"] is False
    files = rendered(plan)
    assert "        logits = self.output_layer(hidden_states)" in files["megatron/model/llama_model.py"]
    assert "                         use_hpu=args.device.type=='hpu',\n" in files["megatron/model/llama_model.py"]


def test_bigscience_keeps_its_glu_and_rotary(sample):
    spellings = dict(sample.spellings)
    spellings["swiglu"] = tree_spelling("swiglu", "--glu-activation", True)
    spellings["rotary"] = tree_spelling("rotary", "--position-embedding-type", True)
    profile = with_options(sample, ("--glu-activation", "glu_activation", "_add_network_size_args", "str"),
                           ("--position-embedding-type", "position_embedding_type", "_add_network_size_args",
                            "lambda x: PositionEmbeddingType[x]"))
    model = dataclasses.replace(
        profile.model, loss_fn="get_cross_entropy(is_prefix=False)", language_model_moe=False,
        enums_module="megatron.enums",
        embedding_params=("hidden_size", "vocab_size", "embedding_dropout_prob", "init_method", "num_tokentypes"),
        layernorm_imports={path: "from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm"
                           for path in profile.model.layernorm_imports})
    entry = dataclasses.replace(profile.entry, pipe_condition="args.deepspeed", device=None,
                                pipe_setup=("args.pretrain_causal_attention = True",))
    plan = make_plan(SPEC, dataclasses.replace(profile, spellings=spellings, model=model, entry=entry))
    assert plan.style == "explicit"  # RMSNorm, no-bias and untie are still missing
    rmsnorm_imports = [e for e in edits(plan, feature="rmsnorm") if e.name == "InsertImport"]
    assert {e.rewrite.keywords["source"] for e in rmsnorm_imports} == {
        "from .rmsnorm import RMSNorm", "from megatron.model.rmsnorm import RMSNorm"}
    files = rendered(plan)
    llama = files["megatron/model/llama_model.py"]
    assert "from megatron.model.rmsnorm import RMSNorm" in llama and "from megatron.enums import AttnMaskType" in llama
    assert "loss_fn=get_cross_entropy(is_prefix=False)," in llama and "moe_losses" not in llama
    assert "embedding = (EmbeddingPipe, args.hidden_size, args.padded_vocab_size,\n                     args.hidden_dropout)" in llama
    script = files["pretrain_llama.py"]
    # (under the sample tree's `with deepspeed.zero.Init(...)`, which this profile keeps)
    assert "        if args.deepspeed:\n            args.pretrain_causal_attention = True\n" in script
    assert "attn_mask" not in script and "import torch" not in script
    assert not edits(plan, feature="swiglu") and not edits(plan, feature="rotary")
    assert plan.defaults["glu_activation"] == "swiglu" and plan.defaults["bias_gelu_fusion"] is False
    assert any("base 10000" in r for r in plan.reused)
    with pytest.raises(PorterError, match="no theta switch"):
        make_plan(SPEC.with_values(**{"position_embedding.rope_theta": 500000.0}), dataclasses.replace(profile, spellings=spellings))


@pytest.mark.parametrize("theta, edits", [(10000.0, 0), (1e6, 3)])
def test_a_trees_own_rotary_gets_a_base_switch_where_the_spec_needs_another_base(sample, theta, edits):
    from porter.differences.rotary.tree_base import tree_base
    from tests.rewrites.test_rotary_base import HARD_CODED, LANGUAGE_MODEL, UTILS, parsed_from

    base = tree_base(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL, "megatron/utils.py": UTILS,
                                  "megatron/model/rotary_pos_embedding.py": HARD_CODED}))
    spellings = {**sample.spellings, "rotary": tree_spelling("rotary", "--use-rotary-position-embeddings", True)}
    facts = {**sample.facts, "rotary": dataclasses.replace(sample.facts["rotary"], base=base)}
    plan = make_plan(SPEC.with_values(**{"position_embedding.rope_theta": theta}),
                     dataclasses.replace(sample, spellings=spellings, facts=facts))
    planned = [e for e in plan.edits if e.feature == "rope_theta"]
    assert [e.name for e in planned if e.file != "megatron/arguments.py"] == \
        ["RotaryBaseParameter", "AddKeyword", "AddKeyword"][:edits]
    if edits:
        assert plan.defaults["rope_theta"] == 1e6 and any("adds --rope-theta" in e.reason for e in planned)
    else:
        assert not planned and any("base 10000, the spec's" in r for r in plan.reused)


def test_a_dest_taken_by_an_unknown_option_is_refused(sample):
    profile = with_options(sample, ("--rope-base", "rope_theta", "_add_network_size_args", "float"))
    with pytest.raises(PorterError, match="already used") as info:
        make_plan(SPEC, profile)
    assert "--rope-base" in info.value.found


def test_a_tree_that_gates_positions_otherwise_is_refused_with_what_was_found(sample):
    rotary = dataclasses.replace(sample.facts["rotary"],
                                 position_gate="self.position_embedding_type == PositionEmbeddingType.absolute")
    with pytest.raises(PorterError) as info:
        make_plan(SPEC, dataclasses.replace(sample, facts={**sample.facts, "rotary": rotary}))
    assert "position_embedding_type" in info.value.found
