"""A rotary base of their own for the layers under the sliding window (Gemma-3).

Spec: `position_embedding.local_rope_theta` (unset: every layer rotates with
`position_embedding.rope_theta`; Gemma-3: 10000 on its local layers, while the global ones use
rope_theta 1e6 and, on 4B and larger, its rope scaling). The local layers are those the
sliding window is on (`attention.sliding_window`, `attention.sliding_window_pattern`): this
difference needs a window. porter's switch: `--local-rope-theta` (float, default None). When
porter adds it (rewrites.py here): a layer whose window is set (`self.sliding_window`, which the
sliding window gives each layer) replaces its rotary embedding by one of the local base,
unscaled, as HF builds its sliding_attention rotary. A tree whose own rotary embedding porter
reuses and each attention builds (EleutherAI's class, with a `base=` parameter and a cached cos/sin
table: Habana 7086aadb's CoreAttention, BigScience 8387ae17's ParallelAttention) gets the same from
the tree's class: a local layer builds it again, the tree's call with the local base and no scaling,
under the tree's own rotary test (rewrites.py); its saved frequencies are converted per layer
(weights.py). One built once and its angles handed to every layer's attention (microsoft HEAD) gets the
same by the tree's own class (handed.py here): a local layer's attention builds one with the
local base and swaps the angles it is handed for its own of the same length; the tree's cache of
cos and sin, where it keys on the length alone, is renewed when the angles change.
HF: `rope_local_base_freq` (transformers 4's Gemma3TextConfig; 10000 when left out), or
`rope_parameters.sliding_attention.rope_theta` beside `rope_parameters.full_attention`
(transformers 5), read as the installed class reads them (rope_fields.py here).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.local_rotary import handed as H
from porter.differences.local_rotary import rewrites as R
from porter.differences.local_rotary import rope_fields
from porter.differences.local_rotary.detect import detect
from porter.differences.local_rotary.weights import local_frequencies
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "local_rope_theta"
FIELD = "position_embedding.local_rope_theta"
SCALING = "position_embedding.rope_scaling.type"  # the global layers' scaling ('none': unscaled)
SCALING_KEYWORD = "scaling"  # the rotary embedding's scaling parameter (porter's, and the one porter gives the tree's)


def _base_keyword(p) -> str:
    """The tree's RotaryEmbedding's base parameter (EleutherAI's `base`), else porter's `theta`."""
    base = getattr(p.facts("rotary"), "base", None)
    return base.keyword if base is not None and base.problem is None else "theta"


class LocalRotary(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: number(None, help="rotary base of the layers under the sliding window (Gemma-3: 10000); "
                                       "unset: rope_theta on every layer")}
    hf_fields = ("rope_local_base_freq",)
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--local-rope-theta", "local_rope_theta", None, "args.local_rope_theta", NETWORK,
                (("type", "float"), ("default", "None"),
                 ("help", "'Rotary base of the layers under the sliding window, unscaled (Gemma-3: 10000); "
                          "unset: --rope-theta on every layer.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def validate(self, values, given, fail):
        if values[FIELD] is None:
            return
        if values["position_embedding.type"] != "rotary" or not values["attention.sliding_window"]:
            raise fail(FIELD, f"{FIELD} = {values[FIELD]:g} with position_embedding.type = "
                       f"{values['position_embedding.type']!r}, attention.sliding_window = "
                       f"{values['attention.sliding_window']!r}",
                       "set rotary positions and a sliding window (its layers are the local ones), or remove it",
                       message="inconsistent spec: a local rotary base needs rotary positions and local layers")

    def detect(self, parsed):
        return detect(parsed)

    def plan(self, p):
        facts = p.facts(self.name)
        own = p.implemented("rotary")
        handed = facts.handed if facts is not None else None
        built_in = facts.built_in if facts is not None else None
        if own and (p.implemented("sliding_window") or (handed is None and built_in is None)):
            raise unsupported("the tree's own rotary embedding has one base for every layer", TRANSFORMER,
                              "porter's RotaryEmbedding, built by each attention, or the tree's RotaryEmbedding "
                              "(built by each attention, or imported by its language model and handed to every "
                              "layer) with porter's windowed attention",
                              f"the tree's rotary embedding ({p.switches['rotary'].option}), built nowhere porter "
                              f"knows" + (", with the tree's own sliding window" if p.implemented("sliding_window")
                                          else "") + f"; spec {FIELD} = {p.spec[FIELD]:g}")
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.describe_model(f"the layers under the sliding window rotate with a base of their own, unscaled "
                         f"({spelling.option})")
        if own and built_in is None:
            self._handed(p, spelling, handed)
            return
        window, pattern = p.switches["sliding_window"], p.switches["sliding_window_pattern"]
        keyword = _base_keyword(p) if own else "theta"
        scaled = p.spec[SCALING] != "none"
        p.edit(TRANSFORMER, SWITCH, "a layer under the sliding window rotates with the local base, unscaled" +
               (f" (the tree's RotaryEmbedding, built again by {built_in} with `{keyword}=`)" if own else ""),
               rw(R.LocalRotaryEmbedding, cls=built_in if own else "ParallelAttention", value=f"args.{spelling.dest}",
                  window=f"layer_window(args.{window.dest}, args.{pattern.dest}, layer_number)", keyword=keyword,
                  unscaled=SCALING_KEYWORD if scaled else ""))

    def _handed(self, p, spelling, facts):
        """The tree's rotary embedding, built once and handed to every layer: a second one, of the
        local base, in each local layer's attention (handed.py)."""
        window, pattern = p.switches["sliding_window"], p.switches["sliding_window_pattern"]
        keyword = _base_keyword(p)
        p.import_into(TRANSFORMER, SWITCH, f"from {facts.module} import RotaryEmbedding",
                      "imports the tree's rotary embedding for the local layers' own")
        p.edit(TRANSFORMER, SWITCH, f"a layer under the sliding window builds the tree's RotaryEmbedding with the "
               f"local base ({spelling.option}), unscaled",
               rw(H.LocalRotaryBuilt, cls="ParallelAttention", value=f"args.{spelling.dest}",
                  window=f"layer_window(args.{window.dest}, args.{pattern.dest}, layer_number)", keyword=keyword,
                  unscaled=SCALING_KEYWORD if p.spec[SCALING] != "none" else ""))
        p.edit(TRANSFORMER, SWITCH, "a layer under the sliding window swaps the global rotary angles it is handed "
               "for its own, of the same length", rw(H.LocalRotaryHanded, cls="ParallelAttention"))
        if facts.cached:
            p.edit(facts.file, SWITCH, f"{facts.apply} renews its cos/sin cache when the angles change, not only "
                   "their length: local and global layers hand it different angles of one length",
                   rw(H.RotaryCacheKeyedOnAngles, func=facts.apply))

    def weights(self, layer):
        local_frequencies(layer)

    def from_hf(self, config):
        local = rope_fields.local_theta(config)
        return {} if local is None else {FIELD: float(local)}

    def to_hf(self, spec, config):
        local = spec[FIELD]
        if local is None:
            return
        if not rope_fields.per_layer_type(config.get("model_type")):
            raise PorterError(
                f"{spec.hf_class} has one rotary base for every layer", file=spec.path, construct=FIELD,
                found=f"{FIELD} = {local:g} for {config.get('model_type') or 'no model type'}",
                fix="remove it from the spec, or name an HF class with a local rotary base (Gemma3ForCausalLM)")
        rope_fields.nest(config, local)
