"""What every rewrite shares: finding its anchor by structure, and saying so when it can't.

A rewrite is a small `libcst` transformer that changes one function (or one class's
method) of one file. Its parameters are declared as class annotations (`cls: str`,
`mask: str = "attention_mask"`), given by keyword (or in that order) when the plan builds it;
`__post_init__` derives what else it needs from them. It descends only into the class and function it is anchored on
(`visit_*` returns False elsewhere), so a rewrite costs little more than the parse. Each one
recognises its own result: run on its own output it changes nothing, which is what makes
`porter apply` idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import expression, mentions, statements, top_level_names
from porter.errors import AnchorError


def _parameters(cls: type, bases: tuple[type, ...]) -> list[str]:
    """The parameters a rewrite class declares (annotations that are not ClassVar), base first."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        if klass in bases or not issubclass(klass, bases):
            continue
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if "ClassVar" not in str(annotation) and name not in names:
                names.append(name)
    return names


def bind_parameters(rewrite: Any, bases: tuple[type, ...], args: tuple, kwargs: dict) -> None:
    """Set a rewrite's declared parameters from a call, refusing unknown or missing ones as a
    function call would, then let it derive the rest (`__post_init__`)."""
    names = _parameters(type(rewrite), bases)
    if len(args) > len(names):
        raise TypeError(f"{type(rewrite).__name__} takes {len(names)} parameters ({', '.join(names)}), got {len(args)}")
    given = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in names:
            raise TypeError(f"{type(rewrite).__name__} has no parameter {name!r} (it takes {', '.join(names)})")
        if name in given:
            raise TypeError(f"{type(rewrite).__name__} got {name!r} twice")
        given[name] = value
    for name in names:
        if name in given:
            setattr(rewrite, name, given[name])
        elif not hasattr(type(rewrite), name):
            raise TypeError(f"{type(rewrite).__name__} needs the parameter {name!r}")
    rewrite.__post_init__()


class Rewrite(cst.CSTTransformer):
    """Base of porter's rewrites: one function of one file, found by structure.

    Subclasses set `cls` (or None for a module-level function) and `func`, and implement
    `rewrite_body(body) -> body`. In it they call `self.anchored()` once they find what they
    are anchored on, or `self.already_done()` when they recognise their own earlier result.
    `apply()` raises AnchorError naming the file, the construct and what was found when
    neither happened.
    """

    cls: ClassVar[str | None] = None
    func: ClassVar[str] = ""
    construct: ClassVar[str] = ""
    # may the rewrite change the function's parameter list too (porter.checks' scope)? Few do:
    # a class that gains a keyword its callers pass (the rotary embedding's base)
    changes_parameters: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._module: cst.Module | None = None
        self._class_stack: list[str] = []
        self._hits = 0
        self._done = 0
        self._functions_seen: list[str] = []
        self._missing: str | None = None
        bind_parameters(self, (Rewrite,), args, kwargs)

    def __post_init__(self) -> None:
        """Derive what the rewrite needs from its parameters (after they are set)."""

    # -- what subclasses call --------------------------------------------------------------
    def anchored(self) -> None:
        self._hits += 1

    def already_done(self) -> None:
        self._done += 1

    def recognised(self, body: list[cst.BaseStatement], mark: str | Callable[[cst.CSTNode], bool]) -> bool:
        """Is the rewrite's own earlier result in the body (a statement mentioning `mark`, or one
        `mark(statement)` accepts)? Then it is already done."""
        test = mark if callable(mark) else (lambda stmt: mentions(stmt, mark))
        if any(test(stmt) for stmt in body):
            self.already_done()
            return True
        return False

    def missing(self, what: str) -> None:
        """The function was found, but not the construct inside it: say what is there."""
        self._missing = what

    def rewrite_body(self, body: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
        raise NotImplementedError

    # -- traversal ---------------------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._class_stack.append(node.name.value)
        return self.cls is not None and node.name.value == self.cls and len(self._class_stack) == 1

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self._class_stack.pop()
        return original if _unchanged_class(original, updated) else updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def leave_FunctionDef(
        self, original: cst.FunctionDef, updated: cst.FunctionDef
    ) -> cst.FunctionDef:
        where = self._class_stack[-1] if self._class_stack else None
        if where != self.cls:
            return updated
        self._functions_seen.append(updated.name.value)
        if updated.name.value != self.func or not isinstance(updated.body, cst.IndentedBlock):
            return updated
        old_body = list(updated.body.body)
        new_body = bind_args(updated, old_body, self.rewrite_body(old_body), self)
        if len(new_body) == len(old_body) and all(a is b for a, b in zip(new_body, old_body, strict=True)):
            return updated  # nothing to do (e.g. already done): the same object, not a copy
        return updated.with_changes(body=updated.body.with_changes(body=new_body))

    # -- entry point -------------------------------------------------------------------------
    def where(self) -> str:
        return f"{self.cls}.{self.func}" if self.cls else f"function {self.func}"

    def duplicates(self, module: cst.Module) -> str | None:
        """Why the anchor is ambiguous (defined more than once at its level), or None."""

        def named(body, kind, name):
            return [s for s in body if isinstance(s, kind) and s.name.value == name and not _is_accessor(s)]

        if self.cls is None:
            found = named(module.body, cst.FunctionDef, self.func)
            return f"function {self.func} is defined {len(found)} times" if len(found) > 1 else None
        classes = named(module.body, cst.ClassDef, self.cls)
        if len(classes) > 1:
            return f"class {self.cls} is defined {len(classes)} times"
        if classes and isinstance(classes[0].body, cst.IndentedBlock):
            found = named(classes[0].body.body, cst.FunctionDef, self.func)
            if len(found) > 1:
                return f"{self.cls}.{self.func} is defined {len(found)} times"
        return None

    def apply(self, module: cst.Module, path: str) -> cst.Module:
        twice = self.duplicates(module)
        if twice is not None:
            raise AnchorError(
                f"the {type(self).__name__} rewrite's anchor is ambiguous: {twice}",
                file=path,
                construct=f"{self.where()} defined once: {self.construct}",
                found=twice,
                fix="Python keeps only the last definition: remove the others (or rename them), "
                "then run porter again, or port this point by hand",
            )
        self._module = module
        # Simple statements cannot hold the anchor: they are handed back untouched (the same
        # objects), which spares their traversal and lets the workspace reprint only what
        # changed.
        body = [s if isinstance(s, cst.SimpleStatementLine) else _visited(s, self) for s in module.body]
        result = module.with_changes(body=body)
        if self._hits or self._done:
            return result
        if self.func not in self._functions_seen:
            if self.cls and not self._functions_seen and not any(
                isinstance(s, cst.ClassDef) and s.name.value == self.cls for s in module.body
            ):
                classes = [s.name.value for s in module.body if isinstance(s, cst.ClassDef)]
                found = "classes: " + (", ".join(classes) or "none")
            else:
                found = "functions: " + (", ".join(self._functions_seen) or "none")
            found = f"no {self.where()}; {found}"
        else:
            found = self._missing or f"{self.where()} exists but does not have that shape"
        raise AnchorError(
            f"cannot find what the {type(self).__name__} rewrite is anchored on",
            file=path,
            construct=f"{self.where()}: {self.construct}",
            found=found,
            fix="this tree differs from the variants porter knows; run `porter inspect` and "
            "port this point by hand, or report the variant",
        )


def _loads(stmts: Sequence[cst.CSTNode], name: str) -> bool:
    """Is `name` read as a plain variable (not as an attribute or keyword) in the statements?"""
    for stmt in stmts:
        names = findall(stmt, m.Name(name))
        if not names:
            continue
        excluded = {id(a.attr) for a in findall(stmt, m.Attribute(attr=m.Name(name)))}
        excluded |= {id(a.keyword) for a in findall(stmt, m.Arg(keyword=m.Name(name)))}
        if any(id(n) not in excluded for n in names):
            return True
    return False


def _binds(func: cst.FunctionDef, body: Sequence[cst.CSTNode], name: str) -> bool:
    params = [*func.params.params, *func.params.posonly_params, *func.params.kwonly_params]
    if any(p.name.value == name for p in params) or name in top_level_names(body):
        return True
    return any(
        isinstance(t.target, cst.Name) and t.target.value == name
        for stmt in body for assign in findall(stmt, m.Assign()) for t in assign.targets
    )


def bind_args(func: cst.FunctionDef, old_body, new_body, rewrite) -> list:
    """Bind `args = get_args()` first in a function where a rewrite's new code reads `args`
    but the function does not bind it (e.g. it calls its arguments `cfg`)."""
    added = [s for s in new_body if not any(s is o for o in old_body)]
    if not added or not _loads(added, "args") or _binds(func, new_body, "args"):
        return new_body
    names = top_level_names(rewrite._module) if rewrite._module is not None else set()
    if _loads(old_body, "args") or "args" in names:
        return new_body  # the function reads some other `args` already: leave it to that
    if "get_args" not in names:
        rewrite.missing(f"{func.name.value} does not bind `args` and the module has no get_args to bind it with")
        rewrite._hits = rewrite._done = 0
        return old_body
    at = 1 if new_body and is_docstring(new_body[0]) else 0
    return [*new_body[:at], *statements("args = get_args()"), *new_body[at:]]


def _visited(stmt: cst.BaseStatement, rewrite: Rewrite) -> cst.BaseStatement:
    """A top-level statement after the rewrite's visit: the same object when it changed nothing.

    Functions and classes come back as themselves when untouched (leave_FunctionDef,
    leave_ClassDef); libcst's traversal rebuilds any other compound statement (`try:` around
    imports, `if` blocks) as an equal copy, which is then dropped for the original.
    """
    new = stmt.visit(rewrite)
    if new is stmt or not isinstance(new, cst.CSTNode) or isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
        return new
    if not new.deep_equals(stmt):
        return new
    return stmt


def _unchanged_class(original: cst.ClassDef, updated: cst.ClassDef) -> bool:
    """Did a rewrite's visit of a class change nothing? Its methods come back as the same
    objects when no rewrite touched them; libcst's traversal rebuilds everything else in the
    class as equal copies. Handing back the original then lets the workspace see that no
    statement changed (and print nothing)."""
    if not isinstance(original.body, cst.IndentedBlock) or not isinstance(updated.body, cst.IndentedBlock):
        return original.deep_equals(updated)
    old, new = list(original.body.body), list(updated.body.body)
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a is b:
            continue
        if isinstance(a, cst.FunctionDef) or not a.deep_equals(b):
            return False
    return original.with_changes(body=original.body.with_changes(body=[])).deep_equals(
        updated.with_changes(body=updated.body.with_changes(body=[]))
    )


def is_docstring(stmt: cst.CSTNode) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _is_accessor(node: cst.CSTNode) -> bool:
    """A property setter/deleter (`@x.setter`), which legitimately reuses a method's name."""
    return isinstance(node, cst.FunctionDef) and any(
        isinstance(d.decorator, cst.Attribute) and d.decorator.attr.value in ("setter", "deleter")
        for d in node.decorators
    )


class ModuleRewrite(cst.CSTTransformer):
    """Base of rewrites of a module's top-level statements (imports, exports); parameters
    are declared as Rewrite's are."""

    construct: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        bind_parameters(self, (ModuleRewrite,), args, kwargs)

    def __post_init__(self) -> None:
        """Derive what the rewrite needs from its parameters (after they are set)."""

    def rewrite_module_body(self, body: list[cst.BaseStatement], path: str) -> list[cst.BaseStatement]:
        raise NotImplementedError

    def scope(self) -> tuple:
        """Where it may change code (porter.checks): the top-level imports, unless it says otherwise."""
        return ("imports",)

    def apply(self, module: cst.Module, path: str) -> cst.Module:
        return module.with_changes(body=self.rewrite_module_body(list(module.body), path))

    def fail(self, path: str, found: str) -> AnchorError:
        return AnchorError(
            f"cannot find what the {type(self).__name__} rewrite is anchored on",
            file=path,
            construct=self.construct,
            found=found,
            fix="this tree differs from the variants porter knows; run `porter inspect` and "
            "port this point by hand, or report the variant",
        )


def replace_each(stmt, find, build):
    """Replace, one at a time, every node `find(stmt)` returns, until it returns None.

    `find` must not return a node it has already rewritten (the rewritten form must not
    match), so the loop ends. Returns the new statement and how many nodes were replaced.
    """
    count = 0
    while True:
        node = find(stmt)
        if node is None:
            return stmt, count
        stmt = stmt.deep_replace(node, build(node))
        count += 1


def unguarded_add(stmt: cst.CSTNode, name: str) -> cst.BinaryOperation | None:
    """The first `x + name` in stmt not already guarded by a conditional expression on name.

    Both guards count: porter's `x if name is None else x + name` and the tree's own
    `x + name if name is not None else x` (Habana's bias-dropout-add).
    """
    guarded = set()
    for e in findall(stmt, m.IfExp(test=m.Comparison(left=m.Name(name)))):
        guarded.add(id(e.orelse))
        guarded.add(id(e.body))
    adds = findall(stmt, m.BinaryOperation(operator=m.Add(), right=m.Name(name)))
    return next((b for b in adds if id(b) not in guarded), None)


def none_safe_add(binop: cst.BinaryOperation) -> cst.IfExp:
    """`x + b` -> `x if b is None else x + b`."""
    name = binop.right.value
    return expression(f"X if {name} is None else X + {name}").with_changes(body=binop.left, orelse=binop)


class _Indent(cst.CSTTransformer):
    """Deepen backslash continuation lines, which libcst keeps at their absolute column."""

    def __init__(self, extra: str) -> None:
        super().__init__()
        self.extra = extra

    def leave_SimpleWhitespace(self, original, updated):
        if "\\\n" in updated.value:
            return updated.with_changes(value=updated.value.replace("\\\n", "\\\n" + self.extra))
        return updated


def indent_continuations(stmt: cst.BaseStatement, extra: str = "    ") -> cst.BaseStatement:
    """A statement moved one block deeper, with its backslash continuations moved too."""
    if not any("\\\n" in w.value for w in findall(stmt, m.SimpleWhitespace())):
        return stmt  # nothing to move: spare the traversal
    return stmt.visit(_Indent(extra))
