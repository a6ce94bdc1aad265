"""Rewrites of a module's imports and exports (the statements at its top level)."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.nodes import code, statements, top_level_names
from porter.edits.base import ModuleRewrite


def _import_from(stmt: cst.BaseStatement) -> cst.ImportFrom | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        node = stmt.body[0]
        if isinstance(node, cst.ImportFrom):
            return node
    return None


def _module_name(node: cst.ImportFrom) -> str:
    dots = "." * len(node.relative)
    return dots + (code(node.module) if node.module is not None else "")


def _imported(node: cst.ImportFrom) -> list[str]:
    if isinstance(node.names, cst.ImportStar):
        return ["*"]
    return [code(alias.asname.name) if alias.asname else code(alias.name) for alias in node.names]


def defined_names(body: list[cst.BaseStatement]) -> set[str]:
    """Names bound at top level by imports (also inside top-level if/try), defs and classes."""
    return top_level_names(body, assignments=False)


class ImportNameAlongside(ModuleRewrite):
    """Add a name to an existing `from MODULE import ...` that already imports ANCHOR.

    Why: the port's new classes are reached the way the tree reaches their GPT
    counterparts, e.g. `from megatron.model import LayerNorm` becomes
    `from megatron.model import LayerNorm, RMSNorm`, so both norms share one import path
    (and the circular-import order the tree already relies on).
    """

    module: str
    anchor: str
    name: str

    def __post_init__(self) -> None:
        self.construct = f"`from {self.module} import {self.anchor}` at top level"

    def rewrite_module_body(self, body, path):
        if self.name in defined_names(body):
            return body
        for i, stmt in enumerate(body):
            node = _import_from(stmt)
            if node is None or _module_name(node) != self.module or self.anchor not in _imported(node):
                continue
            names = list(node.names)
            names[-1] = names[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            names.append(cst.ImportAlias(name=cst.Name(self.name)))
            body[i] = stmt.with_changes(body=[node.with_changes(names=names)])
            return body
        imports = [code(s) for s in body if _import_from(s) is not None]
        raise self.fail(path, "imports: " + ("; ".join(imports[:8]) or "none"))


class InsertImport(ModuleRewrite):
    """Insert an import statement at top level, after the statement that defines AFTER.

    Why: `megatron/model/__init__.py` is order-sensitive. `transformer.py` imports
    `LayerNorm` (and now `RMSNorm`) from `megatron.model` while `megatron.model` is still
    being initialised, so RMSNorm must be exported right after LayerNorm and before
    `gpt_model` is imported; the LLaMA model must come after `gpt_model`. With AFTER=None the
    import goes after the last top-level import of the module.
    """

    source: str
    after: str | None
    why: str = ""

    def __post_init__(self) -> None:
        self.construct = f"a top-level statement that defines {self.after}" if self.after else "top-level imports"

    def rewrite_module_body(self, body, path):
        new = statements(self.source)[0]
        new_names = defined_names([new])
        if new_names <= defined_names(body):
            return body
        at = None
        for i, stmt in enumerate(body):
            if self.after is None:
                if m.matches(stmt, m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()])):
                    at = i
            elif self.after in defined_names([stmt]):
                at = i
                break
        if at is None:
            names = sorted(defined_names(body))
            raise self.fail(path, "top-level names: " + (", ".join(names) or "none"))
        return body[: at + 1] + [new] + body[at + 1 :]


class FallbackImport(ModuleRewrite):
    """Where a failed import binds a class to None, bind a working class instead.

    Why: a tree may guard a CUDA-only import, `try: from apex.normalization import
    MixedFusedRMSNorm` / `except ImportError: MixedFusedRMSNorm = None`, and then build its
    norms from that name unguarded; without apex (never on a CPU machine) the model cannot be
    built (`'NoneType' object is not callable`). The `NAME = None` in the handler becomes
    `from SOURCE import CLS as NAME` (porter's RMSNorm, which takes the same
    `(hidden_size, eps)` call): only the fallback changes, and where the import succeeds the
    tree's own (fused) class is still used.
    """

    name: str
    source: str
    cls: str

    def __post_init__(self) -> None:
        self.construct = f"a top-level `try:` importing {self.name} whose `except ImportError:` sets `{self.name} = None`"

    def _fallback(self) -> cst.ImportFrom:
        return statements(f"from {self.source} import {self.cls} as {self.name}")[0].body[0]

    def _is_none(self, node: cst.BaseSmallStatement) -> bool:
        return m.matches(node, m.Assign(targets=[m.AssignTarget(target=m.Name(self.name))], value=m.Name("None")))

    def _is_fallback(self, node: cst.BaseSmallStatement) -> bool:
        return isinstance(node, cst.ImportFrom) and node.deep_equals(self._fallback())

    def rewrite_module_body(self, body, path):
        changed = done = False
        for i, stmt in enumerate(body):
            if not isinstance(stmt, cst.Try) or self.name not in defined_names(list(stmt.body.body)):
                continue
            handlers = []
            for handler in stmt.handlers:
                lines = []
                for line in handler.body.body:
                    if isinstance(line, cst.SimpleStatementLine):
                        done = done or any(self._is_fallback(n) for n in line.body)
                        if any(self._is_none(n) for n in line.body):
                            small = [self._fallback().with_changes(semicolon=n.semicolon) if self._is_none(n) else n
                                     for n in line.body]
                            line = line.with_changes(body=small)
                            changed = True
                    lines.append(line)
                handlers.append(handler.with_changes(body=handler.body.with_changes(body=lines)))
            if changed:
                body[i] = stmt.with_changes(handlers=handlers)
                return body
        if done:
            return body
        tries = [code(s).splitlines()[1].strip() for s in body if isinstance(s, cst.Try) and len(code(s).splitlines()) > 1]
        raise self.fail(path, "top-level try blocks: " + ("; ".join(tries[:8]) or "none"))
