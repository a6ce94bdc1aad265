"""Detector: options whose choices are the keys of a dict of gated functions elsewhere.

BigScience registers `--glu-activation` with `choices=<module>.GLU_ACTIVATIONS.keys()`, a
module-level dict literal of name -> function that ParallelMLP also looks the choice up in:
a new entry there is a new choice and its function at once. Found by structure: an
`add_argument(..., choices=X)` in arguments.py where X (or `X.keys()`, `list(X)`) is a dotted
name `a.b.NAME` of the tree's module a/b.py, or a NAME arguments.py imports from one, bound
there to a dict literal with string keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import dotted
from porter.profile import ARGUMENTS


@dataclass(frozen=True)
class Registry:
    path: str  # the module that holds the dict
    name: str  # the dict's module-level name
    keys: tuple[str, ...]


def _dict_name(value: cst.BaseExpression) -> str | None:
    """`X`, `X.keys()`, `list(X)` or `list(X.keys())` -> 'X' (a dotted name)."""
    if isinstance(value, cst.Call) and not value.args and isinstance(value.func, cst.Attribute) \
            and value.func.attr.value == "keys":
        return dotted(value.func.value)
    if isinstance(value, cst.Call) and len(value.args) == 1 and dotted(value.func) in ("list", "tuple", "sorted"):
        return _dict_name(value.args[0].value)
    return dotted(value)


def _imported_from(module: cst.Module, name: str) -> str | None:
    """The module `from M import name` takes `name` from, at top level."""
    for node in findall(module, m.ImportFrom()):
        if isinstance(node.names, cst.ImportStar) or node.module is None or node.relative:
            continue
        if any((a.asname.name.value if a.asname else a.name.value) == name for a in node.names):
            return dotted(node.module)
    return None


def _dict_keys(module: cst.Module, name: str) -> tuple[str, ...] | None:
    for stmt in module.body:
        for assign in findall(stmt, m.Assign(targets=[m.AssignTarget(target=m.Name(name))], value=m.Dict())) \
                if isinstance(stmt, cst.SimpleStatementLine) else ():
            keys = [e.key for e in assign.value.elements if isinstance(e, cst.DictElement)]
            if len(keys) == len(assign.value.elements) and all(isinstance(k, cst.SimpleString) for k in keys):
                return tuple(k.evaluated_value for k in keys)
    return None


def detect(parsed) -> dict[str, Registry]:
    """option -> the dict its choices are the keys of."""
    arguments = parsed(ARGUMENTS)
    if arguments is None:
        return {}
    found = {}
    for call in findall(arguments, m.Call(func=m.Attribute(attr=m.Name("add_argument")))):
        options = [a.value.evaluated_value for a in call.args
                   if a.keyword is None and isinstance(a.value, cst.SimpleString)]
        choices = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "choices"), None)
        if not options or choices is None or isinstance(choices, (cst.List, cst.Tuple)):
            continue
        name = _dict_name(choices)
        if name is None:
            continue
        module_name, _, last = name.rpartition(".")
        if not module_name:
            module_name = _imported_from(arguments, name)
            if module_name is None:
                continue
        path = module_name.replace(".", "/") + ".py"
        module = parsed(path)
        keys = _dict_keys(module, last) if module is not None else None
        if keys is not None:
            found.update((option, Registry(path, last, keys)) for option in options)
    return found
