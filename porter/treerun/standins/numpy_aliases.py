"""numpy's type aliases that numpy 1.24 / 2 removed (np.float, np.int, np.bool, ...).

Older trees' indexed_dataset.py (BigScience's) list `np.float` among their dtypes; numpy 2
raises AttributeError on it. The stand-in answers the removed names with the builtins numpy
itself once aliased (np.float was float), and only those names.
"""

from __future__ import annotations

import builtins
from pathlib import Path

NAME = "numpy aliases"
WHAT = ("numpy's removed aliases (np.float, np.int, np.object, np.str, np.complex, ...), where this numpy lacks "
        "them: the builtins they were")
ALIASES = {"float": "float", "int": "int", "bool": "bool", "object": "object", "str": "str",
           "complex": "complex", "long": "int", "unicode": "str"}


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, *(f"np.{alias}" for alias in ALIASES))


def _patch(numpy) -> None:
    original = numpy.__dict__.get("__getattr__")

    def __getattr__(name):
        if name in ALIASES and name not in numpy.__dict__:
            from porter.treerun.standins.runtime import used

            used(NAME)
            return getattr(builtins, ALIASES[name])
        if original is None:
            raise AttributeError(f"module 'numpy' has no attribute {name!r}")
        return original(name)

    numpy.__getattr__ = __getattr__


def install(hooks) -> None:
    hooks.after("numpy", _patch)
