"""A head size of its own: head_dim different from hidden_size / num_attention_heads (Gemma 7B: 256 vs 192).

Spec: `attention.head_dim` (unset: hidden / heads). Megatron trees spell it `--kv-channels`
and size attention from it (projection = kv_channels x heads; the tree's checks default it to
hidden / heads), so porter reuses the tree's switch and adds no code; a tree without the option
is refused. Query, key and value are heads x head_dim wide, the attention output projects that
back to hidden, the softmax scale is 1 / sqrt(head_dim).
HF: `head_dim`.
"""

from __future__ import annotations

import functools

from porter.differences.base import Difference
from porter.planner import unsupported
from porter.profile import ARGUMENTS, TRANSFORMER
from porter.profile.features import tree_spelling
from porter.schema import number

SWITCH = "head_dim"


class HeadDim(Difference):
    name = SWITCH
    model_switches = ('head_dim',)
    fields = {"attention.head_dim": number(None, whole=True, help="size of one attention head; unset: hidden / heads")}
    hf_fields = ("head_dim",)
    spellings = {
        SWITCH: (
            tree_spelling(SWITCH, "--kv-channels", "kv_channels", None, "args.kv_channels",
                          ((TRANSFORMER, "kv_channels"),)),
        ),
    }

    def wanted(self, spec):
        return spec["attention.head_dim"] is not None

    def plan(self, p):
        if not p.implemented(SWITCH):
            raise unsupported("the tree sizes attention heads as hidden / heads only", ARGUMENTS,
                              "a --kv-channels option that ParallelAttention sizes its heads with",
                              "no --kv-channels used by megatron/model/transformer.py")
        p.switch(SWITCH, on=p.spec["attention.head_dim"], field="attention.head_dim")

    def from_hf(self, config):
        head_dim, hidden, heads = config.get("head_dim"), config.get("hidden_size"), config.get("num_attention_heads")
        if not config.carries("head_dim") or not hidden or not heads:
            return {}
        if head_dim is None:  # the class's modeling code takes hidden / heads (Mixtral's head_dim: null)
            return {"attention.head_dim": None}
        # hidden / heads is said outright (None), not left to the family (Gemma's spec has 256)
        return {"attention.head_dim": None if head_dim == hidden // heads else int(head_dim)}

    def to_hf(self, spec, config):
        if self.wanted(spec):
            config["head_dim"] = spec["attention.head_dim"]
            return
        hidden, heads = spec["sizes.hidden_size"], spec["sizes.num_attention_heads"]
        if hidden and heads and own_default(config.get("model_type")):
            config["head_dim"] = hidden // heads  # said outright: the class's own default would win (Qwen3: 128)

    def unset(self, spec, field):
        # hidden / heads said outright: the port's entry point defaults --kv-channels to the
        # bundled spec's head size (Qwen3-MoE: 128), which a model at hidden / heads does not have
        hidden, heads = spec["sizes.hidden_size"], spec["sizes.num_attention_heads"]
        return hidden // heads if hidden and heads else None

    def tiny(self, spec, tiny):
        if not self.wanted(spec):
            return {}
        return {"attention.head_dim": 2 * tiny.hidden_size // tiny.num_attention_heads}  # differs from hidden / heads


@functools.cache
def own_default(model_type: str | None) -> bool:
    """Does the transformers config class of `model_type` give head_dim a default of its own
    (Qwen3: 128, Gemma: 256) rather than hidden / heads (LLaMA, Mistral)? Then a config without
    head_dim is read with that default, and one equal to hidden / heads must say so."""
    if not model_type:
        return False
    try:
        from transformers import CONFIG_MAPPING

        config = CONFIG_MAPPING[model_type](hidden_size=96, num_attention_heads=4)
    except (ImportError, KeyError, TypeError, ValueError):
        return False
    head_dim = getattr(config, "head_dim", None)
    return head_dim is not None and head_dim != 96 // 4
