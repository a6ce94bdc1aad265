"""Rewrites of the tree's transformer layer for sandwich norms (Gemma-2/3): output norms of
attention and MLP, built beside the layer's own norms and applied before each residual add; and
for post-norm (OLMo-2), the layer's own norms before attention and the MLP made identities."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, insert_before, mentions, statements, with_comment
from porter.differences.norm_placement.branches import AfterEachBuild, NotUnderstood, branch_builds
from porter.edits.base import Rewrite

ATTENTION_NORM = "attention_output_layernorm"
MLP_NORM = "mlp_output_layernorm"
ATTENTION_OUTPUT = "attention_output"
MLP_OUTPUT = "mlp_output"


def _uses(stmt: cst.CSTNode, name: str) -> bool:
    """Is `name` read in the statement other than by an assignment that binds it again (the
    `attention_output, presents = attention_output` of a key/value cache split off the output)?
    A statement that both uses the output and, in one branch, adds its bias to it (microsoft's
    late layout: the bias-dropout-add, else `x = x + bias` then `x + residual`) uses it."""
    rebinding = [a for a in findall(stmt, m.Assign()) if name in assigned_names(a)]
    skipped = {id(n) for a in rebinding for n in findall(a, m.Name(name))}
    return any(id(n) not in skipped for n in findall(stmt, m.Name(name)))


class OutputNorms(Rewrite):
    """Build the two output norms right after the layer's post-attention norm, with its class and arguments.

    Why: Gemma-2/3 normalise the attention's output and the MLP's output before each residual
    add, with norms like the layer's others (RMSNorm x (1 + w)). The layer's own norm call
    (`self.post_attention_layernorm = norm_class(args.hidden_size, eps=...)`, as the tree and
    the RMSNorm port spell it) is repeated under the switch, so the new norms follow the tree's
    norm choice; off, they are None and the forward pass is the tree's. Where the layer picks
    its norm in an if/elif/else (a branch per norm type, each assigning the norm: microsoft's
    late layout), the call is repeated in each branch, right after the branch's own, and the
    None defaults go before the if (branches.py).
    """

    construct = ("`self.<anchor> = <Norm>(...)` in the layer's __init__, or an if/elif/else whose every branch "
                 "assigns it so")

    func = "__init__"
    cls: str
    test: str
    anchor: str = "post_attention_layernorm"
    comment: str = ("Sandwich norms (Gemma-2/3): the attention's and the MLP's outputs are normalised before each "
                    "residual add (None: a pre-norm layer).")

    def rewrite_body(self, body):
        if self.recognised(body, f"self.{ATTENTION_NORM}"):
            return body
        target = f"self.{self.anchor}"
        at = next((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                   and target in assigned_names(s) and m.matches(s.body[0], m.Assign(value=m.Call()))), None)
        if at is None:
            return self._per_branch(body, target)
        self.anchored()
        new = [*self._defaults(), *self._built_like(body[at])]
        return [*body[:at + 1], *new, *body[at + 1:]]

    def _per_branch(self, body, target):
        """The norm assigned in every branch of an if/elif/else: each branch builds the output
        norms after its own norm; the None defaults go before the if."""
        at = next((i for i, s in enumerate(body) if isinstance(s, cst.If) and target in assigned_names(s)), None)
        if at is None:
            self.missing(f"no `{target} = <Norm>(...)` statement in __init__, nor an if/elif/else assigning it")
            return body
        try:
            builds = branch_builds(body[at], target)
        except NotUnderstood as why:
            self.missing(f"`if {code(body[at].test)}:` assigns {target}, but {why}")
            return body
        self.anchored()
        branched = body[at].visit(AfterEachBuild(builds, self._built_like))
        return insert_before([*body[:at], branched, *body[at + 1:]], at, self._defaults())

    def _defaults(self) -> list[cst.BaseStatement]:
        new = statements(f"self.{ATTENTION_NORM} = None\nself.{MLP_NORM} = None\n")
        new[0] = with_comment(new[0], self.comment)
        return new

    def _built_like(self, norm: cst.SimpleStatementLine) -> list[cst.BaseStatement]:
        """The output norms built, under the switch, by the call that builds `norm`."""
        call = _one_line(norm.body[0].value)
        return statements(
            f"if {self.test}:\n"
            f"    self.{ATTENTION_NORM} = {call}\n"
            f"    self.{MLP_NORM} = {call}\n"
        )


def _one_line(call: cst.Call) -> str:
    """A call's source on one line (its arguments as the tree wrote them, without its line breaks)."""
    args = [(f"{a.keyword.value}=" if a.keyword is not None else "") + ("*" * len(a.star)) + code(a.value)
            for a in call.args]
    return f"{code(call.func)}({', '.join(args)})"


class NormalizeOutput(Rewrite):
    """Normalise a sublayer's output (`attention_output`, `mlp_output`) before its residual add.

    Why: in a sandwich layer the residual stream gets norm(attn(.)) and norm(mlp(.)). The output
    is final once the sublayer's call has bound it (and a key/value cache has been split off
    it); the norm goes right before the first statement after that which uses it (the tree's
    bias-dropout-add, or the if/else around it), so dropout and the residual add stay the
    tree's own.
    """

    construct = "`<output>, <bias> = self.<sublayer>(...)` then a statement reading <output> in the layer's forward"

    func = "forward"
    cls: str
    output: str
    norm: str
    label: str = "Sandwich norms"

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: mentions(s, f"self.{self.norm}")):
            return body
        bound = next((i for i, s in enumerate(body) if self.output in assigned_names(s)), None)
        if bound is None:
            self.missing(f"no statement binds {self.output}")
            return body
        at = next((i for i in range(bound + 1, len(body))
                   if _uses(body[i], self.output)), None)
        if at is None:
            self.missing(f"nothing reads {self.output} after it is bound")
            return body
        self.anchored()
        new = statements(
            f"if self.{self.norm} is not None:\n"
            f"    # {self.label}: the {self.output.replace('_', ' ')} is normalised before the residual add.\n"
            f"    {self.output} = self.{self.norm}({self.output})\n"
        )
        return insert_before(body, at, new)


class NoInputNorms(Rewrite):
    """Make the layer's norms before attention and before the MLP identities under the switch.

    Why: a post-norm layer (OLMo-2) normalises the sublayers' outputs only (the output norms
    OutputNorms builds). Its input norm and its norm before the MLP become `torch.nn.Identity()`
    right after the output norms are built: the tree's forward passes the hidden states through
    them unchanged, and no unused weight is saved or trained.
    """

    construct = "`self.<input norm> = ...` before the output norms porter builds in the layer's __init__"

    func = "__init__"
    cls: str
    test: str
    input_norm: str = "input_layernorm"
    anchor: str = "post_attention_layernorm"

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and code(s.test) == self.test):
            return body
        built = [i for i, s in enumerate(body) if f"self.{ATTENTION_NORM}" in assigned_names(s)]
        inputs = [i for i, s in enumerate(body) if f"self.{self.input_norm}" in assigned_names(s)]
        if not built or not inputs or inputs[-1] > built[-1]:
            self.missing(f"no self.{self.input_norm} = ... before porter's self.{ATTENTION_NORM} = ...")
            return body
        self.anchored()
        new = statements(
            f"if {self.test}:\n"
            f"    self.{self.input_norm} = torch.nn.Identity()\n"
            f"    self.{self.anchor} = torch.nn.Identity()\n"
        )
        new[0] = with_comment(new[0], "Post-norm (OLMo-2): nothing is normalised before attention or the MLP, "
                                      "only their outputs.")
        return [*body[:built[-1] + 1], *new, *body[built[-1] + 1:]]
