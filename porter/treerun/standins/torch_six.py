"""torch._six, which torch 2.0 removed.

2021-era trees (BigScience's clip_grads.py and fp16 optimizer) import `inf` from it; torch
moved it to torch's own namespace. The stand-in has the names those trees used, served only
when the real module is missing.
"""

from __future__ import annotations

from pathlib import Path

NAME = "torch._six"
WHAT = "torch._six (removed in torch 2.0, imported by older trees' gradient clipping): inf and string_classes"


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "torch._six")


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("torch._six", NAME, lambda name: module(
        name, {"inf": float("inf"), "string_classes": (str, bytes), "int_classes": int}))
