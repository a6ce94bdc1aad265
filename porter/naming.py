"""The family's own names in a tree: its entry point, model module and classes, free of the tree's.

A tree may already hold a file porter would create (its own pretrain_llama.py, a hand-written
megatron/model/llama_model.py) or export a class of the same name (LLaMAModel). porter never
overwrites or shadows those: the family takes free names instead, with a `_porter` suffix
(pretrain_llama_porter.py, llama_porter_model.py, LLaMAPorterModel), and says which. The
choice is a function of the tree (what it holds, and what porter's own headers say), so
apply, verify, smoke and convert all arrive at the same names, before and after the port.
"""

from __future__ import annotations

from dataclasses import replace

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import dotted
from porter.source import GENERATED_MARK, SourceTree
from porter.spec import Spec

MODEL_INIT = "megatron/model/__init__.py"


def _foreign(tree: SourceTree, path: str) -> bool:
    """Does the tree hold this file without porter's generated header?"""
    source = tree.get(path)
    return source is not None and not source.text.startswith(GENERATED_MARK)


def _exported_elsewhere(tree: SourceTree, spec: Spec) -> bool:
    """Does megatron.model export the family's class names from a module that is not the family's?"""
    source = tree.get(MODEL_INIT)
    if source is None:
        return False
    for node in findall(source.module, m.ImportFrom()):
        if isinstance(node.names, cst.ImportStar):
            continue
        module = "." * len(node.relative) + (dotted(node.module) or "" if node.module is not None else "")
        if any(dotted(alias.name) == spec.model_class for alias in node.names):
            return module not in (f".{spec.module_name}", f"megatron.model.{spec.module_name}")
    return False


def taken(tree: SourceTree, spec: Spec) -> list[str]:
    """What of the family's names the tree already uses for its own code."""
    out = [path for path in (spec.script, f"megatron/model/{spec.module_name}.py") if _foreign(tree, path)]
    if _exported_elsewhere(tree, spec):
        out.append(f"{spec.model_class} (exported by {MODEL_INIT})")
    return out


def spec_in_tree(spec: Spec, tree: SourceTree) -> Spec:
    """The spec with the names the family has in this tree (its own, unless the tree took them)."""
    current = spec
    suffix = 0
    first = taken(tree, spec)
    while taken(tree, current):
        suffix += 1
        tag = "porter" if suffix == 1 else f"porter{suffix}"
        current = replace(spec, name=f"{spec.name}_{tag}", class_prefix=f"{spec.class_prefix}{tag.capitalize()}",
                          script=f"{spec.script.removesuffix('.py')}_{tag}.py", renamed_because=tuple(first))
    return current
