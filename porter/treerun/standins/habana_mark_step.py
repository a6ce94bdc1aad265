"""habana_frameworks.torch.core.mark_step, which Habana's training loop calls on every device.

Habana's trees call `htcore.mark_step()` (the end of a lazy-mode HPU graph) in train_step and
evaluate without a device check. Off Gaudi it has nothing to mark: the stand-in is a no-op,
served only when habana_frameworks is not installed. It deliberately has no
habana_frameworks.torch.hpu, so neither DeepSpeed nor the tree detects an HPU.
"""

from __future__ import annotations

from pathlib import Path

NAME = "habana mark_step"
WHAT = "habana_frameworks.torch.core.mark_step (Habana's lazy-mode step, called off Gaudi too): a no-op"


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "habana_frameworks.torch.core")


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("habana_frameworks", NAME, lambda name: module(name))
    hooks.missing("habana_frameworks.torch", NAME, lambda name: module(name))
    hooks.missing("habana_frameworks.torch.core", NAME, lambda name: module(name, {"mark_step": lambda: None}))
