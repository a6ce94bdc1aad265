"""A flash-attention op builder that raises ValueError where the tree expects TypeError.

microsoft's trees of mid-2023 load DeepSpeed's FlashAttentionBuilder at import time and
catch TypeError, what the DeepSpeed of that time raised off CUDA (the builder was None).
DeepSpeed's CPU accelerator now hands a NotImplementedBuilder whose load() raises
ValueError, so the tree dies at import. The stand-in makes that error both a ValueError and
a TypeError: the tree's own fallback (no flash attention) runs.
"""

from __future__ import annotations

from pathlib import Path

NAME = "flash-attn builder"
WHAT = ("DeepSpeed's CPU op builder for flash attention: its load() error is also a TypeError, "
        "so the tree's `except TypeError` fallback (no flash attention) runs")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "get_op_builder(")


class NotOnThisDevice(ValueError, TypeError):
    """DeepSpeed's 'not implemented on CPU' error, catchable as the TypeError older DeepSpeed raised."""


def _patch(no_impl) -> None:
    builder = getattr(no_impl, "NotImplementedBuilder", None)
    if builder is None:
        return
    load = builder.load

    def patched_load(self, *args, **kwargs):
        try:
            return load(self, *args, **kwargs)
        except ValueError as exc:
            from porter.treerun.standins.runtime import used

            used(NAME)
            raise NotOnThisDevice(str(exc)) from exc

    builder.load = patched_load


def install(hooks) -> None:
    hooks.after("deepspeed.ops.op_builder.cpu.no_impl", _patch)
