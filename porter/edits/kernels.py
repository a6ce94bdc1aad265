"""Rewrite of the class that chooses the attention's kernel: the kernels that cannot compute a port's
attention stay off while its switch is on (porter.profile.kernels finds them)."""

from __future__ import annotations

from functools import partial

import libcst as cst

from porter.cst.nodes import assigned_names, code, expression, mentions, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile import TRANSFORMER


class KernelsOff(Rewrite):
    """While `<test>` holds, the attention's other kernels (flash kernels) stay off: `self.<flag> = False`.

    Why: what a port changes in the attention (a soft-cap of the scores, a sliding window on the
    mask) goes into the tree's core attention; a kernel the attention builds and runs instead
    (`if self.<flag>: x = <Flash>(...) else: x = <Core>(...)`, and `if self.<flag>:` in forward)
    computes softmax(q k^T) under a plain causal mask inside the kernel, with no hook for either,
    and would leave the change out. Right after `__init__` decides the flags (before it builds
    anything from them), the switch on turns them off, so the tree's unfused core attention is
    built and runs (slower, and right); the switch off, the flags are the tree's own. `why` is
    the comment the tree's reader gets.
    """

    construct = "`self.<flag> = ...` in __init__, before `if self.<flag>: x = <Kernel>(...) ... else: x = <Core>(...)`"

    func = "__init__"
    cls: str
    flags: tuple
    test: str  # the switch on, e.g. `args.attention_softcap is not None`
    why: str

    def rewrite_body(self, body):
        wanted = code(expression(self.test))
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == wanted
                           and all(mentions(s, f"self.{f}") for f in self.flags)):
            return body
        at = [i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
              and {f"self.{f}" for f in self.flags} & assigned_names(s)]
        if not at:
            self.missing("no `self.<flag> = ...` at the top of __init__ for " + ", ".join(self.flags))
            return body
        self.anchored()
        off = "".join(f"    self.{f} = False\n" for f in self.flags)
        new = with_comment(statements(f"if {self.test}:\n{off}")[0], self.why)
        return [*body[:at[-1] + 1], new, *body[at[-1] + 1:]]


def plan_off(p, switch: str, facts, core_cls: str, option: str, test: str, lacks: str, does: str, why: str) -> None:
    """Plan KernelsOff in each class that builds another kernel instead of `core_cls` (the class a
    port changes), found by porter.profile.kernels: `lacks` says what those kernels cannot take,
    `does` what the core attention does instead, for the plan's reader; `why` is the tree's comment."""
    for kernel in getattr(facts, "kernels", ()):
        if kernel.core_cls == core_cls:
            flags = ", ".join(f"self.{f}" for f in kernel.flags)
            p.edit(TRANSFORMER, switch,
                   f"{kernel.cls} turns {flags} off while {option} is set: those kernels {lacks}; "
                   f"{core_cls} (which {does}) runs instead",
                   partial(KernelsOff, cls=kernel.cls, flags=kernel.flags, test=test, why=why))
