"""The rewrite of the MoE layer's router for DeepSeek's routing: GroupedRouter in the Router's place."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, dotted, statements, with_comment
from porter.edits.base import Rewrite


def _wrapped(opening: str, arguments: list[str], width: int = 110) -> str:
    """`opening` + the arguments, wrapped under the opening parenthesis, + `)`."""
    lines, line = [], opening
    for i, argument in enumerate(arguments):
        piece = argument + (", " if i < len(arguments) - 1 else ")")
        if len(line) + len(piece) > width and line.strip() != opening.strip():
            lines.append(line.rstrip())
            line = " " * len(opening)
        line += piece
    return "\n".join([*lines, line])


class GroupedRouterCall(Rewrite):
    """`<mlp>.deepspeed_moe.gate = Router(...)` -> `... = GroupedRouter(..., score=..., ...)`, and the
    MoE layer hands the router the batch's sequences.

    Why: DeepSeek's router scores, chooses and weighs experts otherwise than the MoE difference's
    Router (megatron/model/grouped_routing.py says how); GroupedRouter is that Router with the
    options its switches give, and with them at their defaults it routes as the Router does. Its
    sequence-level load-balancing loss needs the tokens grouped by sequence, which DeepSpeed's
    MoE layer flattens before the router sees them: a forward pre-hook on the MoE layer gives the
    router the batch's shape first.
    """

    construct = "`self.<mlp>.deepspeed_moe.gate = Router(...)` in ParallelTransformerLayer.__init__ (the MoE difference's)"

    func = "__init__"
    cls: str
    options: dict

    def _router(self, stmt):
        for assign in findall(stmt, m.Assign(value=m.Call(func=m.Name("Router")))):
            target = dotted(assign.targets[0].target) or ""
            if target.endswith(".deepspeed_moe.gate"):
                return assign
        return None

    def _block(self, block: cst.IndentedBlock) -> cst.IndentedBlock:
        out = []
        for stmt in block.body:
            assign = self._router(stmt) if isinstance(stmt, cst.SimpleStatementLine) else None
            if assign is None:
                out.append(stmt)
                continue
            self.anchored()
            gate = code(assign.targets[0].target)
            moe = gate.removesuffix(".deepspeed_moe.gate")
            arguments = [(f"{a.keyword.value}=" if a.keyword else "") + code(a.value) for a in assign.value.args]
            arguments += [f"{key}={value}" for key, value in self.options.items()]
            out.append(statements(_wrapped(f"{gate} = GroupedRouter(", arguments))[0].with_changes(
                leading_lines=stmt.leading_lines))
            hook = statements(f"{moe}.register_forward_pre_hook({gate}.see_sequences)")[0]
            out.append(with_comment(hook, "DeepSeek's router (grouped_routing.py): it sees the batch's sequences first"))
        return block.with_changes(body=out)

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: bool(findall(s, m.Call(func=m.Name("GroupedRouter"))))):
            return body
        out = []
        for stmt in body:
            if isinstance(stmt, cst.If) and self._router(stmt.body):
                stmt = stmt.with_changes(body=self._block(stmt.body))
            out.append(stmt)
        if not self._hits:
            self.missing("no `self.<mlp>.deepspeed_moe.gate = Router(...)` in an `if` (the MoE difference's layer)")
        return out
