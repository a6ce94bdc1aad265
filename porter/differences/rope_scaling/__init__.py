"""Rotary frequency scaling for long contexts: LLaMA-3.1's "llama3" type and Phi-3.5's "longrope".

Spec: `position_embedding.rope_scaling.type` ("none", GPT and LLaMA-1/2/3.0; "llama3";
"longrope") with its numbers: llama3's `factor`, `low_freq_factor`, `high_freq_factor` and
`original_max_position_embeddings` (LLaMA-3.1: 8, 1, 4, 8192); longrope's factor lists, the
original context that chooses between them and the attention factor (longrope.py). It changes
the logits at every length: long wavelengths are slowed down by the factor. porter's switches:
`--rope-scaling-type` and one option per number (longrope's own only where a spec asks for
longrope); the tree's RotaryEmbedding (porter's, rotary_embedding.py) takes
`scaling=rope_scaling_of(args)`. A tree whose own rotary embedding porter reuses has no
scaling: refused, by field.
HF: `rope_scaling` (transformers 4) or `rope_parameters` (5) with `rope_type` "llama3" or
"longrope" ("su"); any other rope type is refused by name.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.head_dim import HeadDim
from porter.differences.rope_scaling import longrope
from porter.edits.calls import AddKeyword
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice, number

PREFIX = "position_embedding.rope_scaling."
# spec field -> (switch, option, type, default, help)
OPTIONS = {
    "factor": ("rope_scaling_factor", "--rope-scaling-factor", "float", "8.0",
               "Rotary scaling: how much slower the long wavelengths turn (LLaMA-3.1: 8)."),
    "low_freq_factor": ("rope_scaling_low_freq_factor", "--rope-scaling-low-freq-factor", "float", "1.0",
                        "Rotary scaling: wavelengths beyond original context / this are scaled (LLaMA-3.1: 1)."),
    "high_freq_factor": ("rope_scaling_high_freq_factor", "--rope-scaling-high-freq-factor", "float", "4.0",
                         "Rotary scaling: wavelengths below original context / this are kept (LLaMA-3.1: 4)."),
    "original_max_position_embeddings": ("rope_scaling_original_max_positions", "--rope-scaling-original-max-positions",
                                         "int", "8192", "Rotary scaling: the context the model was first trained on."),
}
HF_NAMES = {"factor": "factor", "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
            "original_max_position_embeddings": "original_max_position_embeddings"}
TYPES = ("llama3", longrope.TYPE)


def _spelling(switch: str, option: str, kind: str, default: str, text: str) -> Spelling:
    return Spelling(switch, option, switch, None, f"args.{switch}", NETWORK,
                    (("type", kind), ("default", default), ("help", repr(text))))


def _list_spelling(switch: str, option: str, keywords: tuple, text: str) -> Spelling:
    return Spelling(switch, option, switch, None, f"args.{switch}", NETWORK,
                    (*keywords, ("default", "None"), ("help", repr(text))))


class RopeScaling(Difference):
    name = "rope_scaling"
    fields = {
        PREFIX + "type": choice("none", "none", *TYPES, help="rotary frequency scaling"),
        PREFIX + "factor": number(1.0, help="llama3: slow-down of long wavelengths; longrope: context / original"),
        PREFIX + "low_freq_factor": number(1.0, help="llama3: low-frequency bound factor"),
        PREFIX + "high_freq_factor": number(4.0, help="llama3: high-frequency bound factor"),
        PREFIX + "original_max_position_embeddings": number(8192, whole=True,
                                                            help="llama3, longrope: the original context"),
        PREFIX + "attention_factor": number(None, help="longrope: the factor on cos and sin (unset: from factor)"),
        **longrope.FIELDS,
    }
    # the factor lists are numbers the port's switches take, as a value of any length
    switchable = (PREFIX + "type", PREFIX + "short_factor", PREFIX + "long_factor")
    hf_fields = ("rope_scaling", "original_max_position_embeddings")
    spellings = {
        "rope_scaling": (
            Spelling("rope_scaling", "--rope-scaling-type", "rope_scaling_type", "llama3",
                     "args.rope_scaling_type != 'none'", NETWORK,
                     (("type", "str"), ("default", "'none'"), ("choices", repr(["none", *TYPES])),
                      ("help", "'Rotary frequency scaling for long contexts: none, llama3 (LLaMA-3.1) or longrope "
                               "(Phi-3.5).'"))),
        ),
        **{switch: (_spelling(switch, option, kind, default, text),)
           for switch, option, kind, default, text in OPTIONS.values()},
        **{switch: (_list_spelling(switch, option, keywords, text),)
           for switch, option, keywords, text in longrope.OPTIONS.values()},
    }
    switch_fields = {"rope_scaling": PREFIX + "type",
                     **{switch: PREFIX + key for key, (switch, *_rest) in (*OPTIONS.items(), *longrope.OPTIONS.items())}}

    def wanted(self, spec):
        return spec[PREFIX + "type"] != "none"

    def validate(self, values, given, fail):
        if values[PREFIX + "type"] != "none" and values["position_embedding.type"] != "rotary":
            raise fail(PREFIX + "type", f"position_embedding.type = {values['position_embedding.type']!r}",
                       "remove the rope scaling, or set position_embedding.type = 'rotary'",
                       message="inconsistent spec: rope scaling applies to rotary positions only")
        if values[PREFIX + "type"] == "llama3" and not values[PREFIX + "low_freq_factor"] < values[PREFIX + "high_freq_factor"]:
            raise fail(PREFIX + "high_freq_factor", f"low {values[PREFIX + 'low_freq_factor']}, "
                       f"high {values[PREFIX + 'high_freq_factor']}", "make high_freq_factor larger than low_freq_factor",
                       message="inconsistent spec: llama3 rope scaling needs low_freq_factor < high_freq_factor")
        if values[PREFIX + "type"] == longrope.TYPE:
            longrope.validate(values, fail)

    def plan(self, p):
        if p.implemented("rotary"):
            raise unsupported("the tree's own rotary embedding has no frequency scaling", TRANSFORMER,
                              "porter's RotaryEmbedding (rope_scaling_of), or the tree's with a scaling option",
                              f"the tree's rotary embedding ({p.switches['rotary'].option}); spec "
                              f"{PREFIX}type = {p.spec[PREFIX + 'type']!r}")
        kind = p.spec[PREFIX + "type"]
        p.switch("rope_scaling", on=kind, field=PREFIX + "type")
        for key, (switch, *_rest) in OPTIONS.items():
            p.switch(switch, on=p.spec[PREFIX + key], field=PREFIX + key)
        if kind == longrope.TYPE:
            for key, (switch, *_rest) in longrope.OPTIONS.items():
                p.switch(switch, on=p.spec[PREFIX + key], field=PREFIX + key)
        p.import_into(TRANSFORMER, "rope_scaling", "from megatron.model.rotary_embedding import rope_scaling_of",
                      "imports the rotary scaling switches' reader")
        p.edit(TRANSFORMER, "rope_scaling", "the rotary embedding scales its frequencies as the switches say",
               rw(AddKeyword, cls="ParallelAttention", func="__init__", callee="RotaryEmbedding",
                  keyword="scaling", value="rope_scaling_of(args)"))

    def from_hf(self, config):
        params = config.rope_parameters()
        kind = longrope.kind_of(params, config.get("model_type"))
        if kind == "default":
            return {}
        if kind not in TYPES:
            raise PorterError(
                f"porter cannot port rope scaling of type {kind!r}", file=config.path,
                construct="rope_scaling.rope_type (or rope_parameters.rope_type): 'default', " +
                          ", ".join(repr(t) for t in TYPES),
                found=f"rope_type = {kind!r}: {params}",
                fix="porter ports LLaMA-3.1's llama3 and Phi-3.5's longrope scaling; port this model by hand, "
                    "or report the type",
            )
        if kind == longrope.TYPE:
            return longrope.from_hf(config, params)
        out = {PREFIX + "type": "llama3"}
        for key, hf in HF_NAMES.items():
            if hf not in params:
                raise PorterError(f"llama3 rope scaling without {hf}", file=config.path,
                                  construct=f"rope_scaling.{hf}", found=str(params), fix="fix the config")
            out[PREFIX + key] = params[hf]
        return out

    def tiny(self, spec, tiny):
        """llama3: an original context shorter than verify's sequence, the scaled band falls inside
        it; longrope: its factor lists at the tiny head size."""
        if not self.wanted(spec):
            return {}
        if spec[PREFIX + "type"] == longrope.TYPE:
            head_dim = HeadDim().tiny(spec, tiny).get("attention.head_dim") or tiny.hidden_size // tiny.num_attention_heads
            return longrope.tiny(spec, head_dim)
        return {PREFIX + "original_max_position_embeddings": min(spec[PREFIX + "original_max_position_embeddings"],
                                                                 tiny.seq_length // 2)}

    def to_hf(self, spec, config):
        if self.wanted(spec):
            params = config.setdefault("rope_parameters", {})
            params["rope_type"] = spec[PREFIX + "type"]
            if spec[PREFIX + "type"] == longrope.TYPE:
                longrope.to_hf(spec, config, params)
                return
            for key, hf in HF_NAMES.items():
                params[hf] = spec[PREFIX + key]
