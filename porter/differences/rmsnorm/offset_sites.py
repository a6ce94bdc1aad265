"""Where a tree builds an RMSNorm class of its own: the methods of the GPT model files that name it.

The tree's RMSNorm classes are the names a model file binds at top level by import (also inside
a top-level try/if) whose name says RMSNorm: `from megatron.model import LayerNorm, RMSNorm`,
apex's `MixedFusedRMSNorm`. A site is a method (or module-level function) that reads one of them
as a plain name: `RMSNorm(hidden, eps, ...)`, `LayerSpec(RMSNorm, ...)`, `X if t else RMSNorm`.
porter's offset RMSNorm, imported beside them as OFFSET_CLASS, is not one of the tree's.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import top_level_names
from porter.profile import GPT_MODEL, LANGUAGE_MODEL, TRANSFORMER

OFFSET_CLASS = "OffsetRMSNorm"  # porter's RMSNorm as the model files import it beside the tree's
MODEL_FILES = (TRANSFORMER, LANGUAGE_MODEL, GPT_MODEL)


@dataclass(frozen=True)
class NormSite:
    file: str
    cls: str | None  # None: a module-level function
    func: str
    name: str  # the tree's RMSNorm class it reads


@dataclass(frozen=True)
class NormSites:
    """What `porter inspect` shows and the offset plans from: the methods building the tree's RMSNorm."""

    sites: tuple[NormSite, ...] = ()


def tree_rmsnorm_names(module: cst.Module) -> list[str]:
    """The RMSNorm classes a model file imports at top level (porter's offset class aside)."""
    return sorted(n for n in top_level_names(module, assignments=False)
                  if "rmsnorm" in n.lower() and n != OFFSET_CLASS)


def reads(node: cst.CSTNode, name: str) -> bool:
    """Does `node` read `name` as a plain variable (not as an attribute, keyword or parameter)?"""
    names = findall(node, m.Name(name))
    if not names:
        return False
    excluded = {id(a.attr) for a in findall(node, m.Attribute(attr=m.Name(name)))}
    excluded |= {id(a.keyword) for a in findall(node, m.Arg(keyword=m.Name(name)))}
    excluded |= {id(p.name) for p in findall(node, m.Param(name=m.Name(name)))}
    return any(id(n) not in excluded for n in names)


def norm_sites(parsed) -> NormSites:
    out = []
    for path in MODEL_FILES:
        module = parsed(path)
        if module is None:
            continue
        names = tree_rmsnorm_names(module)
        if not names:
            continue
        scopes = []
        for stmt in module.body:
            if isinstance(stmt, cst.FunctionDef):
                scopes.append((None, stmt))
            elif isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
                scopes += [(stmt.name.value, f) for f in stmt.body.body if isinstance(f, cst.FunctionDef)]
        for cls, func in scopes:
            for name in names:
                if reads(func.body, name):
                    out.append(NormSite(path, cls, func.name.value, name))
    return NormSites(tuple(out))
