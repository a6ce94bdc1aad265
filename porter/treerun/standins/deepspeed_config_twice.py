"""deepspeed.initialize given a config file and a config dict together (Habana's DeepSpeed accepts it).

Habana's training.py reads --deepspeed_config into a dict and passes it as `config=` while
args still names the file; upstream DeepSpeed refuses ("Not sure how to proceed, we were
given deepspeed configs in the deepspeed arguments and deepspeed.initialize() function
call"). The dict is the file's content: the stand-in hides the path during the call.
"""

from __future__ import annotations

import functools
from pathlib import Path

NAME = "deepspeed config twice"
WHAT = ("deepspeed.initialize(args=<with --deepspeed_config>, config=<that file's dict>), which upstream "
        "DeepSpeed refuses: the path is hidden during the call")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "deepspeed.initialize(")


def _patch(deepspeed) -> None:
    initialize = getattr(deepspeed, "initialize", None)
    if initialize is None:
        return

    @functools.wraps(initialize)
    def wrapper(*args, **kwargs):
        ds_args = kwargs.get("args")
        both = (kwargs.get("config") is not None or kwargs.get("config_params") is not None) and \
            getattr(ds_args, "deepspeed_config", None) is not None
        if not both:
            return initialize(*args, **kwargs)
        from porter.treerun.standins.runtime import used

        used(NAME)
        path, ds_args.deepspeed_config = ds_args.deepspeed_config, None
        try:
            return initialize(*args, **kwargs)
        finally:
            ds_args.deepspeed_config = path

    deepspeed.initialize = wrapper


def install(hooks) -> None:
    hooks.after("deepspeed", _patch)
