"""Tutel, Microsoft's MoE kernels, which a fork's MoE gating imports at module level.

Some forks (an MoE research fork of microsoft's tree) import `from tutel import moe` at the
top of transformer.py for their expert routing. Tutel is not on PyPI: it is built from its
GitHub sources with a C++/CUDA extension, so a CPU machine does not have it. A dense model
(the LLaMA family's port) never routes tokens to experts; the stand-in serves an empty module
when the real one is missing, and any use of it in a run fails loudly.
"""

from __future__ import annotations

from pathlib import Path

NAME = "tutel"
WHAT = ("tutel (Microsoft's MoE kernels, not on PyPI): an empty module, since only the tree's MoE "
        "routing uses it and a dense model routes nothing")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "import tutel", "from tutel")


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("tutel.*", NAME, lambda name: module(name, loose=True))
