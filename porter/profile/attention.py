"""Detector: where the tree computes its core attention, and whether porter can fuse it.

Megatron-DeepSpeed trees compute attention unfused: `torch.baddbmm` for the scores,
the `FusedScaleMaskSoftmax` module for mask and softmax, a `torch.nn.Dropout` under the RNG
tracker, `torch.bmm` for the context, then reshapes to `context_layer` [sq, b, hp]. Some keep
it inline in `ParallelAttention.forward` (microsoft f01c9e6e, BigScience), others in a
`CoreAttention.forward` (microsoft HEAD). The core is the run of statements of that function
from the first one after query, key and value are final (after the key/value cache, when
there is one) to the last one that binds `context_layer`; nothing else it binds may be used
after it. A core that adds position biases to the scores (ALiBi) is not fused.

A core porter cannot fuse is still the site of what changes the scores or the mask (a window,
a soft-cap, the score scale): the class whose `__init__` builds the masked softmax, and the
method of it that calls it (`forward`, or a helper of it: Habana 9da6581a's
`CoreAttention.sub_forward`), whatever else that method does (ALiBi, the tree's own rotary,
a dropout built only when its rate is not 0: Habana's Megatron-DeepSpeed).
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, dotted

CLASSES = ("CoreAttention", "ParallelAttention")
FUSED_MARK = "fused_attention_applies"  # what the rewrite leaves behind


@dataclass(frozen=True)
class AttentionSite:
    cls: str  # the class whose `func` holds the core
    func: str
    softmax: str  # `self.<softmax>`: the FusedScaleMaskSoftmax module
    dropout: str  # `self.<dropout>`: the attention dropout module
    alpha: str  # the baddbmm's alpha, the tree's own expression
    cache_test: str | None  # true when there is no key/value cache, e.g. "layer_past is None and not get_key_value"
    fusable: bool = True  # False: the masked softmax's site only (porter keeps the tree's attention unfused)


@dataclass(frozen=True)
class CoreSpan:
    start: int  # index of the first statement of the core in the function body
    end: int  # index of its last statement (the last that binds context_layer)
    alpha: str


def _self_attr_assigned_a(init: cst.FunctionDef, class_name: str, mentioning: str | None = None) -> str | None:
    """`x` of the first `self.x = <...>.class_name(...)` in __init__ (its arguments mentioning a name)."""
    for assign in findall(init.body, m.Assign(value=m.Call())):
        target = dotted(assign.targets[0].target) if len(assign.targets) == 1 else None
        func = dotted(assign.value.func) or ""
        if target and target.startswith("self.") and func.split(".")[-1] == class_name:
            if mentioning is None or mentioning in code(assign.value):
                return target.removeprefix("self.")
    return None


def _reads(node: cst.CSTNode) -> set[str]:
    return {n.value for n in findall(node, m.Name())}


def core_span(body: list[cst.BaseStatement]) -> CoreSpan | None:
    """The core attention statements of a function body, or None."""
    scores = None
    alpha = None
    for i, stmt in enumerate(body):
        calls = findall(stmt, m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("baddbmm"))))
        if calls:
            scores = i
            alpha_arg = next((a for a in calls[0].args if a.keyword is not None and a.keyword.value == "alpha"), None)
            alpha = code(alpha_arg.value) if alpha_arg else None
            break
    if scores is None or alpha is None:
        return None
    start = 0
    for i in range(scores):
        if assigned_names(body[i]) & {"value_layer", "present"}:
            start = i + 1
    if start == 0 and body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])):
        start = 1  # the docstring
    ends = [i for i in range(scores, len(body)) if "context_layer" in assigned_names(body[i])]
    if not ends:
        return None
    end = ends[-1]
    core = body[start : end + 1]
    if any(findall(s, m.Return()) for s in core) or any("alibi" in _reads(s) for s in core):
        return None
    bound = set().union(*(assigned_names(s) for s in core))
    later = set().union(set(), *(_reads(s) for s in body[end + 1 :]))
    if (bound & later) - {"context_layer"}:
        return None
    return CoreSpan(start=start, end=end, alpha=alpha)


def _methods(cls: cst.ClassDef) -> dict[str, cst.FunctionDef]:
    return {s.name.value: s for s in cls.body.body if isinstance(s, cst.FunctionDef)}


def _calls_softmax(func: cst.FunctionDef, softmax: str) -> bool:
    return bool(findall(func.body, m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(softmax)))))


def find_core_attention(module: cst.Module) -> AttentionSite | None:
    """The core attention of transformer.py: the site porter can fuse, or else the site of its masked
    softmax only (`fusable` False: the port keeps the unfused code), or None."""
    classes = {s.name.value: s for s in module.body if isinstance(s, cst.ClassDef)}
    fusable = _fusable_site(classes)
    if fusable is not None:
        return fusable
    for name in [*CLASSES, *(c for c in classes if c not in CLASSES)]:
        methods = _methods(classes[name]) if name in classes else {}
        init = methods.get("__init__")
        softmax = _self_attr_assigned_a(init, "FusedScaleMaskSoftmax") if init is not None else None
        if softmax is None:
            continue
        func = next((f for f, node in methods.items() if f != "__init__" and _calls_softmax(node, softmax)), None)
        if func is None:
            continue
        baddbmm = findall(methods[func].body, m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("baddbmm"))))
        alpha = next((code(a.value) for c in baddbmm for a in c.args if a.keyword is not None
                      and a.keyword.value == "alpha"), "")
        return AttentionSite(name, func, softmax, "", alpha, None, fusable=False)
    return None


def _fusable_site(classes: dict[str, cst.ClassDef]) -> AttentionSite | None:
    for name in CLASSES:
        if name not in classes:
            continue
        methods = _methods(classes[name])
        init, forward = methods.get("__init__"), methods.get("forward")
        if init is None or forward is None or not isinstance(forward.body, cst.IndentedBlock):
            continue
        softmax = _self_attr_assigned_a(init, "FusedScaleMaskSoftmax")
        dropout = _self_attr_assigned_a(init, "Dropout", mentioning="attention_dropout")
        if softmax is None or dropout is None:
            continue
        body = list(forward.body.body)
        params = {p.name.value for p in forward.params.params}
        tests = [t for p, t in (("layer_past", "layer_past is None"), ("get_key_value", "not get_key_value")) if p in params]
        cache_test = " and ".join(tests) or None
        done = next((s for s in body if isinstance(s, cst.If) and FUSED_MARK in _reads(s.test)), None)
        if done is not None:
            return AttentionSite(name, "forward", softmax, dropout, _alpha_of_fused_call(done) or "", cache_test)
        span = core_span(body)
        if span is not None:
            return AttentionSite(name, "forward", softmax, dropout, span.alpha, cache_test)
    return None


def _alpha_of_fused_call(stmt: cst.If) -> str | None:
    for call in findall(stmt.body, m.Call(func=m.Name("fused_attention"))):
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == "alpha":
                return code(arg.value)
    return None
