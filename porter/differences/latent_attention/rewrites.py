"""The rewrite of the tree's transformer layer for multi-head latent attention: which attention it builds."""

from __future__ import annotations

import libcst as cst

from porter.cst.nodes import code, dotted, self_assign_calls, statements, with_comment
from porter.edits.base import Rewrite

MARK = "LatentAttention("


class LatentSelfAttention(Rewrite):
    """Build porter's LatentAttention in place of ParallelAttention when the switch is on.

    Why: latent attention has other projections than the fused q, k, v (a compressed key/value
    latent, decoupled rotary dimensions, a value head size of its own), so it is a module of its
    own (megatron/model/latent_attention.py) with ParallelAttention's signature and returns: the
    layer's forward calls it as it calls ParallelAttention. Only the layer's self-attention
    changes; the statement is copied into both branches with its arguments as the tree wrote them.
    """

    construct = "`self.<attention> = ParallelAttention(...)` in ParallelTransformerLayer.__init__"

    func = "__init__"
    cls: str
    attr: str
    test: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: MARK in code(s)):
            return body
        out = []
        for stmt in body:
            calls = [call for attr, call in self_assign_calls(stmt, {self.attr}) if attr == self.attr
                     and (dotted(call.func) or "").rsplit(".", 1)[-1] == "ParallelAttention"]
            if not calls or self._hits or not isinstance(stmt, cst.SimpleStatementLine):
                out.append(stmt)
                continue
            self.anchored()
            tree_line = code(stmt.with_changes(leading_lines=[])).strip()
            latent = tree_line.replace("ParallelAttention(", MARK, 1)
            indented = "\n".join("    " + line for line in latent.splitlines())
            tree_indented = "\n".join("    " + line for line in tree_line.splitlines())
            new = statements(f"if {self.test}:\n{indented}\nelse:\n{tree_indented}\n")[0]
            new = with_comment(new, "Multi-head latent attention (DeepSeek): keys and values from a compressed latent,")
            new = with_comment(new, "a rotary part shared by every head (megatron/model/latent_attention.py).")
            out.append(new.with_changes(leading_lines=[*stmt.leading_lines, *new.leading_lines]))
        if not self._hits:
            self.missing(f"no `self.{self.attr} = ParallelAttention(...)`")
        return out

