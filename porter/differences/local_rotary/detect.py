"""The tree's own rotary embedding, where a local base would reuse it: the module the language
model imports RotaryEmbedding from, and whether that module's apply function caches cos and sin
in module globals (`global ...`), which a second table of the same length would confuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.differences.rotary.detect import APPLY, module_path


@dataclass(frozen=True)
class TreeRotary:
    file: str  # the module defining the tree's RotaryEmbedding
    module: str  # its dotted name, for an import
    apply: str  # its function that rotates a tensor by the angles
    cached: bool  # that function keeps cos and sin in module globals


def detect(parsed) -> TreeRotary | None:
    path = module_path(parsed("megatron/model/language_model.py"))
    rotary = parsed(path) if path else None
    if rotary is None:
        return None
    apply = next((s for s in rotary.body if isinstance(s, cst.FunctionDef) and s.name.value == APPLY), None)
    cached = apply is not None and bool(findall(apply.body, m.Global()))
    return TreeRotary(path, path.removesuffix(".py").replace("/", "."), APPLY, cached)
