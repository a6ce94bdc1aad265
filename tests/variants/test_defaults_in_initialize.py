"""A tree that applies argument defaults in initialize_megatron, not in arguments.py
(OpenLLM-France a106b248; deep-spin 4e33e780 and Mast e9c879eb alike): porter's checks go into
validate_args before the arguments it requires and the widths it derives, the port is
idempotent, verifies against HF and reverts byte for byte."""

from __future__ import annotations

import json

from porter.catalog import profile_of
from porter.differences.gated_mlp import PORTER_GATED_TEST
from porter.port import prepare
from porter.source import SourceTree
from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, python_in_tree, reapply_then_revert

ARGUMENTS = "megatron/arguments.py"


def _validate_args(text: str) -> str:
    start = text.index("def validate_args(args):")
    return text[start:text.index("\ndef ", start + 1)]


def test_the_variant_is_shaped_like_the_fork(defaults_in_initialize_tree):
    """No `for key in defaults:` anywhere in arguments.py; the loop is in initialize_megatron."""
    pristine = defaults_in_initialize_tree.pristine
    assert "for key in defaults" not in (pristine / ARGUMENTS).read_text()
    assert "for key in args_defaults:" in (pristine / "megatron/initialize.py").read_text()
    profile = profile_of(SourceTree.open(pristine))
    assert profile.arguments.checks_function == "validate_args"
    assert profile.arguments.parse_function == "parse_args"


def test_porters_checks_land_before_the_derived_widths(defaults_in_initialize_tree):
    """In validate_args: after the parallel sizes, before the required-argument check and the
    `if args.ffn_hidden_size is None:` default (whose LLaMA rule porter writes there too)."""
    body = _validate_args((defaults_in_initialize_tree.root / ARGUMENTS).read_text())
    check = body.index(f"if {PORTER_GATED_TEST}:")  # the gated MLP's checks
    assert body.index("args.data_parallel_size = args.world_size // model_parallel_size") < check
    assert check < body.index("required_args = [")
    assert check < body.index("if args.ffn_hidden_size is None:") < body.index("if args.ffn_multiple_of is not None:")
    assert "parse_args" not in body  # nothing went into the parser-only function by mistake


def test_a_llama_command_line_parses_as_on_the_sample_tree(defaults_in_initialize_tree):
    """The tree's own parse_args + defaults + validate_args on LLaMA's entry point, without
    --max-position-embeddings or --ffn-hidden-size: the port's rotary check supplies the one
    (before the tree requires it), its rule the other (8/3 * 64 rounded up to 256)."""
    out = python_in_tree(defaults_in_initialize_tree.root, """
        import json, sys
        sys.argv = ['pretrain_llama.py', '--num-layers', '2', '--hidden-size', '64',
                    '--num-attention-heads', '4', '--seq-length', '32', '--micro-batch-size', '1']
        import pretrain_llama
        from megatron.arguments import parse_args, validate_args
        args = parse_args(pretrain_llama.llama_defaults)
        validate_args(args)
        print(json.dumps({k: getattr(args, k) for k in (
            'max_position_embeddings', 'ffn_hidden_size', 'activation_func_type', 'bias_gelu_fusion', 'no_bias')}))
    """)
    values = json.loads(out.strip().splitlines()[-1])
    assert values == {"max_position_embeddings": 32, "ffn_hidden_size": 256, "activation_func_type": "swiglu",
                      "bias_gelu_fusion": False, "no_bias": True}


def test_a_second_apply_plans_nothing(defaults_in_initialize_tree):
    assert prepare(LLAMA, defaults_in_initialize_tree.root).changes == []


def test_verify_passes(defaults_in_initialize_tree, tmp_path):
    """`porter verify llama` at TP=1: LLaMAModel and LLaMAModelPipe against HF."""
    passed(verify(LLAMA, defaults_in_initialize_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])


def test_reapply_then_revert_is_byte_identical(defaults_in_initialize_tree, tmp_path):
    reapply_then_revert(defaults_in_initialize_tree, tmp_path)
