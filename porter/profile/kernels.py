"""Detector: where the tree's attention builds another kernel instead of its core attention (flash kernels).

A class of the transformer whose `__init__` chooses what it builds in an if/elif/else on its
own flags (`if self.<flag>: x = <Kernel>(...) elif self.<other> and <more>: ... else: x =
<Core>(...)`, the core a class of the same module; microsoft HEAD's ParallelAttention chooses
FlashSelfAttentionTriton, FlashSelfAttention or CoreAttention on `self.use_flash_attn_triton`
and `self.use_flash_attn`, and its forward runs the flash one under `if self.use_flash_attn:`;
Habana's Megatron-DeepSpeed adds a Gaudi FusedSDPA one under `self.use_fused_sdpa and <on a
Gaudi>`), or builds the core whatever the flags and the other kernel beside it under `if
self.<flag>:` (microsoft 9e72d571: `self.core_attention_flash = FlashSelfAttention(...)`,
forward running it under the flag). A test may be `self.<flag>` or an `and` of it with more: the flag off, the branch is
not taken. What changes the scores or the mask (a soft-cap, a sliding window) lives in the core
attention, and those kernels take a plain causal mask and no function of the scores: while it
is set, those flags must be off (porter.edits.kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall, function_named
from porter.cst.nodes import dotted, mentions

TRANSFORMER = "megatron/model/transformer.py"


@dataclass(frozen=True)
class OtherKernel:
    cls: str  # the class choosing the kernel (ParallelAttention)
    flags: tuple[str, ...]  # `self.<flag>` attributes: each true builds another kernel than the core
    core_cls: str  # the class of the core attention built when they are all false


def _builds(block: cst.CSTNode) -> str | None:
    """The class a branch builds (`x = <Class>(...)`), when it builds one."""
    for assign in findall(block, m.Assign(value=m.Call(func=m.Name()))):
        return assign.value.func.value
    return None


def _flag(test: cst.BaseExpression) -> str | None:
    """The `self.<flag>` whose being off makes the test false: the test itself, or the first
    operand of an `and` that is one."""
    if isinstance(test, cst.Attribute) and dotted(test.value) == "self":
        return test.attr.value
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return _flag(test.left) or _flag(test.right)
    return None


def _chain(branch: cst.If, classes: set[str]) -> tuple[list[tuple[str, str]], str | None]:
    """([(flag, class)] of an if/elif chain on self flags, the class its else builds)."""
    tested = []
    while isinstance(branch, cst.If):
        flag = _flag(branch.test)
        built = _builds(branch.body)
        if flag is None or built is None:
            return [], None
        tested.append((flag, built))
        branch = branch.orelse
    if not isinstance(branch, cst.Else):
        return tested, None
    core = _builds(branch.body)
    return tested, core if core in classes else None


def _built_plainly(init: cst.FunctionDef, classes: set[str]) -> str | None:
    """A class of the module that `__init__` builds whatever its flags (`self.x = <Core>(...)` at its top)."""
    for stmt in init.body.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            built = _builds(stmt)
            if built in classes:
                return built
    return None


def other_kernels(module: cst.Module | None) -> tuple[OtherKernel, ...]:
    if module is None:
        return ()
    classes = {s.name.value for s in module.body if isinstance(s, cst.ClassDef)}
    found = []
    for cls in (s for s in module.body if isinstance(s, cst.ClassDef)):
        init = function_named(cls, "__init__")
        if init is None:
            continue
        for branch in init.body.body:
            if not isinstance(branch, cst.If):
                continue
            tested, core = _chain(branch, classes)
            if core is None and tested:  # `if self.<flag>: self.x = <Flash>(...)`, the core built anyway:
                # only kernels of the module that its forward runs under the flag
                forward = function_named(cls, "forward")
                core = _built_plainly(init, classes)
                if forward is None or not all(built in classes and mentions(forward, f"self.{flag}")
                                              for flag, built in tested):
                    core = None
            flags = tuple(flag for flag, built in tested if built != core)
            if core is not None and flags:
                found.append(OtherKernel(cls.name.value, flags, core))
    return tuple(found)


@dataclass(frozen=True)
class OtherKernels:
    kernels: tuple[OtherKernel, ...]


def detect(parsed) -> OtherKernels | None:
    found = other_kernels(parsed(TRANSFORMER))
    return OtherKernels(found) if found else None
