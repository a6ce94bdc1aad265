"""The differences from GPT porter can port, one module each, in the order the plan takes them.

A family spec (model_diffs/*.toml) turns some of them on; `porter.plan.make_plan` loops over
the ones it wants. Each module owns its spec fields, its switch spellings, its edits, its HF
config fields and its weight layout (porter/features/base.py).
"""

from __future__ import annotations

from porter.features.base import Difference
from porter.features.bias import Bias
from porter.features.embedding_scale import EmbeddingScale
from porter.features.ffn_rule import FfnRule
from porter.features.final_norm import FinalNorm
from porter.features.fused_attention import FusedAttention
from porter.features.gated_mlp import GatedMLP
from porter.features.grouped_query import GroupedQueryAttention
from porter.features.head_dim import HeadDim
from porter.features.moe import MixtureOfExperts
from porter.features.norm_eps import NormEps
from porter.features.norm_offset import NormOffset
from porter.features.qkv_layout import FusedQKVLayout
from porter.features.rmsnorm import RMSNormDifference
from porter.features.rope_scaling import RopeScaling
from porter.features.rotary import Rotary
from porter.features.sizes import Sizes
from porter.features.sliding_window import SlidingWindow
from porter.features.tokenizer import Tokenizer
from porter.features.untied_head import UntiedHead

# Plan order: the order of the edits in each file, and of the entry point's defaults.
DIFFERENCES: tuple[Difference, ...] = (
    GatedMLP(),
    Rotary(),
    RopeScaling(),
    RMSNormDifference(),
    NormOffset(),
    FusedAttention(),
    FusedQKVLayout(),
    GroupedQueryAttention(),
    SlidingWindow(),
    HeadDim(),
    Bias(),
    UntiedHead(),
    EmbeddingScale(),
    FfnRule(),
    Tokenizer(),
    NormEps(),
    FinalNorm(),
    Sizes(),
    MixtureOfExperts(),
)

# Differences that change the model's shape: a tree implementing all the spec wants behind its
# own switches gets the "flags" port (porter.generated_model).
MODEL_SWITCHES = ("swiglu", "rotary", "rmsnorm", "no_bias", "untied", "num_query_groups", "head_dim",
                  "norm_offset", "embedding_scale")


def fields() -> dict:
    """Every spec field of every difference, dotted name -> schema Field."""
    out = {}
    for difference in DIFFERENCES:
        out.update(difference.fields)
    return out


def spellings() -> dict:
    """switch -> its spellings (porter's own first), over every difference."""
    out = {}
    for difference in DIFFERENCES:
        out.update(difference.spellings)
    return out


def switch_fields() -> dict[str, str]:
    """switch or difference name -> the spec field behind it (`porter explain`, `diff --stat`)."""
    out: dict[str, str] = {}
    for difference in DIFFERENCES:
        own = difference.switch_fields
        first = next(iter(difference.fields), None)
        for name in (difference.name, *difference.spellings):
            field = own.get(name, first)
            if field is not None:
                out.setdefault(name, field)
    out["model"] = "model.name"
    return out


def wanted(spec) -> list[Difference]:
    return [d for d in DIFFERENCES if d.wanted(spec)]


def profile_of(tree):
    """The tree's profile, with every difference's switch spellings looked for."""
    from porter.profile import build_profile

    return build_profile(tree, spellings())
