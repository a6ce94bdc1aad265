"""Sliding-window attention (Mistral): a query sees only the last `sliding_window` positions.

Spec: `attention.sliding_window` (GPT: unset, every earlier position; Mistral-7B v0.1: 4096;
0: no window, but the switch is there: a Mistral config.json whose window is null). Query i
sees key j when 0 <= i - j < window, HF's semantics (tests/families check it against
MistralForCausalLM itself). porter's switch: `--sliding-window` (int, default None; 0 or unset:
no window). When porter adds it: the attention keeps the window (`__init__`), and its mask
gains the window where the core attention starts, in front of both the fused kernel and the
tree's unfused softmax (rewrites.py here; the mask function is
megatron/model/sliding_window.py). Plain and pipe model share the attention, so both get it.
HF: `sliding_window` (Mistral, Mixtral; null: none). Qwen2 adds `use_sliding_window` and
`max_window_layers`/`layer_types` (the window only on layers from max_window_layers on):
porter windows every layer or none, and refuses a config that windows some layers only.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.sliding_window import rewrites as W
from porter.errors import PorterError
from porter.hf_config import class_defines
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "sliding_window"
FIELD = "attention.sliding_window"


class SlidingWindow(Difference):
    name = SWITCH
    fields = {FIELD: number(None, whole=True, low=-1,
                            help="keys a query sees, itself included (sliding-window attention); unset or 0: all")}
    hf_fields = ("sliding_window", "use_sliding_window", "max_window_layers", "layer_types")
    switchable = (FIELD,)
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--sliding-window", "sliding_window", None, "args.sliding_window", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'Sliding-window attention: a query sees only the last N positions, itself "
                          "included (Mistral: 4096); 0 or unset: all.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def plan(self, p):
        site = p.profile.attention
        if site is None:
            raise unsupported("cannot find the core attention to window", TRANSFORMER,
                              "a core attention porter recognises (torch.baddbmm scores ... context_layer)",
                              "none: porter keeps this tree's attention as it is and cannot window its mask")
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.checks.append(
            f"""
            if args.{spelling.dest} is not None:
                assert args.{spelling.dest} >= 0, \\
                    'sliding-window attention: {spelling.option} is the number of positions a query sees (0: all)'
            """
        )
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.sliding_window import sliding_window_mask",
                      "imports the sliding-window mask")
        p.edit(TRANSFORMER, SWITCH, f"{site.cls} keeps the window of {spelling.option}",
               rw(W.SlidingWindowAttribute, cls=site.cls, value=f"args.{spelling.dest}"))
        p.edit(TRANSFORMER, SWITCH, f"{site.cls}.{site.func} masks out keys older than the window, for the fused "
               "and the unfused attention alike", rw(W.SlidingWindowMask, cls=site.cls, func=site.func))
        p.create("megatron/model/sliding_window.py", SWITCH, "the sliding-window mask", "sliding_window.py.j2")

    def from_hf(self, config):
        """The window as the class reads it: Qwen2's is dropped unless use_sliding_window, and
        sits on the layers `layer_types` (or max_window_layers) says; porter windows all or none."""
        if not config.defines("sliding_window"):
            return {}
        window = config.get("sliding_window")
        types = config.get("layer_types") if config.defines("layer_types") else None
        if types is None:
            return {FIELD: int(window) if window else 0}  # null: no window, where the class's default has one
        windowed = [t == "sliding_attention" for t in types]
        if not window or not any(windowed):
            return {FIELD: None}
        if not all(windowed):
            where = (f"layer_types = {config.raw['layer_types']!r}" if "layer_types" in config.raw else
                     f"max_window_layers = {config.get('max_window_layers')} of num_hidden_layers = {len(types)}")
            raise PorterError(
                "porter cannot port a sliding window on some layers only", file=config.path,
                construct="use_sliding_window with max_window_layers (or layer_types): the window on every layer or none",
                found=f"use_sliding_window = true, sliding_window = {window}, {where}",
                fix="porter's --sliding-window windows every layer; port this model by hand, or report it",
            )
        return {FIELD: int(window)}

    def to_hf(self, spec, config):
        window = spec[FIELD] or None
        model_type = config.get("model_type")
        if class_defines(model_type, "use_sliding_window", unknown=False):  # Qwen2: the window on every layer, or none
            config["use_sliding_window"] = window is not None
            config["sliding_window"] = window
            if window is not None:
                config["max_window_layers"] = 0
        elif class_defines(model_type, "sliding_window") and model_type is not None:
            config["sliding_window"] = window  # None too: MistralConfig's own default is 4096
        elif window is not None:
            raise PorterError(
                f"{spec.hf_class} has no sliding-window attention", file=spec.path, construct=FIELD,
                found=f"{FIELD} = {window} for {model_type or 'no model type'}",
                fix="remove the window from the spec, or name an HF class with one (MistralForCausalLM, Qwen2ForCausalLM)",
            )

    def tiny(self, spec, tiny):
        """A window shorter than verify's sequence (8 of 32 tokens), or the window proves nothing."""
        if not spec[FIELD]:
            return {}
        return {FIELD: min(spec[FIELD], max(1, tiny.seq_length // 4))}
