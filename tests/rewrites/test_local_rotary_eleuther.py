"""Gemma-3's local rotary base on a tree whose own RotaryEmbedding is EleutherAI's (a `base=`
parameter, a cos/sin table it caches), built by each attention under the tree's own rotary test
(Habana 7086aadb's CoreAttention, BigScience 8387ae17's ParallelAttention): a local layer builds
the tree's class again with the local base, unscaled (issue 20; those trees were refused).

On text: the class that builds it is found, the rewrite's output is exact (the tree's other
arguments kept, the scaling keyword passed None where the spec scales the global layers), and
the rewritten attention, run, rotates each layer with the base HF's Gemma-3 config gives its
layer type (its `layer_types`, `rope_parameters`); broken on purpose, local layers given the
global base are named as the ones that differ."""

from __future__ import annotations

import textwrap
import types
from functools import partial
from pathlib import Path

import libcst as cst
import pytest

import porter.differences.sliding_window as sliding_window
from porter.differences.local_rotary.detect import built_in
from porter.differences.local_rotary.rewrites import LocalRotaryEmbedding
from tests.rewrites.conftest import run

WINDOW = "layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)"
COMMENT = ("        # Local layers' rotary base (Gemma-3): a layer under the sliding window rotates with its own "
           "base, unscaled.\n")

# An EleutherAI-shaped rotary class, written here from its facts (a `base` parameter, a saved
# inv_freq, a table cached for the longest sequence seen, cos and sin returned).
ROTARY = '''
class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim, base=10000, precision=torch.half):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))
        self.precision = precision
        self.longest = None

    def forward(self, x, seq_dim=1, seq_len=None):
        if self.longest is None or (seq_len > self.longest):
            self.longest = seq_len
            angles = torch.outer(torch.arange(seq_len, dtype=self.inv_freq.dtype), self.inv_freq)
            table = torch.cat((angles, angles), dim=-1)
            self.cos_table, self.sin_table = table.cos()[:, None, :], table.sin()[:, None, :]
        return self.cos_table[:seq_len], self.sin_table[:seq_len]
'''

# The attention as porter leaves it before this rewrite: the tree's rotary under its own test (the
# base switch passed), the window kept right after.
ATTENTION = '''
class CoreAttention(MegatronModule):
    def __init__(self, layer_number, attn_mask_type=AttnMaskType.padding):
        super().__init__()
        args = get_args()
        self.position_embedding_type = args.position_embedding_type
        self.hidden_size_per_attention_head = args.kv_channels
        if self.position_embedding_type == PositionEmbeddingType.rotary:
            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head,
                                              precision=args.params_dtype, base=args.rope_theta)
        self.sliding_window = layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)
        self.attention_dropout = torch.nn.Dropout(args.attention_dropout)
'''

LOCAL = ("        if self.position_embedding_type == PositionEmbeddingType.rotary and self.sliding_window and "
         "args.local_rope_theta is not None:\n"
         "            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, precision=args.params_dtype, "
         "base=args.local_rope_theta{scaling})\n")


def local_rotary(value="args.local_rope_theta", unscaled=""):
    return partial(LocalRotaryEmbedding, cls="CoreAttention", value=value, window=WINDOW, keyword="base",
                   unscaled=unscaled)


def test_the_attention_that_builds_the_trees_rotary_is_found():
    assert built_in(cst.parse_module(ATTENTION)) == "CoreAttention"
    assert built_in(cst.parse_module(ATTENTION.replace("RotaryEmbedding(", "Rotary("))) is None


def test_a_local_layer_builds_the_trees_class_again_with_the_local_base(check):
    check(local_rotary(), ATTENTION,
          ATTENTION.replace("        self.attention_dropout", COMMENT + LOCAL.format(scaling="") +
                            "        self.attention_dropout"))


def test_where_the_global_layers_are_scaled_the_local_one_is_not(check):
    scaled = ATTENTION.replace("base=args.rope_theta)", "base=args.rope_theta, scaling=rope_scaling_of(args))")
    check(local_rotary(unscaled="scaling"), scaled,
          scaled.replace("        self.attention_dropout", COMMENT + LOCAL.format(scaling=", scaling=None") +
                         "        self.attention_dropout"))


def test_a_test_of_several_terms_is_kept_whole():
    loose = ATTENTION.replace("if self.position_embedding_type == PositionEmbeddingType.rotary:",
                              "if args.rotary or args.alibi:")
    assert "if (args.rotary or args.alibi) and self.sliding_window and args.local_rope_theta is not None:" \
        in run(local_rotary()(), loose)


def _layers(text: str, config) -> list:
    """The rewritten attention, run: the cos of each layer's rotary table (layers numbered from 1)."""
    import enum

    import torch

    class PositionEmbeddingType(enum.Enum):
        rotary = 1

    window = Path(sliding_window.__file__).with_name("sliding_window.py.j2").read_text()  # plain Python
    args = types.SimpleNamespace(position_embedding_type=PositionEmbeddingType.rotary, kv_channels=config.head_dim,
                                 params_dtype=torch.float32, rope_theta=config.rope_parameters["full_attention"]
                                 ["rope_theta"], local_rope_theta=config.rope_parameters["sliding_attention"]
                                 ["rope_theta"], sliding_window=config.sliding_window,
                                 sliding_window_pattern=config.sliding_window_pattern, attention_dropout=0.0)
    scope = {"torch": torch, "MegatronModule": torch.nn.Module, "get_args": lambda: args,
             "PositionEmbeddingType": PositionEmbeddingType, "AttnMaskType": types.SimpleNamespace(padding=1)}
    exec(compile(window, "sliding_window.py", "exec"), scope)
    exec(compile(textwrap.dedent(ROTARY) + text, "attention.py", "exec"), scope)
    x = torch.zeros(1, 1, 8)
    return [scope["CoreAttention"](n).rotary_emb(x, 0, seq_len=12)[0][:, 0] for n in range(1, config.num_hidden_layers + 1)]


def _first_divergence(text: str) -> str | None:
    """The first layer whose rotary cos differs from HF's for its layer type, named; None when all match."""
    import torch
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(num_hidden_layers=4, head_dim=8, sliding_window=4, sliding_window_pattern=2,
                              rope_theta=1e6, rope_local_base_freq=10.0)
    for index, cos in enumerate(_layers(text, config)):
        kind = config.layer_types[index]
        theta = config.rope_parameters[kind]["rope_theta"]  # HF's default rope of the layer's type
        inv_freq = 1.0 / (theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.float) / config.head_dim))
        angles = torch.arange(12).float()[:, None] * inv_freq
        if not torch.allclose(cos, torch.cat((angles, angles), dim=-1).cos(), atol=1e-6):
            return f"layer {index + 1} ({kind}): rotary"
    return None


def test_each_layer_rotates_with_its_layer_types_base_as_hf_does():
    assert _first_divergence(run(local_rotary()(), ATTENTION)) is None


@pytest.mark.parametrize("broken", ["global base on local layers", "no local base"])
def test_broken_on_purpose_local_layers_with_the_global_base_are_named(broken):
    text = run(local_rotary(value="args.rope_theta")(), ATTENTION) if broken == "global base on local layers" \
        else ATTENTION
    assert _first_divergence(text) == "layer 1 (sliding_attention): rotary"


def test_an_attribute_set_to_none_before_the_trees_test_is_tested_as_such():
    """Porter's own rotary on Habana 9da6581a: `self.rotary_emb = None`, then the tree's `if <rotary on>:`."""
    own = ATTENTION.replace("        if self.position_embedding_type", "        self.rotary_emb = None\n"
                            "        if self.position_embedding_type")
    assert "if self.rotary_emb is not None and self.sliding_window and args.local_rope_theta is not None:" \
        in run(local_rotary()(), own)


@pytest.mark.parametrize("shape", ["dotted", "else-none", "several-statements", "one-line"])
def test_every_shape_the_detector_finds_the_rewrite_builds_again(shape):
    """What detect.built_in finds (the class, by its name, however the call is spelled) the rewrite
    rebuilds: a module's class (`rotary.RotaryEmbedding`), the tree's test with an `else: ... = None`,
    or with other statements beside the call, or on one line; the local one under the tree's test."""
    build = ("self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head,\n"
             "                                              precision=args.params_dtype, base=args.rope_theta)\n")
    test = "        if self.position_embedding_type == PositionEmbeddingType.rotary:"
    source = {
        "dotted": ATTENTION.replace("RotaryEmbedding(", "rotary.RotaryEmbedding("),
        "else-none": ATTENTION.replace("        self.sliding_window =", "        else:\n            self.rotary_emb = "
                                       "None\n        self.sliding_window ="),
        "several-statements": ATTENTION.replace(test + "\n", test + "\n            self.rotary = True\n"),
        "one-line": ATTENTION.replace(test + "\n            " + build,
                                      test + " self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, "
                                      "precision=args.params_dtype, base=args.rope_theta)\n"),
    }[shape]
    assert source != ATTENTION and built_in(cst.parse_module(source)) == "CoreAttention"
    out = run(local_rotary()(), source)
    assert "        if self.position_embedding_type == PositionEmbeddingType.rotary and self.sliding_window and " \
           "args.local_rope_theta is not None:\n" in out
    local = "rotary.RotaryEmbedding(" if shape == "dotted" else "RotaryEmbedding("
    assert f"            self.rotary_emb = {local}self.hidden_size_per_attention_head, precision=args.params_dtype, " \
           "base=args.local_rope_theta)\n" in out
    assert run(local_rotary()(), out) == out
