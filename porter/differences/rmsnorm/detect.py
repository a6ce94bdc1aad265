"""What the tree has of RMSNorm: an exported class, classes bound to None without apex, its own file."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, dotted, top_level_names

RMSNORM_PATH = "megatron/model/rmsnorm.py"  # porter's own RMSNorm, when it writes one
# porter's RMSNorm modules a repaired fallback imports from (rmsnorm_porter: where the tree has its own rmsnorm.py)
PORTER_FALLBACK_MODULES = ("megatron.model.rmsnorm", "megatron.model.rmsnorm_porter")
NORM_FILES = ("megatron/model/__init__.py", "megatron/model/transformer.py", "megatron/model/gpt_model.py",
              "megatron/optimizer/__init__.py")


@dataclass(frozen=True)
class NormFacts:
    exported: bool  # megatron.model exports an RMSNorm
    unavailable: tuple = ()  # NoneFallback rows: an RMSNorm class bound to None when its import fails
    own_file: bool = False  # megatron/model/rmsnorm.py exists (porter's or the tree's)


def detect(parsed) -> NormFacts:
    return NormFacts(rmsnorm_exported(parsed("megatron/model/__init__.py")),
                     rmsnorm_unavailable({path: parsed(path) for path in NORM_FILES}),
                     parsed(RMSNORM_PATH) is not None)


def rmsnorm_exported(model_init: cst.Module | None) -> bool:
    if model_init is None:
        return False
    for node in findall(model_init, m.ImportAlias()):
        bound = code(node.asname.name) if node.asname else code(node.name)
        if bound == "RMSNorm":
            return True
    return False


@dataclass(frozen=True)
class NoneFallback:
    """A class a top-level `try:` imports and its ImportError handler binds to None instead, and
    how the file calls it: `try: from apex.normalization import MixedFusedRMSNorm` /
    `except ImportError: MixedFusedRMSNorm = None` (apex is CUDA-only)."""

    file: str
    name: str
    keywords: tuple[str, ...]  # the keywords its calls pass (`LayerSpec(name, ...)` counts as a call)
    positional: int  # the most positional arguments a call passes


_IMPORT_ERRORS = ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")


def _catches_import_error(handler: cst.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
    for t in types:
        node = t.value if isinstance(t, cst.Element) else t
        if (dotted(node) or "").rsplit(".", 1)[-1] in _IMPORT_ERRORS:
            return True
    return False


def none_on_import_error(module: cst.Module | None) -> tuple[str, ...]:
    """Names a top-level `try:` imports and a handler catching ImportError binds to None (or, once
    porter repaired it, imports from porter's megatron.model.rmsnorm)."""
    if module is None:
        return ()
    found: dict[str, None] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.Try):
            continue
        imported = top_level_names(list(stmt.body.body), assignments=False)
        for handler in stmt.handlers:
            if not _catches_import_error(handler):
                continue
            for assign in findall(handler.body, m.Assign(value=m.Name("None"))):
                for target in assign.targets:
                    if isinstance(target.target, cst.Name) and target.target.value in imported:
                        found.setdefault(target.target.value, None)
            # porter's repair of that fallback (edits/imports.py FallbackImport): still the same site
            for node in findall(handler.body, m.ImportFrom()):
                if node.module is not None and code(node.module) in PORTER_FALLBACK_MODULES:
                    for name in top_level_names([cst.SimpleStatementLine(body=[node])], assignments=False):
                        if name in imported:
                            found.setdefault(name, None)
    return tuple(found)


def _calls_of(module: cst.Module, name: str) -> tuple[tuple[str, ...], int]:
    """The keywords calls of `name` pass, and the most positional arguments one passes;
    `LayerSpec(name, a, b)` (DeepSpeed's deferred build) calls name(a, b)."""
    keywords: dict[str, None] = {}
    positional = 0
    for call in findall(module, m.Call()):
        if isinstance(call.func, cst.Name) and call.func.value == name:
            args = list(call.args)
        elif (dotted(call.func) or "").rsplit(".", 1)[-1] == "LayerSpec" and call.args \
                and m.matches(call.args[0].value, m.Name(name)):
            args = list(call.args[1:])
        else:
            continue
        for arg in args:
            if arg.keyword is not None:
                keywords.setdefault(arg.keyword.value, None)
        positional = max(positional, sum(1 for a in args if a.keyword is None))
    return tuple(keywords), positional


def rmsnorm_unavailable(files: dict[str, cst.Module | None]) -> tuple[NoneFallback, ...]:
    """The RMSNorm classes the model files bind to None when their import fails."""
    out = []
    for path, module in files.items():
        for name in none_on_import_error(module):
            if "rmsnorm" in name.lower():
                out.append(NoneFallback(path, name, *_calls_of(module, name)))
    return tuple(out)
