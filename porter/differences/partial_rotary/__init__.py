"""Partial rotary: only the first part of each head's channels rotated, the rest passed on
unchanged (Phi-4-mini: 0.75 of 128, so 96 channels rotate and 32 do not).

Spec: `position_embedding.rotary_percent` (1.0: every channel rotates, as GPT-NeoX's rotary_pct
and Megatron's --rotary-percent say it). The rotary dimension is int(head_dim x percent), as
transformers sizes it: the rotary embedding's frequencies (and longrope's factor lists, one per
frequency) count rotary_dim / 2, and attention rotates channels [0, rotary_dim) of query and key
in the rotate_half layout within them (channel i paired with i + rotary_dim / 2), channels
[rotary_dim, head_dim) passing on.
porter's switch: `--rotary-percent` (float, default 1.0), the option Megatron trees spell so. A
tree whose own rotary embedding porter reuses must have it (microsoft's language model sizes its
RotaryEmbedding by it and its apply_rotary_pos_emb passes the channels past the angles' width
on): its switch is set; a tree whose own rotary has no such option is refused. Where porter adds
the rotary embedding, it builds it with `rotary_percent=args.rotary_percent` and its apply
function rotates the first channels (rotary_embedding.py.j2 of the rotary package, when this
difference is planned).
HF: `partial_rotary_factor`, top-level or inside `rope_parameters` (transformers: the latter
wins), for a class whose modeling code passes the unrotated channels on (hf_classes.py here).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.partial_rotary.detect import detect
from porter.differences.partial_rotary.hf_classes import TYPES, rotates_part
from porter.differences.partial_rotary.sizes import FIELD, SWITCH, head_dim_of, rotary_dim
from porter.edits.calls import AddKeyword
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import LANGUAGE_MODEL, TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import number

__all__ = ["FIELD", "PartialRotary", "rotary_dim"]


class PartialRotary(Difference):
    name = "partial_rotary"
    model_switches = (SWITCH,)
    fields = {FIELD: number(1.0, help="the fraction of each head's channels rotary rotates (the first ones)")}
    hf_fields = ("partial_rotary_factor",)
    switch_fields = {SWITCH: FIELD}
    spellings = {
        SWITCH: (
            Spelling(SWITCH, "--rotary-percent", SWITCH, None, "args.rotary_percent < 1.0", NETWORK,
                     (("type", "float"), ("default", "1.0"),
                      ("help", "'Rotary: the fraction of the channels of each head rotated (the first ones); the "
                               "rest pass on unrotated.'"))),
            # Megatron trees (microsoft's language model sizes its RotaryEmbedding by it)
            tree_spelling(SWITCH, "--rotary-percent", SWITCH, None, "args.rotary_percent < 1.0",
                          ((LANGUAGE_MODEL, SWITCH), (TRANSFORMER, SWITCH))),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] < 1.0

    def validate(self, values, given, fail):
        percent = values[FIELD]
        if percent > 1.0:
            raise fail(FIELD, f"{FIELD} = {percent:g}", "a fraction of the head: more than 0, at most 1",
                       message="inconsistent spec: a head has no channels beyond its own to rotate")
        if percent == 1.0:
            return
        if values["position_embedding.type"] != "rotary":
            raise fail(FIELD, f"{FIELD} = {percent:g} with position_embedding.type = "
                       f"{values['position_embedding.type']!r}", "remove it, or set position_embedding.type = 'rotary'",
                       message="inconsistent spec: a rotary percent applies to rotary positions only")
        head_dim = head_dim_of(values)
        if head_dim is None:
            return
        dim = rotary_dim(head_dim, percent)
        if dim < 2 or dim % 2:
            raise fail(FIELD, f"{percent:g} of a head of {head_dim}: {dim} channels",
                       "a fraction giving an even number of channels, at least 2 (rotate_half pairs them in halves)",
                       message="inconsistent spec: the rotary dimension int(head_dim x rotary_percent) must be even")

    def plan(self, p):
        percent = p.spec[FIELD]
        p.describe_model(f"partial rotary: the first {percent:g} of each head's channels rotate, the rest pass on")
        if p.implemented("rotary"):
            if not p.implemented(SWITCH):
                rotary = p.switches["rotary"]
                raise unsupported("the tree's own rotary embedding rotates whole heads", LANGUAGE_MODEL,
                                  "a --rotary-percent option that sizes the tree's RotaryEmbedding (and an "
                                  "apply_rotary_pos_emb passing the channels past it on)",
                                  f"the tree's rotary ({rotary.option}) without --rotary-percent; spec {FIELD} = "
                                  f"{percent:g}")
            p.switch(SWITCH, on=percent, field=FIELD)
            return
        spelling = p.switch(SWITCH, on=percent, field=FIELD)
        p.values[self.name] = {"percent": f"args.{spelling.dest}"}  # the template rotates part of each head
        p.edit(TRANSFORMER, SWITCH, f"the rotary embedding rotates the first {spelling.option} of each head's "
               "channels and passes the rest on",
               rw(AddKeyword, cls="ParallelAttention", func="__init__", callee="RotaryEmbedding",
                  keyword="rotary_percent", value=f"args.{spelling.dest}"))

    def detect(self, parsed):
        return detect(parsed)

    def kept(self, p):
        """A family ported earlier into this tree rotates part of each head through porter's
        rotary embedding: the file, rewritten for this spec, keeps its `rotary_percent` keyword
        and pass-through (at 1.0, the default, nothing changes for this family)."""
        if p.facts(self.name) and p.spec["position_embedding.type"] == "rotary" and not p.implemented("rotary"):
            p.values[self.name] = {"percent": None}
            p.reuse(SWITCH, "porter's rotary embedding keeps its partial rotary (--rotary-percent, default 1.0): "
                    "a family ported earlier into this tree rotates part of each head")

    def from_hf(self, config):
        from porter.hf_reading import hf_partial

        partial = hf_partial(config)
        if partial is None or float(partial) == 1.0:
            return {FIELD: 1.0}
        if not rotates_part(config.model_type):
            raise PorterError(
                f"{config.model_type or 'this model'}'s modeling code in transformers rotates whole heads",
                file=config.path, construct="partial_rotary_factor < 1 for a class that passes unrotated channels on "
                "(" + ", ".join(sorted(TYPES)) + ")",
                found=f"partial_rotary_factor = {partial!r} with model_type {config.model_type!r}",
                fix="remove partial_rotary_factor (transformers could not run this model either), or report the family")
        return {FIELD: float(partial)}

    def to_hf(self, spec, config):
        if not self.wanted(spec):
            return
        if not rotates_part(config.get("model_type")):
            raise PorterError(f"{spec.hf_class} rotates whole heads", file=spec.path, construct=FIELD,
                              found=f"{FIELD} = {spec[FIELD]:g} for {config.get('model_type') or 'no model type'}",
                              fix="remove it from the spec, or name an HF class with partial rotary "
                                  "(Phi3ForCausalLM)")
        config["partial_rotary_factor"] = spec[FIELD]
