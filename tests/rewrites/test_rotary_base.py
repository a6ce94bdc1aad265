"""The base switch porter gives a tree's own rotary embedding (rotary/tree_base.py): the detector
on both known shapes (a hard-coded number, a `base=` parameter), the rewrite of the hard-coded
one, the copy the generated entry point makes, and the refusals. The snippets are ours,
written in each shape."""

import libcst as cst

from porter.checks import scope_violations
from porter.differences.rotary.base_rewrites import RotaryBaseParameter, pass_base
from porter.differences.rotary.tree_base import Site, tree_base
from porter.edits.calls import AddKeyword
from tests.rewrites.conftest import run

HARD_CODED = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer('inv_freq', inv_freq)

    def forward(self, n):
        return torch.outer(torch.arange(n).float(), self.inv_freq)
'''

LANGUAGE_MODEL = '''
from .rotary_pos_embedding import RotaryEmbedding


class TransformerLanguageModel:
    def __init__(self, config):
        args = get_args()
        if args.use_rotary_position_embeddings:
            self.rotary_pos_emb = RotaryEmbedding(config.kv_channels)
'''

UTILS = '''
from megatron.model.rotary_pos_embedding import RotaryEmbedding


def update_rotary_pos_emb(n):
    args = get_args()
    args.rotary_pos_emb = RotaryEmbedding(args.kv_channels)(n)
'''

# EleutherAI's shape: the base a parameter, the class built by each attention
WITH_BASE = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim, base=10000, precision=torch.half):
        super().__init__()
        self.register_buffer('inv_freq', 1. / (base ** (torch.arange(0, dim, 2).float() / dim)))
'''

TRANSFORMER = '''
from .positional_embeddings import RotaryEmbedding


class ParallelAttention:
    def __init__(self, layer_number):
        args = get_args()
        if args.rotary:
            self.rotary_emb = RotaryEmbedding(self.head_size, precision=args.params_dtype)
'''


def parsed_from(files):
    modules = {path: cst.parse_module(text) for path, text in files.items()}
    return modules.get


def test_a_hard_coded_base_and_every_builder_are_found():
    base = tree_base(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL, "megatron/utils.py": UTILS,
                                  "megatron/model/rotary_pos_embedding.py": HARD_CODED}))
    assert (base.file, base.keyword, base.literal, base.default, base.problem) == \
        ("megatron/model/rotary_pos_embedding.py", "theta", "10000", "10000", None)
    assert base.sites == (Site("megatron/model/language_model.py", "TransformerLanguageModel", "__init__"),
                          Site("megatron/utils.py", None, "update_rotary_pos_emb"))


def test_a_base_parameter_is_reused_and_attention_builds_the_class():
    base = tree_base(parsed_from({"megatron/model/language_model.py": "", "megatron/model/transformer.py": TRANSFORMER,
                                  "megatron/model/positional_embeddings.py": WITH_BASE}))
    assert (base.keyword, base.literal, base.default, base.problem) == ("base", None, "10000", None)
    assert base.sites == (Site("megatron/model/transformer.py", "ParallelAttention", "__init__"),)


def test_shapes_porter_does_not_know_are_named():
    two = HARD_CODED.replace("inv_freq = 1.0 / (10000", "inv_freq = 2 ** 3 / (10000")
    base = tree_base(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL,
                                  "megatron/model/rotary_pos_embedding.py": two}))
    assert "2 number literal(s)" in base.problem
    positional = LANGUAGE_MODEL.replace("RotaryEmbedding(config.kv_channels)", "RotaryEmbedding(config.kv_channels, 500)")
    base = tree_base(parsed_from({"megatron/model/language_model.py": positional,
                                  "megatron/model/rotary_pos_embedding.py": HARD_CODED}))
    assert "RotaryEmbedding(config.kv_channels, 500) passes more than the head size by position" in base.problem


def test_the_hard_coded_base_becomes_a_theta_parameter(check):
    check(lambda: RotaryBaseParameter(cls="RotaryEmbedding"), HARD_CODED,
          HARD_CODED.replace("def __init__(self, dim):", "def __init__(self, dim, theta=10000):")
                    .replace("(10000 **", "(theta **"))
    before = cst.parse_module(HARD_CODED)
    after = RotaryBaseParameter(cls="RotaryEmbedding").apply(before, "r.py")
    assert scope_violations(before, after, ("parameters", "RotaryEmbedding", "__init__")) == []
    assert scope_violations(before, after, ("function", "RotaryEmbedding", "__init__"))  # a signature changed


def test_a_class_with_the_base_raised_twice_is_refused(refuses):
    twice = HARD_CODED.replace("self.register_buffer('inv_freq', inv_freq)",
                               "self.scale = 10000 ** 0.5\n        self.register_buffer('inv_freq', inv_freq)")
    error = refuses(lambda: RotaryBaseParameter(cls="RotaryEmbedding"), twice)
    assert "2 `10000 ** ...` in the body" in error.found


def test_builders_pass_the_option_by_the_class_keyword(check):
    check(lambda: AddKeyword(cls=None, func="update_rotary_pos_emb", callee="RotaryEmbedding", keyword="theta",
                             value="args.rope_theta"), UTILS,
          UTILS.replace("RotaryEmbedding(args.kv_channels)", "RotaryEmbedding(args.kv_channels, theta=args.rope_theta)"))
    assert "RotaryEmbedding(self.head_size, precision=args.params_dtype, base=args.rope_theta)" in run(
        AddKeyword(cls="ParallelAttention", func="__init__", callee="RotaryEmbedding", keyword="base",
                   value="args.rope_theta"), TRANSFORMER)


def test_the_entry_points_copy_of_the_pipe_table_passes_the_base_too():
    copied = "n = args.kv_channels\nargs.rotary_pos_emb = RotaryEmbedding(n)(args.seq_length).to(device)\n"
    assert pass_base(copied, "RotaryEmbedding", "theta", "args.rope_theta") == \
        "n = args.kv_channels\nargs.rotary_pos_emb = RotaryEmbedding(n, theta=args.rope_theta)(args.seq_length).to(device)\n"
    done = pass_base(copied, "RotaryEmbedding", "theta", "args.rope_theta")
    assert pass_base(done, "RotaryEmbedding", "theta", "args.rope_theta") == done
