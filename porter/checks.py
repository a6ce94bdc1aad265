"""Checks of rendered code before anything is written: it compiles, and each edit changed
only what it is anchored on.

The scope check runs after every single edit and compares syntax trees: the file's libcst
tree before the edit and after it. Every rewrite declares where it may change code: the
body of one function (a method of a top-level class, or a top-level function), the module's
top-level imports, or the value of one top-level assignment. Outside that, the two trees must
be equal node for node — libcst's trees are concrete, so comments and formatting count too.
For a function scope that is: every other top-level statement; the anchored class's name,
bases, decorators and every other member; the function's name, parameters (unless the scope
holds them), decorators and return annotation. For
the imports scope: every existing top-level statement, in order, where an edit may only
insert import statements, add names at the end of a `from X import ...` and, in the handlers
of a top-level `try:`, turn a `NAME = None` (a failed import's fallback) into an import. So an edit
that strays (into another class or method with the same name, another edit's function, a
signature, a decorator, a module-level statement, an import it removes) is caught, whatever
its bug, and the port is refused with nothing written.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable

import libcst as cst

from porter.errors import PorterError

# A scope: ("function", class name or None, function name), ("parameters", class name or None,
# function name) (the function's body and its parameter list), ("imports",) or ("assignment",
# name): the value of one top-level `name = ...`.
Scope = tuple


def check_compiles(path: str, text: str) -> None:
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:  # a porter bug, never the user's: say so
        raise PorterError(
            f"internal error: porter produced code that does not compile in {path}: {exc}",
            file=path,
            construct="a rendered file that compiles",
            found=f"{exc.msg} at line {exc.lineno}",
            fix="nothing was written; please report this with `porter diff --debug` output",
        ) from exc


def _same(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    return a is b or a.deep_equals(b)


def _name(node: cst.CSTNode) -> str:
    name = getattr(node, "name", None)
    return f"{type(node).__name__} {name.value}" if isinstance(name, cst.Name) else type(node).__name__


_NO_BODY = cst.IndentedBlock(body=[])


_NO_PARAMS = cst.Parameters()


def _function_outside_body_same(a: cst.FunctionDef, b: cst.FunctionDef, params: bool = False) -> bool:
    if params:  # the scope holds the parameter list too
        a, b = a.with_changes(params=_NO_PARAMS), b.with_changes(params=_NO_PARAMS)
    return a.with_changes(body=_NO_BODY).deep_equals(b.with_changes(body=_NO_BODY))


def _function_scope(old: list, new: list, cls: str | None, func: str, params: bool = False) -> list[str]:
    if len(old) != len(new):
        return [f"{len(new) - len(old):+d} top-level statements"]
    problems = []
    for a, b in zip(old, new, strict=True):
        if _same(a, b):
            continue
        if cls is None and isinstance(a, cst.FunctionDef) and a.name.value == func and isinstance(b, cst.FunctionDef):
            if not _function_outside_body_same(a, b, params):
                problems.append(f"the signature or decorators of {func}")
            continue
        if cls is not None and isinstance(a, cst.ClassDef) and a.name.value == cls and isinstance(b, cst.ClassDef):
            if not a.with_changes(body=_NO_BODY).deep_equals(b.with_changes(body=_NO_BODY)):
                problems.append(f"the class statement of {cls}")
            members_a, members_b = list(a.body.body), list(b.body.body)
            if len(members_a) != len(members_b):
                problems.append(f"{len(members_b) - len(members_a):+d} members of class {cls}")
                continue
            for x, y in zip(members_a, members_b, strict=True):
                if _same(x, y):
                    continue
                if isinstance(x, cst.FunctionDef) and x.name.value == func and isinstance(y, cst.FunctionDef):
                    if not _function_outside_body_same(x, y, params):
                        problems.append(f"the signature or decorators of {cls}.{func}")
                    continue
                problems.append(f"{cls}'s member {_name(x)}")
            continue
        problems.append(_name(a))
    return problems


def _extends(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    """b is the top-level `from X import ...` a, with names added at the end."""
    if not (isinstance(a, cst.SimpleStatementLine) and isinstance(b, cst.SimpleStatementLine)):
        return False
    if len(a.body) != 1 or len(b.body) != 1:
        return False
    x, y = a.body[0], b.body[0]
    if not (isinstance(x, cst.ImportFrom) and isinstance(y, cst.ImportFrom)):
        return False
    if isinstance(x.names, cst.ImportStar) or isinstance(y.names, cst.ImportStar):
        return False
    if len(y.names) < len(x.names) or len(x.relative) != len(y.relative) or not _same_optional(x.module, y.module):
        return False
    if not (a.trailing_whitespace.deep_equals(b.trailing_whitespace)
            and len(a.leading_lines) == len(b.leading_lines)
            and all(p.deep_equals(q) for p, q in zip(a.leading_lines, b.leading_lines, strict=True))):
        return False
    return all(
        p.name.deep_equals(q.name) and _same_optional(p.asname, q.asname) for p, q in zip(x.names, y.names, strict=False)
    )


def _same_optional(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.deep_equals(b))


def _is_import(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in node.body
    )


def _none_to_import(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    """b is the top-level `try:` a, where handler lines binding a name to None now import instead."""
    if not (isinstance(a, cst.Try) and isinstance(b, cst.Try)) or len(a.handlers) != len(b.handlers):
        return False
    if not (a.body.deep_equals(b.body) and _same_optional(a.orelse, b.orelse)
            and _same_optional(a.finalbody, b.finalbody) and a.whitespace_before_colon.deep_equals(b.whitespace_before_colon)
            and len(a.leading_lines) == len(b.leading_lines)
            and all(p.deep_equals(q) for p, q in zip(a.leading_lines, b.leading_lines, strict=True))):
        return False
    for x, y in zip(a.handlers, b.handlers, strict=True):
        if not x.with_changes(body=_NO_BODY).deep_equals(y.with_changes(body=_NO_BODY)):
            return False
        lines_x, lines_y = list(x.body.body), list(y.body.body)
        if len(lines_x) != len(lines_y) or not x.body.with_changes(body=[]).deep_equals(y.body.with_changes(body=[])):
            return False
        for p, q in zip(lines_x, lines_y, strict=True):
            if _same(p, q):
                continue
            if not (isinstance(p, cst.SimpleStatementLine) and isinstance(q, cst.SimpleStatementLine)
                    and len(p.body) == len(q.body)
                    and p.with_changes(body=[]).deep_equals(q.with_changes(body=[]))):
                return False
            for u, v in zip(p.body, q.body, strict=True):
                if _same(u, v):
                    continue
                binds_none = (isinstance(u, cst.Assign) and isinstance(u.value, cst.Name) and u.value.value == "None")
                if not (binds_none and isinstance(v, cst.ImportFrom)):
                    return False
    return True


def _imports_scope(old: list, new: list) -> list[str]:
    problems = []
    pending = list(old)
    for node in new:
        if pending and (_same(pending[0], node) or _extends(pending[0], node) or _none_to_import(pending[0], node)):
            pending.pop(0)
        elif not _is_import(node):
            problems.append(f"{_name(node)} (not an import)")
    problems.extend(f"{_name(node)}, removed or changed" for node in pending)
    return problems


def scope_violations(before: cst.Module, after: cst.Module, scope: Scope) -> list[str]:
    """What an edit changed outside its scope; empty when nothing."""
    problems = []
    if not before.with_changes(body=[]).deep_equals(after.with_changes(body=[])):
        problems.append("the module's header or footer comments")
    if scope[0] == "imports":
        return problems + _imports_scope(list(before.body), list(after.body))
    if scope[0] == "assignment":
        return problems + _assignment_scope(list(before.body), list(after.body), scope[1])
    return problems + _function_scope(list(before.body), list(after.body), scope[1], scope[2], scope[0] == "parameters")


def _assigns(node: cst.CSTNode, name: str) -> bool:
    return (isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1 and isinstance(node.body[0], cst.Assign)
            and [_target_name(t) for t in node.body[0].targets] == [name])


def _target_name(target: cst.AssignTarget) -> str | None:
    return target.target.value if isinstance(target.target, cst.Name) else None


def _assignment_scope(old: list, new: list, name: str) -> list[str]:
    """Only the value of the top-level `name = ...` changed."""
    if len(old) != len(new):
        return [f"{len(new) - len(old):+d} top-level statements"]
    problems = []
    for a, b in zip(old, new, strict=True):
        if _same(a, b):
            continue
        if _assigns(a, name) and _assigns(b, name):
            x, y = a.body[0], b.body[0]
            if a.with_changes(body=[]).deep_equals(b.with_changes(body=[])) and \
                    x.with_changes(value=cst.Name("_")).deep_equals(y.with_changes(value=cst.Name("_"))):
                continue
        problems.append(_name(a))
    return problems


def describe(scope: Scope) -> str:
    if scope[0] == "imports":
        return "top-level imports"
    if scope[0] == "assignment":
        return f"the value of the top-level `{scope[1]} = ...`"
    where = f"{scope[1]}.{scope[2]}" if scope[1] else f"function {scope[2]}"
    return where + " (and its parameters)" if scope[0] == "parameters" else where


def check_scope(path: str, before: cst.Module, after: cst.Module, scope: Scope, edit: str) -> None:
    problems = scope_violations(before, after, scope)
    if problems:
        raise PorterError(
            f"internal error: porter's edit {edit} of {path} changed code outside what it is anchored on",
            file=path,
            construct=f"changes only inside {describe(scope)}",
            found="changed: " + "; ".join(problems[:5]),
            fix="nothing was written; please report this with `porter diff --debug` output",
        )


# -- imports of the new code ---------------------------------------------------------------------


def _module_file(tree, path: str, node: ast.ImportFrom) -> str | None:
    """The tree file an import refers to, or None when it is not the tree's (torch, ...).

    Raises when the import names a module of one of the tree's own packages that is not
    there (e.g. megatron.model.utils in a tree without it)."""
    if node.level:
        package = path.split("/")[:-1]
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        parts = package + (node.module.split(".") if node.module else [])
    else:
        parts = node.module.split(".") if node.module else []
    base = "/".join(parts)
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if tree.exists(candidate):
            return candidate
    if parts and (node.level or tree.exists(f"{parts[0]}/__init__.py") or tree.exists(f"{parts[0]}.py")):
        raise PorterError(
            f"the port's {path} imports from {'.' * node.level}{node.module or ''}, which this tree does not have",
            file=f"{base}.py",
            construct=f"the module {base}.py (or {base}/__init__.py)",
            found="no such file",
            fix="this tree keeps that code elsewhere: port by hand, or report the variant (nothing was written)",
        )
    return None


def _top_level_names(module: ast.Module) -> set[str] | None:
    """Names a module binds at top level (also inside top-level if/try); None with `import *`."""
    names: set[str] = set()
    for stmt in module.body:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if any(a.name == "*" for a in node.names):
                    return None
                names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def check_imports(tree, changes) -> None:
    """Every name porter's new code imports from the tree is defined there.

    porter's templates and rewrites import the tree's own classes and functions
    (ParallelTransformerLayerPipe, CrossEntropy, pretrain_gpt's forward_step, ...). A tree
    that names one differently would give a port that fails at import time; it is refused
    here instead, naming the name and the file. `tree` holds the port (SourceTree.with_changes).
    """
    defined_in: dict[str, set[str] | None] = {}  # target file -> its top-level names
    for change in changes:
        new = ast.parse(change.text)
        old = set() if change.created else {ast.dump(n) for n in ast.walk(ast.parse(change.before_text))
                                            if isinstance(n, ast.ImportFrom)}
        for node in ast.walk(new):
            if not isinstance(node, ast.ImportFrom) or ast.dump(node) in old:
                continue
            target = _module_file(tree, change.path, node)
            if target is None:
                continue
            if target not in defined_in:
                defined_in[target] = _top_level_names(ast.parse(tree.file(target).text))
            defined = defined_in[target]
            if defined is None:
                continue
            package = target[: -len("/__init__.py")] if target.endswith("/__init__.py") else None
            for alias in node.names:
                if alias.name in defined or (package and tree.exists(f"{package}/{alias.name}.py")) or (
                    package and tree.exists(f"{package}/{alias.name}/__init__.py")
                ):
                    continue
                raise PorterError(
                    f"the port's {change.path} imports {alias.name} from {target}, which does not define it",
                    file=target,
                    construct=f"{alias.name} defined at the top level of {target}",
                    found="top-level names: " + ", ".join(sorted(n for n in defined if not n.startswith("_"))[:12]),
                    fix=f"this tree names {alias.name} differently: port by hand, or report the variant "
                    "(nothing was written)",
                )


# -- names the new code reads -------------------------------------------------------------------

_BUILTINS = set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__package__", "__loader__",
                                  "__builtins__", "__path__", "__annotations__", "__dict__", "__class__"}


def unbound_names(text: str, path: str) -> set[str] | None:
    """Names the code reads that nothing binds: not a builtin, not bound at module level,
    not local to the function (or class) that reads them. None when the module imports `*`."""
    table = symtable.symtable(text, path, "exec")
    module = {s.get_name() for s in table.get_symbols()
              if s.is_assigned() or s.is_imported() or s.is_namespace() or s.is_parameter()}
    if "*" in module or re.search(r"^\s*from\s+\S+\s+import\s+\*", text, re.M):
        return None
    unbound: set[str] = set()
    pending = [table]
    while pending:
        scope = pending.pop()
        pending.extend(scope.get_children())
        for symbol in scope.get_symbols():
            name = symbol.get_name()
            if not symbol.is_referenced() or name in _BUILTINS or name in module:
                continue
            if scope is table or symbol.is_global() or (scope.get_type() == "class" and not symbol.is_assigned()
                                                        and not symbol.is_imported()):
                unbound.add(name)
    return unbound


def check_names(path: str, before: str | None, after: str) -> None:
    """Refuse when porter's code reads a name the file does not bind (where it was fine before)."""
    new = unbound_names(after, path)
    if not new:
        return
    old = unbound_names(before, path) if before is not None else set()
    if old is None:
        return
    missing = sorted(new - old)
    if missing:
        raise PorterError(
            f"the port's {path} would read {', '.join(missing)}, which nothing in it binds",
            file=path,
            construct=f"{', '.join(missing)} imported or defined in {path}",
            found="no import or definition (in this tree the file may import it inside its functions, "
            "or not at all)",
            fix="this tree is laid out differently from the variants porter knows: port by hand, or report "
            "the variant (nothing was written)",
        )
