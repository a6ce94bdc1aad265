"""The tree's own rotary embedding, where a local base would reuse it. Two places trees build it:

- once, in the language model, its angles handed to every layer (microsoft): the module the
  language model imports RotaryEmbedding from, and whether that module's apply function caches
  cos and sin in module globals (`global ...`), which a second table of the same length would
  confuse (`handed`);
- in each attention, of its own (EleutherAI's class, Habana 7086aadb's CoreAttention and
  BigScience's ParallelAttention): the transformer's class whose `__init__` builds it (`built_in`).
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import dotted
from porter.differences.rotary.detect import APPLY, ROTARY_CLASS, module_path

TRANSFORMER = "megatron/model/transformer.py"


@dataclass(frozen=True)
class TreeRotary:
    file: str  # the module defining the tree's RotaryEmbedding
    module: str  # its dotted name, for an import
    apply: str  # its function that rotates a tensor by the angles
    cached: bool  # that function keeps cos and sin in module globals


@dataclass(frozen=True)
class LocalRotaryFacts:
    handed: TreeRotary | None  # built by the language model and handed to every layer
    built_in: str | None  # the transformer's class whose __init__ builds one for its own layer


def _handed(parsed) -> TreeRotary | None:
    path = module_path(parsed("megatron/model/language_model.py"))
    rotary = parsed(path) if path else None
    if rotary is None:
        return None
    apply = next((s for s in rotary.body if isinstance(s, cst.FunctionDef) and s.name.value == APPLY), None)
    cached = apply is not None and bool(findall(apply.body, m.Global()))
    return TreeRotary(path, path.removesuffix(".py").replace("/", "."), APPLY, cached)


def built_in(transformer: cst.Module | None) -> str | None:
    """The top-level class of the transformer whose __init__ builds a RotaryEmbedding, if one does."""
    for cls in transformer.body if transformer is not None else ():
        if not isinstance(cls, cst.ClassDef):
            continue
        init = next((f for f in cls.body.body if isinstance(f, cst.FunctionDef) and f.name.value == "__init__"), None)
        if init is not None and any((dotted(c.func) or "").rsplit(".", 1)[-1] == ROTARY_CLASS
                                    for c in findall(init, m.Call())):
            return cls.name.value
    return None


def detect(parsed) -> LocalRotaryFacts | None:
    handed, built = _handed(parsed), built_in(parsed(TRANSFORMER))
    return LocalRotaryFacts(handed, built) if handed is not None or built is not None else None
