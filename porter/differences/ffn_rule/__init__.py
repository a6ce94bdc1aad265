"""The MLP width: GPT's 4h, LLaMA's int(2/3 * 4h) rounded up to a multiple, or a number.

Spec: `mlp.ffn_hidden_size` ("4h", "2/3*4h", or the width itself) and `mlp.multiple_of`
(LLaMA: 256, which gives 11008 for h = 4096). An explicit --ffn-hidden-size always wins. The
rule is porter's `--ffn-multiple-of` switch, applied where the tree checks its arguments; a
width given as a number is a default of the entry point (Megatron-DeepSpeed's own SwiGLU rule
rounds down to 64 and gives 10880, never LLaMA's width). Where the tree sets its width again
under a switch of its own (microsoft July 2023: `if args.swiglu:`, whatever was given), that
override is skipped while the rule's switch is on, so a number as width turns it on too.
HF: `intermediate_size` (always a number).
"""

from __future__ import annotations

import math

from porter.differences.base import Difference
from porter.differences.ffn_rule import rewrites as R
from porter.planner import rw
from porter.profile import ARGUMENTS
from porter.profile.features import NETWORK, Spelling
from porter.schema import Field, number

RULES = ("4h", "2/3*4h")


def default_ffn_hidden_size(hidden_size: int, rule: str | int, multiple_of: int = 1,
                            multiplier: float | None = None) -> int:
    """4h, LLaMA's int(2/3 * 4h) (times `multiplier`, LLaMA-3) rounded up to `multiple_of`
    (11008 for h = 4096; LLaMA-3 8B: 14336), or the number."""
    if isinstance(rule, int):
        return rule
    if rule == "4h":
        return 4 * hidden_size
    width = 8 * hidden_size // 3
    if multiplier is not None:
        width = int(multiplier * width)
    return multiple_of * math.ceil(width / multiple_of)


class FfnRule(Difference):
    name = "ffn_rule"
    hf_fields = ("intermediate_size",)
    fields = {
        "mlp.ffn_hidden_size": Field((str, int), "4h", choices=RULES, low=0,
                                     help="default MLP width: '4h', '2/3*4h' or the width"),
        "mlp.multiple_of": number(1, whole=True, help="round the 2/3*4h width up to this"),
        "mlp.ffn_multiplier": number(None, help="multiply the 2/3*4h width by this before rounding (LLaMA-3: 1.3)"),
    }
    spellings = {
        "ffn_rule": (
            Spelling(
                "ffn_rule", "--ffn-multiple-of", "ffn_multiple_of", 256, "args.ffn_multiple_of is not None", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'If set, the default --ffn-hidden-size is int(2/3 * 4h) rounded up to a multiple of this (LLaMA: 256); otherwise 4h.'")),
            ),
        ),
        "ffn_multiplier": (
            Spelling(
                "ffn_multiplier", "--ffn-dim-multiplier", "ffn_dim_multiplier", None, "args.ffn_dim_multiplier is not None",
                NETWORK, (("type", "float"), ("default", "None"),
                          ("help", "'With --ffn-multiple-of: multiply int(2/3 * 4h) by this before rounding (LLaMA-3: 1.3).'")),
            ),
        ),
    }
    switch_fields = {"ffn_multiplier": "mlp.ffn_multiplier"}

    def wanted(self, spec):
        return spec["mlp.ffn_hidden_size"] != "4h"

    def validate(self, values, given, fail):
        for key in ("mlp.multiple_of", "mlp.ffn_multiplier"):
            # GPT's value (no rounding, no multiplier) goes with any width: a spec that extends one
            # with the rule states it to leave the rule behind
            if values["mlp.ffn_hidden_size"] != "2/3*4h" and key in given and values[key] != self.fields[key].base:
                raise fail(key, f"ffn_hidden_size = {values['mlp.ffn_hidden_size']!r}, {key.split('.')[1]} = {values[key]}",
                           f"remove {key}, or set mlp.ffn_hidden_size = '2/3*4h'",
                           message=f"inconsistent spec: {key} only applies to mlp.ffn_hidden_size = '2/3*4h'")

    def plan(self, p):
        rule = p.spec["mlp.ffn_hidden_size"]
        multiple = p.spec["mlp.multiple_of"]
        multiplier = p.spec["mlp.ffn_multiplier"]
        scaled = f" times {multiplier:g}" if multiplier else ""
        width = rule if isinstance(rule, int) else f"int(2/3 * 4h){scaled} rounded up to {multiple}"
        p.describe_model(f"MLP width {width}")
        if isinstance(rule, int):
            p.default("ffn_hidden_size", rule, "mlp.ffn_hidden_size")
            p.reuse("ffn_rule", f"the MLP width {rule} is a default of the entry point (--ffn-hidden-size)")
            if not p.profile.arguments.width_overrides:
                return
            # the tree sets its width again under a switch this port may turn on (its own SwiGLU):
            # the rule's switch on, the width given stands against it (multiple_of is 1 here)
        spelling = p.switch("ffn_rule", on=multiple, field="mlp.multiple_of")
        multiplier = p.spec["mlp.ffn_multiplier"]
        scale = p.switch("ffn_multiplier", on=multiplier, field="mlp.ffn_multiplier")
        p.edit(
            ARGUMENTS, "ffn_rule",
            f"the default MLP width becomes int(2/3*4h), times {scale.option} if given, rounded up to "
            f"{spelling.option} (the spec: {multiple}" + (f", x{multiplier:g}" if multiplier else "") + ")",
            rw(R.FfnHiddenSizeRule, func=p.checks_function, dest=spelling.dest, multiplier_dest=scale.dest),
        )
        for found in p.profile.arguments.width_overrides:
            test = R.width_unguarded(found, spelling.dest)  # porter's own guard is seen after an apply
            p.edit(ARGUMENTS, "ffn_rule", f"the tree's `if {test}:` sets its own MLP width whatever was chosen: "
                   f"skipped when {spelling.option} is given, so the rule's (or an explicit) width stands",
                   rw(R.KeepRuleWidth, func=p.checks_function, test=test, dest=spelling.dest))

    def tiny(self, spec, tiny):
        rule = spec["mlp.ffn_hidden_size"]
        if isinstance(rule, int):  # a real model's width: the tiny one takes LLaMA's rule at its size
            return {"mlp.ffn_hidden_size": default_ffn_hidden_size(tiny.hidden_size, "2/3*4h", 16)}
        return {}

    def to_hf(self, spec, config):
        hidden = spec["sizes.hidden_size"]
        if hidden is not None:
            config["intermediate_size"] = ffn_hidden_size(spec, hidden)

    def from_hf(self, config):
        size = config.get("intermediate_size")
        if size is None:
            return {}
        return {"mlp.ffn_hidden_size": int(size), "mlp.multiple_of": 1, "mlp.ffn_multiplier": None}


def ffn_hidden_size(spec, hidden_size: int) -> int:
    """The spec's default MLP width for a hidden size."""
    return default_ffn_hidden_size(hidden_size, spec["mlp.ffn_hidden_size"], spec["mlp.multiple_of"],
                                   spec["mlp.ffn_multiplier"])
