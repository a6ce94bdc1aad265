"""Sliding-window attention (Mistral), on every layer or on all but every N-th (Gemma-2/3).

Spec: `attention.sliding_window` (GPT: unset, every earlier position; Mistral-7B v0.1: 4096;
0: no window, but the switch is there: a Mistral config.json whose window is null), and
`attention.sliding_window_pattern` (unset: every layer windowed; N: every N-th layer attends to
every earlier position, the others through the window: Gemma-2 alternates, 2, local then
global; Gemma-3 runs five local layers to one global, 6). Query i sees key j when
0 <= i - j < window, HF's semantics (tests/families check it against MistralForCausalLM itself).
porter's switches: `--sliding-window` (int, default None; 0 or unset: no window) and
`--sliding-window-pattern` (int, default None: every layer). When porter adds them: the
attention keeps its layer's window (`__init__`: `layer_window(window, pattern, layer_number)`,
the layer numbered from 1 as ParallelTransformer numbers it), and its mask gains the window
where the core attention starts, in front of both the fused kernel and the tree's unfused
softmax, or right before the tree's masked softmax where porter keeps the core unfused (ALiBi's,
a core in a helper method: Habana's, BigScience's) (rewrites.py here; the functions are
megatron/model/sliding_window.py). Kernels that cannot take the window stay off while it is
set: the tree's flash kernels its attention builds instead of the core (porter.profile.kernels:
microsoft HEAD's, Habana's Gaudi FusedSDPA), and on a windowed layer its softmax's fused causal
kernel, which never reads the mask. Plain and pipe model share the attention, so both get it.
HF: `sliding_window` (Mistral, Mixtral; null: none), and which layers it windows: Qwen2's
`use_sliding_window` with `max_window_layers`, Gemma-2/3's `layer_types` (Gemma-3's older files:
`sliding_window_pattern`), read as transformers reads them. porter windows every layer, none,
or all but every N-th, and refuses any other choice of layers by field. Where the tree's own GPT
classes carry the port and its pipe numbers its layers from 0, the pipe is numbered from 1 as the
plain transformer is (pipe_numbers.py), so the pattern falls on the same layers in both.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.sliding_window import pipe_numbers
from porter.differences.sliding_window import rewrites as W
from porter.edits.kernels import plan_off as kernels_off
from porter.errors import PorterError
from porter.hf_reading import class_defines
from porter.planner import rw, unsupported
from porter.profile import GPT_MODEL, TRANSFORMER, kernels
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "sliding_window"
FIELD = "attention.sliding_window"
PATTERN_SWITCH = "sliding_window_pattern"
PATTERN = "attention.sliding_window_pattern"
SLIDING, FULL = "sliding_attention", "full_attention"  # HF's layer types


class SlidingWindow(Difference):
    name = SWITCH
    fields = {FIELD: number(None, whole=True, low=-1,
                            help="keys a query sees, itself included (sliding-window attention); unset or 0: all"),
              PATTERN: number(None, whole=True, low=1,
                              help="every N-th layer attends to every position, the others through the window "
                                   "(Gemma-2: 2, Gemma-3: 6); unset: every layer windowed")}
    hf_fields = ("sliding_window", "use_sliding_window", "max_window_layers", "layer_types", "sliding_window_pattern")
    switchable = (FIELD, PATTERN)
    switch_fields = {PATTERN_SWITCH: PATTERN}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--sliding-window", "sliding_window", None, "args.sliding_window", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'Sliding-window attention: a query sees only the last N positions, itself "
                          "included (Mistral: 4096); 0 or unset: all.'")),
            ),
        ),
        PATTERN_SWITCH: (
            Spelling(
                PATTERN_SWITCH, "--sliding-window-pattern", "sliding_window_pattern", None,
                "args.sliding_window_pattern", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'Sliding-window attention on all layers but every N-th, which attends to every "
                          "position (Gemma-2: 2, Gemma-3: 6); unset: the window on every layer.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def detect(self, parsed):
        return kernels.detect(parsed)

    def validate(self, values, given, fail):
        if values[PATTERN] is not None and not values[FIELD]:
            raise fail(PATTERN, f"{PATTERN} = {values[PATTERN]} with {FIELD} = {values[FIELD]!r}",
                       f"set {FIELD}, or remove {PATTERN}",
                       message="inconsistent spec: the pattern says which layers the window is on")

    def plan(self, p):
        site = p.profile.attention
        if site is None:
            raise unsupported("cannot find the core attention to window", TRANSFORMER,
                              "a core attention porter recognises (a class building FusedScaleMaskSoftmax, "
                              "one of its methods calling it on the scores and mask)",
                              "none: porter keeps this tree's attention as it is and cannot window its mask")
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        pattern = p.switch(PATTERN_SWITCH, on=p.spec[PATTERN], field=PATTERN)
        if p.spec[PATTERN] is not None:
            p.describe_model(f"sliding-window attention on all layers but one in every {p.spec[PATTERN]}, which "
                             f"attends to every position ({spelling.option}, {pattern.option})")
        p.checks.append(
            f"""
            if args.{spelling.dest} is not None:
                assert args.{spelling.dest} >= 0, \\
                    'sliding-window attention: {spelling.option} is the number of positions a query sees (0: all)'
            if args.{pattern.dest} is not None:
                assert args.{pattern.dest} >= 2, \\
                    'sliding-window attention: {pattern.option} N puts every N-th layer out of the window (N >= 2)'
            """
        )
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.sliding_window import layer_window, sliding_window_mask",
                      "imports the sliding-window mask and each layer's window")
        p.edit(TRANSFORMER, SWITCH, f"{site.cls} keeps its layer's window of {spelling.option} ({pattern.option}: "
               "every N-th layer has none)",
               rw(W.SlidingWindowAttribute, cls=site.cls,
                  value=f"layer_window(args.{spelling.dest}, args.{pattern.dest}, layer_number)"))
        p.edit(TRANSFORMER, SWITCH, f"{site.cls} keeps its softmax's fused kernels off on a windowed layer (the causal "
               "one never reads the mask)", rw(W.SoftmaxFusionOff, cls=site.cls, softmax=site.softmax))
        p.edit(TRANSFORMER, SWITCH, f"{site.cls}.{site.func} masks out keys older than the window, for the fused "
               "and the unfused attention alike",
               rw(W.SlidingWindowMask, cls=site.cls, func=site.func, softmax=site.softmax))
        kernels_off(p, SWITCH, p.facts(self.name), site.cls, spelling.option, f"args.{spelling.dest}",
                    "take a plain causal mask", "windows it",
                    "Sliding-window attention: those kernels take a plain causal mask, no window; the core attention "
                    "runs while a window is set.")
        p.create("megatron/model/sliding_window.py", SWITCH, "the sliding-window mask", "sliding_window.py.j2")

    def tree_model(self, p):
        """The tree's own GPTModelPipe numbers its layers from 0 where its transformer counts from 1:
        with a pattern, the pipe's layers are numbered from 1 too (pipe_numbers.py)."""
        if p.spec[PATTERN] is None:
            return
        p.edit(GPT_MODEL, PATTERN_SWITCH, "repair: GPTModelPipe numbers its layers from 1, as the plain transformer "
               "does (it handed them the loop index from 0: the window pattern would fall on the neighbouring layers)",
               rw(pipe_numbers.PipeLayersNumberedFromOne, cls="GPTModelPipe"))

    def unset(self, spec, field):
        if field != PATTERN:
            return super().unset(spec, field)  # the window off: 0
        # every layer windowed, said outright where the port's entry point has a pattern (Gemma-3's
        # 6): the tree's check takes N >= 2 and no layer of the model is an N-th one past its count
        # (gemma-3-1b-pt's 26 layers at verify's 2: both windowed)
        layers = spec["sizes.num_layers"]
        return layers + 1 if layers else None

    def from_hf(self, config):
        """The window as the class reads it (Qwen2's is dropped unless use_sliding_window), on the
        layers `layer_types` says (Qwen2's from max_window_layers, Gemma-2's alternating, Gemma-3's
        sliding_window_pattern: the class makes them); porter windows all layers, none, or all but
        every N-th."""
        if not config.defines("sliding_window"):
            return {}
        window = config.get("sliding_window")
        types = config.get("layer_types") if config.defines("layer_types") else None
        if types is None:
            return {FIELD: int(window) if window else 0}  # null: no window, where the class's default has one
        windowed_layers = [t == SLIDING for t in types]
        if not window or not any(windowed_layers):
            return {FIELD: None, PATTERN: None}
        pattern = pattern_of(windowed_layers)
        if pattern is False:
            where = (f"layer_types = {config.raw['layer_types']!r}" if "layer_types" in config.raw else
                     f"max_window_layers = {config.get('max_window_layers')} of num_hidden_layers = {len(types)}")
            raise PorterError(
                "porter cannot port a sliding window on these layers", file=config.path,
                construct="the window on every layer, none, or all but every N-th (layer_types, max_window_layers)",
                found=f"sliding_window = {window}, {where}",
                fix="porter's --sliding-window-pattern N keeps every N-th layer out of the window; port this model "
                    "by hand, or report it",
            )
        return {FIELD: int(window), PATTERN: pattern}

    def to_hf(self, spec, config):
        window = spec[FIELD] or None
        pattern = spec[PATTERN] if window else None
        model_type = config.get("model_type")
        layers = spec["sizes.num_layers"]
        types = None if layers is None else [SLIDING if window and windowed(i, pattern) else FULL for i in range(layers)]
        if class_defines(model_type, "use_sliding_window", unknown=False):  # Qwen2: the window on every layer, or none
            config["use_sliding_window"] = window is not None
            config["sliding_window"] = window
            if window is not None:
                config["max_window_layers"] = 0
            if pattern is not None:
                config["layer_types"] = self._types(spec, types, model_type)
        elif class_defines(model_type, "layer_types", unknown=False):  # Gemma-2/3: a type per layer
            config["sliding_window"] = window
            config["layer_types"] = self._types(spec, types, model_type)
        elif class_defines(model_type, "sliding_window") and model_type is not None:
            if pattern is not None:
                raise PorterError(
                    f"{spec.hf_class} windows every layer or none", file=spec.path, construct=PATTERN,
                    found=f"{PATTERN} = {pattern} for {model_type}",
                    fix="remove the pattern from the spec, or name an HF class with layer_types (Gemma2ForCausalLM)")
            config["sliding_window"] = window  # None too: MistralConfig's own default is 4096
        elif window is not None:
            raise PorterError(
                f"{spec.hf_class} has no sliding-window attention", file=spec.path, construct=FIELD,
                found=f"{FIELD} = {window} for {model_type or 'no model type'}",
                fix="remove the window from the spec, or name an HF class with one (MistralForCausalLM, Qwen2ForCausalLM)",
            )

    def shrink_hf(self, read, out, layers, seq_length):
        """A user's window shorter than verify's batch (a window the batch never reaches proves
        nothing: a quarter of it); as many layers as it takes for each kind of layer the file has
        to be among them (Gemma-3's first global layer is its 6th: 2 layers would prove its
        windowed layers only, never the global one's rotary base and scaling); the per-layer
        fields cut to the shrunk layers."""
        notes = []
        window = read.get("sliding_window")
        if window and window >= seq_length:
            out["sliding_window"] = max(1, seq_length // 4)
            notes.append(f"sliding window {window} -> {out['sliding_window']} (shorter than the {seq_length}-token batch)")
        types = read.get("layer_types") if window else None
        if types:
            needed = 1 + max(types.index(kind) for kind in set(types))
            if needed > layers:
                kinds = " and ".join(sorted(set(types)))
                notes.append(f"{needed} layers, not {layers}: its first {kinds} layers among them")
                layers = out["num_hidden_layers"] = needed
        if read.raw.get("layer_types") is not None:
            out["layer_types"] = list(read.raw["layer_types"])[:layers]
        windowed_from = read.raw.get("max_window_layers")
        if windowed_from is not None and windowed_from >= read["num_hidden_layers"]:
            out["max_window_layers"] = layers
        return notes

    @staticmethod
    def _types(spec, types, model_type) -> list[str]:
        if types is None:
            raise PorterError(
                f"the layer types of {spec.hf_class} need the number of layers", file=spec.path,
                construct="sizes.num_layers", found="unset",
                fix=f"set sizes.num_layers in the spec ({model_type} writes a layer type per layer)")
        return types

    def tiny(self, spec, tiny):
        """A window shorter than verify's sequence (8 of 32 tokens), or the window proves nothing; a
        global layer among verify's few (Gemma-3's 6 becomes 2 of 2 layers), or the pattern proves nothing."""
        if not spec[FIELD]:
            return {}
        out = {FIELD: min(spec[FIELD], max(1, tiny.seq_length // 4))}
        if spec[PATTERN] is not None:
            out[PATTERN] = max(2, min(spec[PATTERN], tiny.num_layers))
        return out


def windowed(index: int, pattern: int | None) -> bool:
    """Is layer `index` (from 0) under the window? All but every `pattern`-th (None: all)."""
    return pattern is None or (index + 1) % pattern != 0


def pattern_of(types: list[bool]) -> int | None | bool:
    """The pattern of a per-layer window list: None (every layer), N (all but every N-th), or
    False (no pattern porter ports)."""
    if all(types):
        return None
    for period in range(2, len(types) + 1):
        if all(w == windowed(i, period) for i, w in enumerate(types)):
            return period
    return False
