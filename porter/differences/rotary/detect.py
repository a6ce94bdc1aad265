"""What the tree has around positions: the gate of its learned position table, and its own
rotary embedding where porter reuses it (does it hand attention what attention takes?).

Detector: a RotaryEmbedding whose forward returns a pair `[angles.cos(), angles.sin()]`
(microsoft's FPDT rework) while the same module's `apply_rotary_pos_emb(t, freqs)` takes the
angles themselves (it computes their cos and sin). Attention splits the pair it receives into
(query angles, key angles): the query is rotated by cos(cos θ), the key by the sine table, and
the pipe path's `.to(device)` on the list fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import code, dotted

ROTARY_CLASS = "RotaryEmbedding"
APPLY = "apply_rotary_pos_emb"


@dataclass(frozen=True)
class RotaryPair:
    file: str  # the module defining RotaryEmbedding (as the language model imports it)
    angles: str  # the name RotaryEmbedding.forward takes cos and sin of
    lm_func: str | None  # the TransformerLanguageModel method that unpacks the pair (`c, s = self.<attr>(...)`)
    attr: str | None  # the language model's rotary attribute


def module_path(language_model: cst.Module | None, folder: str = "megatron/model") -> str | None:
    """The file the language model imports RotaryEmbedding from (`from .x import RotaryEmbedding`)."""
    if language_model is None:
        return None
    for stmt in findall(language_model, m.ImportFrom()):
        if isinstance(stmt.names, cst.ImportStar) or stmt.module is None:
            continue
        if any(alias.name.value == ROTARY_CLASS for alias in stmt.names):
            name = dotted(stmt.module) or ""
            if stmt.relative and len(stmt.relative) == 1:
                return f"{folder}/{name.replace('.', '/')}.py"
            if name.startswith("megatron."):
                return name.replace(".", "/") + ".py"
    return None


def _pair(value: cst.BaseExpression) -> str | None:
    """'x' for `[x.cos(), x.sin()]` / `(x.cos(), x.sin())`."""
    if not isinstance(value, (cst.List, cst.Tuple)) or len(value.elements) != 2:
        return None
    bases = []
    for element, method in zip(value.elements, ("cos", "sin"), strict=True):
        call = element.value
        if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == method
                and not call.args):
            return None
        bases.append(code(call.func.value))
    return bases[0] if bases[0] == bases[1] else None


def returned_pair(forward: cst.FunctionDef) -> str | None:
    """The angles a forward returns as [cos, sin]: `return [x.cos(), x.sin()]`, or through a name."""
    pairs = {}
    for assign in findall(forward, m.Assign(targets=[m.AssignTarget(target=m.Name())])):
        base = _pair(assign.value)
        if base is not None:
            pairs[assign.targets[0].target.value] = base
    for ret in findall(forward, m.Return()):
        if ret.value is None:
            continue
        base = _pair(ret.value)
        if base is None and isinstance(ret.value, cst.Name):
            base = pairs.get(ret.value.value)
        if base is not None:
            return base
    return None


def _takes_angles(module: cst.Module) -> bool:
    apply = next((s for s in module.body if isinstance(s, cst.FunctionDef) and s.name.value == APPLY), None)
    if apply is None:
        return False
    return any(isinstance(c.func, cst.Attribute) and c.func.attr.value == "cos" for c in findall(apply, m.Call()))


def unpacking_method(language_model: cst.Module | None) -> tuple[str, str] | None:
    """(method, attr) of the TransformerLanguageModel method that unpacks `a, b = self.<attr>(...)`."""
    if language_model is None:
        return None
    cls = next((s for s in language_model.body if isinstance(s, cst.ClassDef)
                and s.name.value == "TransformerLanguageModel"), None)
    if cls is None:
        return None
    for func in cls.body.body:
        if not isinstance(func, cst.FunctionDef):
            continue
        for assign in findall(func, m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call())):
            callee = dotted(assign.value.func) or ""
            if callee.startswith("self.") and "rotary" in callee and len(assign.targets[0].target.elements) == 2:
                return func.name.value, callee[5:]
    return None


def rotary_pair(language_model: cst.Module | None, rotary: cst.Module | None, path: str | None) -> RotaryPair | None:
    """The tree's rotary hands attention a (cos, sin) pair where it takes angles; else None."""
    if rotary is None or path is None or not _takes_angles(rotary):
        return None
    cls = next((s for s in rotary.body if isinstance(s, cst.ClassDef) and s.name.value == ROTARY_CLASS), None)
    forward = next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "forward"),
                   None) if cls is not None else None
    angles = returned_pair(forward) if forward is not None else None
    if angles is None:
        return None
    method, attr = unpacking_method(language_model) or (None, None)
    return RotaryPair(path, angles, method, attr)


@dataclass(frozen=True)
class RotaryFacts:
    position_gate: str | None  # what guards the learned position table in Embedding.__init__
    pair: RotaryPair | None = None  # the tree's rotary hands attention (cos, sin) where it takes angles
    base: object | None = None  # the tree's own RotaryEmbedding's base (tree_base.TreeBase), where it has one


def detect(parsed, base=None) -> RotaryFacts | None:
    """The facts of the tree's rotary; `base`: what tree_base read of its own RotaryEmbedding."""
    language_model = parsed("megatron/model/language_model.py")
    if language_model is None:
        return None
    path = module_path(language_model)
    pair = rotary_pair(language_model, parsed(path) if path else None, path)
    return RotaryFacts(position_gate(language_model), pair, base)


def position_gate(language_model: cst.Module) -> str | None:
    """The test of the `if` that creates `self.position_embeddings` in Embedding.__init__, if any."""
    init = function_named(class_named(language_model, "Embedding"), "__init__")
    if init is None:
        return None
    for stmt in init.body.body:
        if isinstance(stmt, cst.If):
            creates = findall(stmt.body, m.Assign(targets=[m.AssignTarget(target=m.Attribute(attr=m.Name("position_embeddings")))]))
            if creates:
                return code(stmt.test)
    return None
