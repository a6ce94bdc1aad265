"""deepspeed.compression.compress, which DeepSpeed 0.19 removed.

Every Megatron-DeepSpeed tree's megatron/training.py imports init_compression and
redundancy_clean from it at module level; they act only with a compression-training config
(`--deepspeed` + "compression_training"), which a smoke or verify run never has. The stand-in
returns the model unchanged, and is served only when the real module is missing.
"""

from __future__ import annotations

from pathlib import Path

NAME = "deepspeed.compression"
WHAT = ("deepspeed.compression.compress (removed in DeepSpeed 0.19, imported by the tree's training.py): "
        "init_compression and redundancy_clean return the model unchanged")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "deepspeed.compression")


def _unchanged(model, *args, **kwargs):
    return model


def install(hooks) -> None:
    from porter.treerun.standins.runtime import module

    hooks.missing("deepspeed.compression.compress", NAME, lambda name: module(
        name, {"init_compression": _unchanged, "redundancy_clean": _unchanged}))
