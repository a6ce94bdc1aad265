"""torchvision and PIL, which Megatron imports only for its vision datasets.

microsoft's training.py imports megatron/model/vision/knn_monitor.py, which imports
megatron/data/vit_dataset.py (torchvision.transforms, PIL.Image) at module level, though a
language model never builds a vision dataset. The torchvision wheel on PyPI links CUDA's
torch and fails to load beside CPU torch ("operator torchvision::nms does not exist"). The
stand-in serves empty modules when the real one is missing or fails while it imports.
"""

from __future__ import annotations

from pathlib import Path

NAME = "torchvision"
WHAT = ("torchvision and PIL (missing here, or a build for another torch): empty modules, since only "
        "Megatron's vision datasets use them")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "import torchvision", "from torchvision", "from PIL", "import PIL")


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    for package in ("torchvision", "PIL"):
        hooks.missing(package + ".*", NAME, lambda name: module(name, loose=True))
