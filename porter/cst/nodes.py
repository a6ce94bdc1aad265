"""Small libcst node helpers every room shares: profile, edits and verify read code with these.

Text of a node, dotted names, parsing snippets, keyword arguments, what a statement binds.
Neutral: nothing here knows about Megatron, a spec or a rewrite.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall

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


def insert_before(body: Sequence[cst.BaseStatement], at: int, new: Sequence[cst.BaseStatement]) -> list:
    """body with the statements `new` before body[at]: the blank lines above body[at] go above
    them, its comments stay with it."""
    first = body[at]
    lines = list(first.leading_lines)
    blank = 0
    while blank < len(lines) and lines[blank].comment is None:
        blank += 1
    new = list(new)
    new[0] = new[0].with_changes(leading_lines=[*lines[:blank], *new[0].leading_lines])
    return [*body[:at], *new, first.with_changes(leading_lines=lines[blank:]), *body[at + 1:]]


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


def uses_values(block: cst.CSTNode, name: str) -> bool:
    """Does the block use `name`'s values (not only its .shape, .dtype or .device)?"""
    uses = len(findall(block, m.Name(name)))
    meta = len(findall(block, m.Attribute(value=m.Name(name), attr=m.OneOf(m.Name("shape"), m.Name("dtype"),
                                                                            m.Name("device")))))
    return uses > meta


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


def _suites(stmt: cst.BaseStatement):
    """The blocks of a top-level if/elif/else, try/except/else/finally or with (not of defs and classes)."""
    if isinstance(stmt, cst.If):
        yield stmt.body
        if isinstance(stmt.orelse, cst.Else):
            yield stmt.orelse.body
        elif stmt.orelse is not None:  # elif
            yield from _suites(stmt.orelse)
    elif isinstance(stmt, (cst.Try, cst.TryStar)):
        yield stmt.body
        yield from (handler.body for handler in stmt.handlers)
        yield from (block.body for block in (stmt.orelse, stmt.finalbody) if block is not None)
    elif isinstance(stmt, cst.With):
        yield stmt.body


def top_level_names(module: cst.Module | Sequence[cst.BaseStatement], assignments: bool = True) -> set[str]:
    """Names a module (or a list of top-level statements) binds at top level: imports (also
    inside top-level if/try/with; `*` for a star import), defs, classes and, unless told not to,
    plain assignments. Looks at the top level only, never into classes or functions."""
    names: set[str] = set()

    def small(statements) -> None:
        for node in statements:
            if isinstance(node, (cst.Import, cst.ImportFrom)):
                if isinstance(node.names, cst.ImportStar):
                    names.add("*")
                    continue
                for alias in node.names:
                    target = alias.asname.name if alias.asname else alias.name
                    names.add(code(target).split(".")[0])
            elif isinstance(node, cst.Assign) and assignments:
                names.update(t.target.value for t in node.targets if isinstance(t.target, cst.Name))

    def walk(body) -> None:
        for stmt in body:
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                names.add(stmt.name.value)
            elif isinstance(stmt, cst.SimpleStatementLine):
                small(stmt.body)
            for suite in _suites(stmt):
                if isinstance(suite, cst.SimpleStatementSuite):  # `if x: import y`
                    small(suite.body)
                else:
                    walk(suite.body)

    walk(module.body if isinstance(module, cst.Module) else module)
    return names


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


def self_assign_calls(stmt: cst.CSTNode, attrs: set[str], callees: tuple[str, ...] = ()) -> list[tuple[str, cst.Call]]:
    """(attr, call) for every `self.attr = Call(...)` inside stmt, attr in attrs or the
    callee's name (its last dotted part) in callees."""
    found = []
    for assign in findall(stmt, m.Assign(value=m.Call())):
        if len(assign.targets) != 1:
            continue
        target = assign.targets[0].target
        if not (isinstance(target, cst.Attribute) and dotted(target.value) == "self"):
            continue
        callee = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
        if target.attr.value in attrs or callee in callees:
            found.append((target.attr.value, assign.value))
    return found
