"""Rotary frequency scaling for long contexts: LLaMA-3.1's "llama3", "linear", "yarn" and
Phi-3.5's "longrope".

Spec: `position_embedding.rope_scaling.type` ("none", GPT and LLaMA-1/2/3.0; "llama3";
"linear", longchat's position interpolation: every frequency divided by the factor; "yarn",
Qwen2.5's long-context setting: frequencies interpolated by dimension between beta_fast and
beta_slow rotations of the original context, and cos/sin scaled by an attention factor, given
or computed from the factor and mscale / mscale_all_dim as HF computes it; "longrope": a factor
list per frequency for short and long sequences and an attention factor, longrope.py) with its
numbers (LLaMA-3.1: factor 8, low 1, high 4, original 8192). It changes the logits at every length.
porter's switches: `--rope-scaling-type` and one option per number (yarn's and longrope's own
only where a spec asks for them); the tree's RotaryEmbedding (porter's, rotary_embedding.py)
takes `scaling=rope_scaling_of(args)`. A tree whose own rotary embedding porter reuses gets the
same switches and scalings on that class (tree_scaling.py), or is refused where its shape is unknown.
HF: `rope_scaling` (transformers 4) or `rope_parameters` (5) with its `rope_type` ("su" read as
longrope); a type porter lacks (dynamic...) is refused by name.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.head_dim import HeadDim
from porter.differences.rope_scaling import longrope, tree_scaling
from porter.edits import arguments as A
from porter.edits.calls import AddKeyword
from porter.errors import PorterError
from porter.planner import rw
from porter.profile import ARGUMENTS, TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice, flag, number

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
# yarn's own numbers (added to a tree only where a spec asks for yarn)
YARN_OPTIONS = {
    "attention_factor": ("rope_scaling_attention_factor", "--rope-scaling-attention-factor", "float", "None",
                         "Rotary scaling (yarn, longrope): the factor on cos and sin; default from the factor (and "
                         "yarn's mscale, longrope's original context)."),
    "beta_fast": ("rope_scaling_beta_fast", "--rope-scaling-beta-fast", "float", "32.0",
                  "Rotary scaling (yarn): rotations of the original context below which frequencies are kept."),
    "beta_slow": ("rope_scaling_beta_slow", "--rope-scaling-beta-slow", "float", "1.0",
                  "Rotary scaling (yarn): rotations above which frequencies are interpolated."),
    "mscale": ("rope_scaling_mscale", "--rope-scaling-mscale", "float", "None",
               "Rotary scaling (yarn): mscale of the attention factor (with mscale_all_dim)."),
    "mscale_all_dim": ("rope_scaling_mscale_all_dim", "--rope-scaling-mscale-all-dim", "float", "None",
                       "Rotary scaling (yarn): mscale_all_dim of the attention factor (with mscale)."),
    "truncate": ("rope_scaling_truncate", "--rope-scaling-truncate", "int", "1",
                 "Rotary scaling (yarn): 1 rounds the interpolation range to whole dimensions, 0 does not."),
}
TYPES = ("llama3", "linear", "yarn", longrope.TYPE)
# the numbers each type reads (HF's names are the spec's)
USES = {
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "linear": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings", *YARN_OPTIONS),
    longrope.TYPE: ("factor", "original_max_position_embeddings", "attention_factor", *longrope.OPTIONS),
}
# the options of a type beyond OPTIONS (added to a tree only where a spec asks for that type)
OWN_OPTIONS = {"yarn": YARN_OPTIONS, longrope.TYPE: {**longrope.OPTIONS, "attention_factor": YARN_OPTIONS["attention_factor"]}}


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
        PREFIX + "factor": number(1.0, help="slow-down of long wavelengths (linear: of all; longrope: context / original)"),
        PREFIX + "low_freq_factor": number(1.0, help="llama3: low-frequency bound factor"),
        PREFIX + "high_freq_factor": number(4.0, help="llama3: high-frequency bound factor"),
        PREFIX + "original_max_position_embeddings": number(8192, whole=True, help="llama3, yarn, longrope: the original context"),
        PREFIX + "attention_factor": number(None, help="yarn, longrope: the factor on cos and sin (unset: from factor, mscale)"),
        PREFIX + "beta_fast": number(None, help="yarn: fast boundary in rotations (unset: 32)"),
        PREFIX + "beta_slow": number(None, help="yarn: slow boundary in rotations (unset: 1)"),
        PREFIX + "mscale": number(None, help="yarn: mscale of the attention factor"),
        PREFIX + "mscale_all_dim": number(None, help="yarn: mscale_all_dim of the attention factor"),
        PREFIX + "truncate": flag(None, help="yarn: round the interpolation range to whole dimensions (unset: true)"),
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
                      ("help", "'Rotary frequency scaling for long contexts: none, llama3 (LLaMA-3.1), linear, yarn or longrope "
                               "(Phi-3.5).'"))),
        ),
        **{switch: (_spelling(switch, option, kind, default, text),)
           for switch, option, kind, default, text in (*OPTIONS.values(), *YARN_OPTIONS.values())},
        **{switch: (_list_spelling(switch, option, keywords, text),)
           for switch, option, keywords, text in longrope.OPTIONS.values()},
    }
    switch_fields = {"rope_scaling": PREFIX + "type",
                     **{switch: PREFIX + key for key, (switch, *_rest) in (*OPTIONS.items(), *YARN_OPTIONS.items(),
                                                                                  *longrope.OPTIONS.items())}}

    def wanted(self, spec):
        return spec[PREFIX + "type"] != "none"

    def validate(self, values, given, fail):
        if values[PREFIX + "type"] != "none" and values["position_embedding.type"] != "rotary":
            raise fail(PREFIX + "type", f"position_embedding.type = {values['position_embedding.type']!r}",
                       "remove the rope scaling, or set position_embedding.type = 'rotary'",
                       message="inconsistent spec: rope scaling applies to rotary positions only")
        if values[PREFIX + "type"] in ("linear", "yarn") and not values[PREFIX + "factor"] >= 1.0:
            raise fail(PREFIX + "factor", f"factor {values[PREFIX + 'factor']}", "a factor of 1 or more",
                       message=f"inconsistent spec: {values[PREFIX + 'type']} rope scaling slows frequencies down")
        if values[PREFIX + "type"] == "llama3" and not values[PREFIX + "low_freq_factor"] < values[PREFIX + "high_freq_factor"]:
            raise fail(PREFIX + "high_freq_factor", f"low {values[PREFIX + 'low_freq_factor']}, "
                       f"high {values[PREFIX + 'high_freq_factor']}", "make high_freq_factor larger than low_freq_factor",
                       message="inconsistent spec: llama3 rope scaling needs low_freq_factor < high_freq_factor")
        if values[PREFIX + "type"] == longrope.TYPE:
            longrope.validate(values, fail)

    def detect(self, parsed):
        return tree_scaling.tree_scaling(parsed)

    def plan(self, p):
        kind = p.spec[PREFIX + "type"]
        own = p.implemented("rotary")
        if own:
            tree_scaling.plan(p, p.facts(self.name), kind)
        spelling = p.switch("rope_scaling", on=kind, field=PREFIX + "type")
        argument = p.profile.arguments.by_option(spelling.option)
        if argument is not None and argument.choices is not None and kind not in argument.choices:
            p.edit(ARGUMENTS, "rope_scaling", f"{spelling.option} (added by porter earlier) takes {kind!r} too",
                   rw(A.ExtendChoices, func=argument.function, option=spelling.option, value=kind))
        for key, (switch, *_rest) in OPTIONS.items():
            p.switch(switch, on=p.spec[PREFIX + key], field=PREFIX + key)
        if kind in OWN_OPTIONS:
            for key, (switch, *_rest) in OWN_OPTIONS[kind].items():
                value = p.spec[PREFIX + key]
                p.switch(switch, on=int(value) if isinstance(value, bool) else value, field=PREFIX + key)
        if own:
            return
        p.import_into(TRANSFORMER, "rope_scaling", "from megatron.model.rotary_embedding import rope_scaling_of",
                      "imports the rotary scaling switches' reader")
        p.edit(TRANSFORMER, "rope_scaling", "the rotary embedding scales its frequencies as the switches say",
               rw(AddKeyword, cls="ParallelAttention", func="__init__", callee="RotaryEmbedding",
                  keyword="scaling", value="rope_scaling_of(args)"))

    def from_hf(self, config):
        params = config.rope_parameters()
        kind = longrope.kind_of(params, config.model_type)
        if kind == "default":  # said outright: the family's own scaling does not carry over
            return {PREFIX + "type": "none"}
        if kind not in TYPES:
            raise PorterError(
                f"porter cannot port rope scaling of type {kind!r}", file=config.path,
                construct="rope_scaling.rope_type (or rope_parameters.rope_type): 'default', " + ", ".join(map(repr, TYPES)),
                found=f"rope_type = {kind!r}: {params}",
                fix="porter ports llama3, linear, yarn and longrope scaling; port this model by hand, or report the type",
            )
        if kind == longrope.TYPE:
            return longrope.from_hf(config, params)
        out = {PREFIX + "type": kind}
        if kind == "yarn" and params.get("factor") is None and params.get("original_max_position_embeddings"):
            params["factor"] = config["max_position_embeddings"] / params["original_max_position_embeddings"]
        for key in USES[kind]:
            if key in YARN_OPTIONS:
                if params.get(key) is not None:
                    out[PREFIX + key] = bool(params[key]) if key == "truncate" else float(params[key])
                continue
            if params.get(key) is None:
                raise PorterError(f"{kind} rope scaling without {key}", file=config.path,
                                  construct=f"rope_scaling.{key}", found=str(params), fix="fix the config")
            out[PREFIX + key] = params[key]
        return out

    def tiny(self, spec, tiny):
        """An original context shorter than verify's sequence: the scaled band falls inside it;
        longrope: its factor lists at the tiny head size."""
        if not self.wanted(spec):
            return {}
        if spec[PREFIX + "type"] == longrope.TYPE:
            head_dim = HeadDim().tiny(spec, tiny).get("attention.head_dim") or tiny.hidden_size // tiny.num_attention_heads
            return longrope.tiny(spec, head_dim)
        if "original_max_position_embeddings" not in USES[spec[PREFIX + "type"]]:
            return {}
        return {PREFIX + "original_max_position_embeddings": min(spec[PREFIX + "original_max_position_embeddings"],
                                                                 tiny.seq_length // 2)}

    def to_hf(self, spec, config):
        if self.wanted(spec):
            kind = spec[PREFIX + "type"]
            params = config.setdefault("rope_parameters", {})
            params["rope_type"] = kind
            if kind == longrope.TYPE:
                longrope.to_hf(spec, config, params)
                return
            for key in USES[kind]:
                if spec[PREFIX + key] is not None:
                    params[key] = spec[PREFIX + key]
