"""What the tree's transformer does with a linear's bias: where a bias switched off would break.

A bias that is None must be safe wherever the tree adds or expands it by hand; these detectors
find the places that are not (the plan then makes them safe), and the linears a no-bias
switch missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import code, dotted


@dataclass(frozen=True)
class BiasFacts:
    mlp_bias_unguarded: bool  # ParallelMLP.forward adds its first projection's bias by hand, unchecked
    expand_as_unguarded: bool  # the layer forward calls bias.expand_as(...) without a None check
    plain_bias_helpers: tuple[str, ...]  # bias-dropout-add helpers whose bias is typed a plain Tensor
    gaps: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (class, linears without `bias=`) where others pass it
    # (top-level function, the no-bias dest its `if` tests): a function outside the model's classes
    # that decides a bias by the no-bias flag (microsoft's FPDT attention builds its QKV bias under
    # `if args.add_bias_linear:`), which a site's own switch cannot reach
    flag_functions: tuple[tuple[str, str], ...] = ()

    @property
    def none_safe(self) -> bool:
        return not self.expand_as_unguarded and not self.plain_bias_helpers and not self.mlp_bias_unguarded


def detect(parsed, dests: tuple[str, ...] = ()) -> BiasFacts | None:
    """`dests`: the dests of the no-bias switch's spellings (`no_bias`, `add_bias_linear`)."""
    transformer = parsed("megatron/model/transformer.py")
    if transformer is None:
        return None
    return BiasFacts(mlp_bias_unguarded(transformer), expand_as_unguarded(transformer),
                     plain_bias_helpers(transformer), bias_gaps(transformer), flag_functions(transformer, dests))


def flag_functions(transformer: cst.Module, dests: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(function, dest) for each top-level function with an `if` that tests one of the dests
    (`if args.add_bias_linear:`, `if not config.no_bias:`)."""
    out = []
    for stmt in transformer.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        for node in findall(stmt, m.If()):
            test = node.test.expression if m.matches(node.test, m.UnaryOperation(operator=m.Not())) else node.test
            dest = test.attr.value if isinstance(test, cst.Attribute) else None
            if dest in dests and (stmt.name.value, dest) not in out:
                out.append((stmt.name.value, dest))
    return tuple(out)


class _GuardedUses(cst.CSTVisitor):
    """Uses of a bias `b` (`b.expand_as(...)`, `x + b`), each with whether an enclosing
    `if` or conditional expression tests `b`."""

    def __init__(self, names: set[str] | None = None) -> None:
        self.names = names  # None: any name (for expand_as)
        self.tests: list[cst.BaseExpression] = []
        self.expand_as: list[tuple[str, bool]] = []
        self.adds: list[tuple[str, bool]] = []

    def _guarded(self, name: str) -> bool:
        return any(findall(test, m.Name(name)) for test in self.tests)

    def visit_If(self, node):
        self.tests.append(node.test)

    def leave_If(self, node):
        self.tests.pop()

    def visit_IfExp(self, node):
        self.tests.append(node.test)

    def leave_IfExp(self, node):
        self.tests.pop()

    def visit_Call(self, node):
        if m.matches(node.func, m.Attribute(value=m.Name(), attr=m.Name("expand_as"))):
            name = node.func.value.value
            self.expand_as.append((name, self._guarded(name)))

    def visit_BinaryOperation(self, node):
        if isinstance(node.operator, cst.Add) and isinstance(node.right, cst.Name):
            name = node.right.value
            if self.names is None or name in self.names:
                self.adds.append((name, self._guarded(name)))


def mlp_bias_unguarded(transformer: cst.Module) -> bool:
    """ParallelMLP.forward adds its first projection's bias by hand, with no None check."""
    forward = function_named(class_named(transformer, "ParallelMLP"), "forward")
    if forward is None:
        return False
    unpacked = m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call(func=m.Attribute(value=m.Name("self"))))
    biases = set()
    for assign in findall(forward, unpacked):
        elements = assign.targets[0].target.elements
        if len(elements) == 2 and isinstance(elements[1].value, cst.Name):
            biases.add(elements[1].value.value)
    visitor = _GuardedUses(biases)
    forward.visit(visitor)
    return any(not guarded for _, guarded in visitor.adds)


def expand_as_unguarded(transformer: cst.Module) -> bool:
    forward = function_named(class_named(transformer, "ParallelTransformerLayer"), "forward")
    if forward is None:
        return False
    visitor = _GuardedUses()
    forward.visit(visitor)
    return any(not guarded for _, guarded in visitor.expand_as)


def plain_bias_helpers(transformer: cst.Module) -> tuple[str, ...]:
    """Top-level `bias_dropout_add*` helpers with a `bias` parameter not typed Optional.

    Typed by the function's first `# type:` comment (on the def line, above a statement,
    after a docstring: where TorchScript finds it) or by an annotation; an untyped bias is
    not Optional either (TorchScript takes it for a Tensor). OptionalBiasParameter retypes
    the comments and refuses what it cannot retype.
    """
    found = []
    for stmt in transformer.body:
        if not isinstance(stmt, cst.FunctionDef) or not stmt.name.value.startswith("bias_dropout_add"):
            continue
        params = [p.name.value for p in stmt.params.params]
        if "bias" not in params or not isinstance(stmt.body, cst.IndentedBlock) or not stmt.body.body:
            continue
        index = params.index("bias")
        annotation = stmt.params.params[index].annotation
        comments = [stmt.body.header.comment] + [line.comment for s in stmt.body.body for line in s.leading_lines]
        types = next((c.value for c in comments if c is not None and c.value.startswith("# type:")
                      and "ignore" not in c.value), None)
        if annotation is not None:
            optional = "Optional" in code(annotation.annotation)
        elif types is not None:
            parts = [t.strip() for t in types.partition("(")[2].partition(")")[0].split(",")]
            optional = index < len(parts) and parts[index].startswith("Optional")
        else:
            optional = False
        if not optional:
            found.append(stmt.name.value)
    return tuple(found)


def bias_gaps(transformer: cst.Module) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """In ParallelMLP and ParallelAttention, the tensor-parallel linears built without `bias=`
    when the class's other linears pass one: a no-bias switch that missed them."""
    out = []
    for cls_name in ("ParallelMLP", "ParallelAttention"):
        init = function_named(class_named(transformer, cls_name), "__init__")
        if init is None:
            continue
        with_bias, without = [], []
        for assign in findall(init, m.Assign(value=m.Call())):
            callee = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
            target = assign.targets[0].target
            if callee not in ("ColumnParallelLinear", "RowParallelLinear") or not isinstance(target, cst.Attribute):
                continue
            has = any(a.keyword is not None and a.keyword.value == "bias" for a in assign.value.args)
            (with_bias if has else without).append(target.attr.value)
        if with_bias and without:
            out.append((cls_name, tuple(without)))
    return tuple(out)
