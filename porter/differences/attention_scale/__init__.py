"""Attention scores scaled by 1/sqrt(query_pre_attn_scalar) instead of 1/sqrt(head_dim) (Gemma-2/3).

Spec: `attention.query_pre_attn_scalar` (unset: the head size, GPT's and LLaMA's 1/sqrt(hn);
gemma-2-9b: 256, its head size; gemma-2-27b: 144 for heads of 128). HF's Gemma-2 and Gemma-3
multiply q k^T by query_pre_attn_scalar ** -0.5 whatever head_dim is. porter's switch:
`--query-pre-attn-scalar` (int, default None: the head size). When porter adds it, the
attention's `self.norm_factor = math.sqrt(<head size>)` takes the switch's number when it is
set (rewrites.py here); the tree's alpha (1 / norm_factor, times its layer scaling) then
carries it into the tree's unfused scores and porter's fused kernel alike.
HF: `query_pre_attn_scalar` (Gemma2Config, Gemma3TextConfig; their default 256).
"""

from __future__ import annotations

from porter.differences.attention_scale import rewrites as R
from porter.differences.base import Difference
from porter.errors import PorterError
from porter.hf_reading import class_defines
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "query_pre_attn_scalar"
FIELD = "attention.query_pre_attn_scalar"


class AttentionScale(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: number(None, whole=True, low=0,
                            help="scores are scaled by 1/sqrt(this) instead of 1/sqrt(head_dim) (Gemma-2/3)")}
    hf_fields = ("query_pre_attn_scalar",)
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--query-pre-attn-scalar", "query_pre_attn_scalar", None, "args.query_pre_attn_scalar", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'Attention scores are scaled by 1/sqrt(this number) instead of 1/sqrt(the head size) "
                          "(Gemma-2/3); unset: the head size.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def plan(self, p):
        site = p.profile.attention
        if site is None:
            raise unsupported("cannot find the core attention to scale", TRANSFORMER,
                              "a core attention porter recognises (a class building FusedScaleMaskSoftmax, "
                              "one of its methods calling it on the scores and mask)",
                              "none: porter keeps this tree's attention as it is and cannot change its scale")
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.describe_model(f"attention scores scaled by 1/sqrt({spelling.option}), not 1/sqrt(head size)")
        p.edit(TRANSFORMER, SWITCH, f"{site.cls} divides the scores by sqrt({spelling.option}) when it is set",
               rw(R.QueryPreAttnScalar, cls=site.cls, value=f"args.{spelling.dest}"))

    def from_hf(self, config):
        if config.get("query_pre_attn_scalar") is None:
            return {}
        return {FIELD: int(config["query_pre_attn_scalar"])}

    def to_hf(self, spec, config):
        scalar = spec[FIELD]
        if scalar is None:
            return
        if not class_defines(config.get("model_type"), "query_pre_attn_scalar"):
            raise PorterError(
                f"{spec.hf_class} has no attention scale of its own", file=spec.path, construct=FIELD,
                found=f"{FIELD} = {scalar} for {config.get('model_type') or 'no model type'}",
                fix="remove it from the spec, or name an HF class with query_pre_attn_scalar (Gemma2ForCausalLM)")
        config["query_pre_attn_scalar"] = scalar

    def tiny(self, spec, tiny):
        """A number other than every head size verify's tiny model may have (16, or 32 with a head
        size of its own), or the scale proves nothing."""
        if not self.wanted(spec):
            return {}
        return {FIELD: 3 * tiny.hidden_size // (2 * tiny.num_attention_heads)}
