"""`--use_hpu` and `PipelineModule(use_hpu=...)`, which only Habana's DeepSpeed fork defines.

Habana's trees read `args.use_hpu` everywhere (the fork's deepspeed.add_config_arguments
adds the option) and pass `use_hpu=` to DeepSpeed's PipelineModule. Upstream DeepSpeed has
neither: the stand-in adds `--use_hpu` (off) to the parser when the tree's parser lacks it,
and drops the keyword when PipelineModule does not take it.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

NAME = "use_hpu"
WHAT = ("--use_hpu and PipelineModule(use_hpu=) of Habana's DeepSpeed fork: the option is added (off), "
        "the keyword dropped where upstream DeepSpeed lacks them")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "use_hpu")


def _patch_deepspeed(deepspeed) -> None:
    add = getattr(deepspeed, "add_config_arguments", None)
    if add is None:
        return

    @functools.wraps(add)
    def add_config_arguments(parser):
        parser = add(parser)
        if not any(action.dest == "use_hpu" for action in parser._actions):
            from porter.treerun.standins.runtime import used

            used(NAME)
            parser.add_argument("--use_hpu", action="store_true", help="(porter stand-in: Habana's DeepSpeed fork)")
        return parser

    deepspeed.add_config_arguments = add_config_arguments


def _patch_pipeline_module(module) -> None:
    cls = getattr(module, "PipelineModule", None)
    if cls is None or "use_hpu" in inspect.signature(cls.__init__).parameters:
        return
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "use_hpu" in kwargs:
            from porter.treerun.standins.runtime import used

            used(NAME)
            kwargs.pop("use_hpu")
        init(self, *args, **kwargs)

    cls.__init__ = __init__


def install(hooks) -> None:
    hooks.after("deepspeed", _patch_deepspeed)
    hooks.after("deepspeed.runtime.pipe.module", _patch_pipeline_module)
