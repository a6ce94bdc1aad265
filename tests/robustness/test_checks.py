"""The checks made in memory before anything is written: a rewrite that strays outside its
anchor, or a port that a second apply would change again, is refused and nothing written."""

from __future__ import annotations

import textwrap
from functools import partial

import libcst as cst

from porter.checks import scope_violations
from porter.cst.nodes import statements
from porter.differences.gated_mlp import GatedMLP
from porter.differences.gated_mlp.rewrites import SetActivation
from porter.edits.base import Rewrite
from tests.helpers.trees import diff_snapshots, snapshot

BEFORE = textwrap.dedent('''
    import torch
    from megatron.model import LayerNorm


    class MLP(Module):
        def __init__(self):
            self.act = gelu

        @property
        def width(self, scale=1):
            return 4 * scale


    def helper(x):
        return x + 1
''')

MLP_INIT = ("function", "MLP", "__init__")
HELPER = ("function", None, "helper")
IMPORTS = ("imports",)


def violations(after: str, scope) -> list[str]:
    return scope_violations(cst.parse_module(BEFORE), cst.parse_module(after), scope)


def changed(old, new):
    assert old in BEFORE
    return BEFORE.replace(old, new)


def test_a_change_inside_the_anchored_function_passes():
    after = changed("self.act = gelu", "self.act = gelu\n        if swiglu:\n            self.act = swiglu")
    assert violations(after, MLP_INIT) == []
    assert violations(changed("return x + 1", "return x + 2"), HELPER) == []


def test_formatting_and_comments_outside_count():
    assert violations(changed("return x + 1", "return (x +\n            1)"), MLP_INIT)
    assert violations(changed("def helper(x):", "def helper(x):  # one more"), MLP_INIT)
    assert violations("# header\n" + BEFORE, MLP_INIT)


def test_a_change_in_another_method_is_caught():
    assert violations(changed("return 4 * scale", "return 8 * scale"), MLP_INIT) == ["MLP's member FunctionDef width"]


def test_a_changed_signature_or_decorator_is_caught():
    assert violations(changed("def __init__(self):", "def __init__(self, bias=False):"), MLP_INIT)
    assert violations(changed("    @property\n", "    @cached_property\n"), MLP_INIT)
    assert violations(changed("class MLP(Module):", "class MLP(Module, Mixin):"), MLP_INIT)
    assert violations(changed("def helper(x):", "def helper(x, y=0):"), HELPER)


def test_a_module_level_change_is_caught():
    assert violations(BEFORE + "\nDEBUG = True\n", MLP_INIT)
    assert violations(BEFORE + "\nDEBUG = True\n", IMPORTS)
    assert violations(changed("return x + 1", "return x + 2"), IMPORTS)


def test_imports_may_be_added_and_extended_not_removed():
    added = changed("import torch\n", "import torch\nfrom megatron.model.swiglu import swiglu\n")
    extended = changed("from megatron.model import LayerNorm", "from megatron.model import LayerNorm, RMSNorm")
    reordered = changed("from megatron.model import LayerNorm", "from megatron.model import RMSNorm, LayerNorm")
    removed = changed("import torch\n", "")
    assert violations(added, IMPORTS) == []
    assert violations(extended, IMPORTS) == []
    assert violations(reordered, IMPORTS)
    assert violations(removed, IMPORTS)
    assert violations(added, MLP_INIT)  # not in a function's scope


class StrayingActivation(SetActivation):
    """A buggy rewrite: does SetActivation's job and also edits another class's __init__."""

    def visit_ClassDef(self, node):
        self._class_stack.append(node.name.value)
        return len(self._class_stack) == 1 and node.name.value in (self.cls, "ParallelAttention")

    def leave_FunctionDef(self, original, updated):
        if self._class_stack and self._class_stack[-1] == "ParallelAttention" and updated.name.value == "__init__":
            body = [*updated.body.body, *statements("self.debug = True")]
            return updated.with_changes(body=updated.body.with_changes(body=body))
        return super().leave_FunctionDef(original, updated)


class NeverDone(Rewrite):
    """A buggy rewrite: appends a statement every time (it never recognises its result)."""

    cls = "ParallelMLP"
    func = "__init__"

    def rewrite_body(self, body):
        self.anchored()
        return [*body, cst.parse_statement("self.calls = getattr(self, 'calls', 0) + 1\n")]


def _break_the_planner(monkeypatch, rewrite):
    original = GatedMLP.plan

    def plan(self, p):
        original(self, p)
        p.edit("megatron/model/transformer.py", "swiglu", "a buggy edit", rewrite)

    monkeypatch.setattr(GatedMLP, "plan", plan)


def test_a_straying_rewrite_is_refused_before_writing(tree, cli, monkeypatch):
    _break_the_planner(monkeypatch, partial(StrayingActivation, cls="ParallelMLP", test="True", func_name="swiglu"))
    before = snapshot(tree)
    result = cli("apply", "llama", "--target", tree)
    assert result.exit_code == 2
    assert "changed code outside what it is anchored on" in result.output
    assert "ParallelAttention" in result.output and "StrayingActivation" in result.output
    assert not diff_snapshots(before, snapshot(tree))


def test_a_port_that_is_not_stable_is_refused_before_writing(tree, cli, monkeypatch):
    _break_the_planner(monkeypatch, NeverDone)
    before = snapshot(tree)
    result = cli("apply", "llama", "--target", tree)
    assert result.exit_code == 2
    assert "a second time would change it again" in result.output
    assert "megatron/model/transformer.py" in result.output
    assert not diff_snapshots(before, snapshot(tree))


def test_names_the_new_code_reads_must_be_bound():
    from porter.checks import check_names, unbound_names
    from porter.errors import PorterError

    before = "from megatron.model import LayerNorm\n\n\ndef build(args):\n    return LayerNorm(args.h)\n"
    after = before.replace("return LayerNorm(args.h)", "return (RMSNorm if args.rms else LayerNorm)(args.h)")
    assert unbound_names(before, "x.py") == set()
    assert unbound_names(after, "x.py") == {"RMSNorm"}
    try:
        check_names("x.py", before, after)
    except PorterError as exc:
        assert "RMSNorm" in exc.message and exc.file == "x.py"
    else:
        raise AssertionError("an unbound RMSNorm passed the check")
    # a name the file already read unbound (a tree's own bug) is not porter's to refuse
    check_names("x.py", "def f():\n    return undefined_thing\n", "def f():\n    return undefined_thing + 1\n")
    # locals, parameters, builtins and class attributes are bound
    assert unbound_names("class A:\n    x = 1\n    y = x + len([])\n\ndef g(a):\n    b = a\n    return b\n", "y.py") == set()
