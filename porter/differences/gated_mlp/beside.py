"""Another gated activation beside a tree's own SwiGLU: the tree's gated MLP, another function on the gate.

A tree whose own `--swiglu` (a store_true switch, microsoft's since NVIDIA's July 2023 rebase)
doubles its MLP's first projection into one fused [gate; up] projection and picks silu for it
in `ParallelMLP.__init__`'s `self.activation_func = ...` choice already has everything GeGLU
needs but the function: porter adds a switch of the same kind beside it (`--geglu`, in the
group that registers `--swiglu`), which turns the tree's gated MLP on (`args.swiglu = True`
where the tree checks its arguments, so the tree widens the projection, keeps its weight
layout and its own checkpoint handling) and, after the tree's choice, makes
`self.activation_func` porter's geglu (megatron/model/swiglu.py). The port's checkpoints are
the tree's SwiGLU ones with another activation: conversion reads the tree's layout.

A tree's switch of another kind (a choice option, BigScience's gate-second `--glu-activation`
whose geglu is the exact erf GELU, Habana's separate projections) is not extended.
"""

from __future__ import annotations

from porter.differences.gated_mlp import rewrites as R
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling

# activation.type -> porter's switch beside the tree's boolean --swiglu: (option, dest, what its help says)
BESIDE = {"geglu": ("--geglu", "geglu", "Use gated linear units and GELU (tanh approximation) activation instead "
                                        "of default gelu: the gated MLP of --swiglu, GELU on its gate.")}


def beside_spelling(activation: str, group: str = NETWORK) -> Spelling:
    """porter's store_true switch for `activation` beside a tree's own boolean SwiGLU switch."""
    option, dest, help_text = BESIDE[activation]
    return Spelling(activation, option, dest, True, f"args.{dest}", group,
                    (("action", "'store_true'"), ("help", repr(help_text))))


def extendable(own: Spelling, activation: str) -> bool:
    """Can the tree's own SwiGLU carry `activation` beside it? A boolean switch of one fused
    projection with the gate in its first half (the half porter's functions gate), and a switch
    porter knows how to add beside it."""
    return activation in BESIDE and own.on is True and dict(own.weights).get("gate_first") is True


def plan_beside(p, own: Spelling, activation: str, func: str, what: str) -> Spelling:
    """Plan `activation` as the tree's gated MLP with `func` on the gate; -> the new switch's spelling."""
    p.switch("swiglu")  # the tree's gated MLP, on: its projection, its weight layout
    registered = p.profile.arguments.by_option(own.option)
    spelling = p.switch(activation, spelling=beside_spelling(activation, registered.function))
    lines = [f"if {spelling.test}:"]
    for dest in ("openai_gelu", "onnx_safe"):
        if p.has_dest(dest):
            lines.append(f"    assert not args.{dest}, '--{dest.replace('_', '-')} cannot be combined with "
                         f"{spelling.option}'")
    lines += [f"    # {activation} is the gated MLP of {own.option} with another function on the gate",
              f"    args.{own.dest} = True"]
    p.checks.append("\n".join(lines))
    p.edit(TRANSFORMER, activation, f"the MLP uses {func} ({what}) on the tree's fused gate+up projection when "
           f"{spelling.option} is on", rw(R.SetActivation, cls="ParallelMLP", test=spelling.test, func_name=func))
    p.import_into(TRANSFORMER, activation, f"from megatron.model.swiglu import {func}", "imports the gated activation")
    return spelling

