"""What every rewrite shares: finding its anchor by structure, and saying so when it can't.

A rewrite is a small `libcst` transformer that changes one function (or one class's
method) of one file. It descends only into the class and function it is anchored on
(`visit_*` returns False elsewhere), so a rewrite costs little more than the parse. Each one
recognises its own result: run on its own output it changes nothing, which is what makes
`porter apply` idempotent.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import ClassVar

import libcst as cst
import libcst.matchers as m

from porter.errors import AnchorError
from porter.find import findall

_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    """Source text of a node (without the surrounding file's indentation)."""
    return _EMPTY.code_for_node(node).strip()


def statements(source: str) -> list[cst.BaseStatement]:
    """Parse dedented source into a list of statements."""
    return list(cst.parse_module(textwrap.dedent(source).strip() + "\n").body)


def expression(source: str) -> cst.BaseExpression:
    return cst.parse_expression(source)


def comment_line(text: str) -> cst.EmptyLine:
    return cst.EmptyLine(comment=cst.Comment("# " + text))


def with_comment(stmt: cst.BaseStatement, text: str) -> cst.BaseStatement:
    """The statement with a `# text` line above it."""
    return stmt.with_changes(leading_lines=[*stmt.leading_lines, comment_line(text)])


def dotted(node: cst.BaseExpression) -> str | None:
    """'a.b.c' for Name/Attribute chains, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr.value}" if head else None
    return None


def self_attr_target(stmt: cst.BaseStatement) -> str | None:
    """For `self.x = ...` return 'x'."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        small = stmt.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            target = small.targets[0].target
            if isinstance(target, cst.Attribute) and dotted(target.value) == "self":
                return target.attr.value
    return None


def assigned_names(stmt: cst.CSTNode) -> set[str]:
    """Every plain name or self attribute assigned anywhere inside `stmt`."""
    names: set[str] = set()
    for assign in findall(stmt, m.Assign()):
        for target in assign.targets:
            for node in findall(target.target, m.Name() | m.Attribute()):
                name = dotted(node)
                if name:
                    names.add(name)
            name = dotted(target.target)
            if name:
                names.add(name)
    return names


def mentions(node: cst.CSTNode, name: str) -> bool:
    """Does `node` use the dotted name (e.g. 'self.position_embeddings') anywhere?"""
    for found in findall(node, m.Name() | m.Attribute()):
        if dotted(found) == name:
            return True
    return False


def contains_code(body: Sequence[cst.BaseStatement], stmt: cst.BaseStatement) -> bool:
    wanted = code(stmt)
    return any(code(s) == wanted for s in body)


def add_kwarg(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    """The call with `name=value` appended, in the call's own layout (one per line or not)."""
    args = list(call.args)
    new = cst.Arg(
        value=value,
        keyword=cst.Name(name),
        equal=cst.AssignEqual(
            whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
        ),
    )
    if not args:
        return call.with_changes(args=[new])
    last = args[-1]
    # The separator between arguments, as the call already writes it.
    separator: cst.BaseParenthesizableWhitespace = cst.SimpleWhitespace(" ")
    if len(args) > 1 and isinstance(args[-2].comma, cst.Comma):
        separator = args[-2].comma.whitespace_after
    if isinstance(last.comma, cst.Comma):  # trailing comma: it keeps closing the call
        args[-1] = last.with_changes(comma=last.comma.with_changes(whitespace_after=separator))
        new = new.with_changes(comma=last.comma)
    else:
        args[-1] = last.with_changes(
            comma=cst.Comma(whitespace_after=separator),
            whitespace_after_arg=cst.SimpleWhitespace(""),
        )
        new = new.with_changes(whitespace_after_arg=last.whitespace_after_arg)
    return call.with_changes(args=[*args, new])


def kwarg(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


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

    def __init__(self) -> None:
        super().__init__()
        self._class_stack: list[str] = []
        self._hits = 0
        self._done = 0
        self._functions_seen: list[str] = []
        self._missing: str | None = None

    # -- what subclasses call --------------------------------------------------------------
    def anchored(self) -> None:
        self._hits += 1

    def already_done(self) -> None:
        self._done += 1

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
        return updated

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
        new_body = self.rewrite_body(list(updated.body.body))
        return updated.with_changes(body=updated.body.with_changes(body=new_body))

    # -- entry point -------------------------------------------------------------------------
    def where(self) -> str:
        return f"{self.cls}.{self.func}" if self.cls else f"function {self.func}"

    def apply(self, module: cst.Module, path: str) -> cst.Module:
        # Simple statements cannot hold the anchor: they are handed back untouched (the same
        # objects), which spares their traversal and lets the workspace reprint only what
        # changed.
        body = [s if isinstance(s, cst.SimpleStatementLine) else s.visit(self) for s in module.body]
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


class ModuleRewrite(cst.CSTTransformer):
    """Base of rewrites of a module's top-level statements (imports, exports)."""

    construct: ClassVar[str] = ""

    def rewrite_module_body(self, body: list[cst.BaseStatement], path: str) -> list[cst.BaseStatement]:
        raise NotImplementedError

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


def negate(test: str) -> str:
    """The negation of a feature test, written the way a person would."""
    node = expression(test)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not):
        return code(node.expression)
    if isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
        op = node.comparisons[0].operator
        flipped = {cst.Equal: "!=", cst.NotEqual: "==", cst.Is: "is not", cst.IsNot: "is"}.get(type(op))
        if flipped:
            return f"{code(node.left)} {flipped} {code(node.comparisons[0].comparator)}"
    if isinstance(node, (cst.Name, cst.Attribute)):
        return f"not {test}"
    return f"not ({test})"


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
