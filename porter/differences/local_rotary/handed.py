"""Rewrites for a local rotary base where the tree builds its rotary embedding once and hands it to
every layer (microsoft HEAD: the language model's `self.rotary_pos_emb`, and the pipe's
`args.rotary_pos_emb`, both reaching `ParallelAttention.forward(..., rotary_pos_emb=...)`).

Three small edits: the attention of a layer under the sliding window builds a second rotary
embedding, of the tree's own class, with the local base (`__init__`); its forward swaps the
angles it is handed for its own, of the same length (`forward`); and where the tree's
apply_rotary_pos_emb caches cos and sin by sequence length alone, the cache is also renewed when
the angles differ (two tables of one length are now in use).
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (assigned_names, code, expression, insert_before, mentions, statements, uses_values,
                              with_comment)
from porter.edits.base import Rewrite

LOCAL = "self.local_rotary_pos_emb"


class LocalRotaryBuilt(Rewrite):
    """A layer under the sliding window builds a rotary embedding of the local base.

    Why: Gemma-3 rotates its local (sliding-window) layers with rope_local_base_freq (10000),
    unscaled, its global ones with rope_theta (1e6). The tree builds one rotary embedding, with
    the global base, and hands its angles to every layer. Each attention knows its layer number;
    `layer_window(...)`, the rule the sliding window itself uses, says whether the layer is a
    local one: such a layer builds the tree's RotaryEmbedding with the local base (its head size,
    as the tree's language model uses for whole-head rotary). Other layers hold None. Where the
    port scales the global layers (`unscaled`: the class's scaling keyword), the local call passes
    it None outright: the scaling's own rewrite gives every RotaryEmbedding call that lacks the
    keyword `scaling=rope_scaling_of(args)`, so on a second apply it would scale the local one.
    """

    construct = "ParallelAttention.__init__ with `args`, `layer_number` and `self.hidden_size_per_attention_head`"

    func = "__init__"
    cls: str
    window: str  # true on a local layer, e.g. layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)
    value: str  # the switch's value, e.g. args.local_rope_theta
    head: str = "self.hidden_size_per_attention_head"
    keyword: str = "theta"  # the class's base parameter (EleutherAI's is `base`)
    unscaled: str = ""  # the scaling keyword the local one passes None to (the global layers are scaled)

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: LOCAL in assigned_names(s)):
            return body
        if not any(self.head in assigned_names(s) for s in body):
            self.missing(f"no `{self.head} = ...`")
            return body
        self.anchored()
        new = statements(f"{LOCAL} = None\n"
                         f"if {self.value} is not None and {self.window}:\n"
                         f"    {LOCAL} = RotaryEmbedding({self.head}, {self.keyword}={self.value}"
                         f"{', ' + self.unscaled + '=None' if self.unscaled else ''})\n")
        new[0] = with_comment(new[0], "Local layers' rotary base (Gemma-3): a layer under the sliding window rotates "
                                      "with its own base, unscaled (the tree hands every layer the global angles).")
        return [*body, *new]


class LocalRotaryHanded(Rewrite):
    """A local layer swaps the rotary angles it is handed for its own, of the same length.

    Why: the tree computes the angles once per step (the language model for the plain model,
    the entry point's `args.rotary_pos_emb` for the pipe) for the length it runs (the sequence,
    the inference maximum, the curriculum), and every layer's attention receives them as
    `rotary_pos_emb`. A local layer rotates with its own base instead: its angles for the same
    positions (0 .. length - 1), in the dtype and on the device of the handed ones, before the
    attention reads them (the key/value cache slices them later, as it slices the handed ones).
    """

    construct = "`def forward(self, ..., <rotary angles>=None)` (a parameter named for rotary)"

    func = "forward"
    cls: str

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: mentions(s, LOCAL)):
            return body
        node = next((f for f in findall(self._module, m.ClassDef(name=m.Name(self.cls)))), None)
        forward = next((f for f in findall(node, m.FunctionDef(name=m.Name("forward")))), None) if node else None
        handed = [p.name.value for p in forward.params.params if "rotary" in p.name.value] if forward else []
        if len(handed) != 1:
            self.missing("no forward parameter holding the rotary angles" if not handed else
                         f"more than one rotary parameter: {', '.join(handed)}")
            return body
        self.anchored()
        name = handed[0]
        new = statements(f"if {LOCAL} is not None and {name} is not None:\n"
                         f"    {name} = {LOCAL}({name}.shape[0]).to({name})\n")[0]
        new = with_comment(new, "Local layers' rotary base (Gemma-3): this layer's own angles, for the positions "
                                "of the ones it is handed.")
        return insert_before(body, 0, [new])


class RotaryCacheKeyedOnAngles(Rewrite):
    """The tree's cache of cos and sin is renewed when the angles change, not only their length.

    Why: the tree's apply_rotary_pos_emb keeps cos and sin of the first angles it is given in
    module globals and computes them again only for another sequence length. With a local base
    two tables of one length are in use (local and global layers), and every layer would rotate
    with whichever came first. The cached cos also carries the angles it was made from (an
    attribute of the tensor, as the tree marks its rotary tensors `no_checkpointing`), and a call
    with other angles renews the cache (tested after the tree's own `is None` tests).
    """

    construct = "`global <cos>, ...` then `if <cos> is None or ...: <cos> = ...` in the function"

    func: str
    mark: str = "rotary_angles"

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and f"'{self.mark}'" in code(s.test)):
            return body
        at_global = next((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                          and isinstance(s.body[0], cst.Global)), None)
        if at_global is None:
            self.missing("no `global` cache in the function")
            return body
        names = [n.name.value for n in body[at_global].body[0].names]
        at_if = next((i for i, s in enumerate(body) if isinstance(s, cst.If) and " is None" in code(s.test)
                      and set(names) & assigned_names(s.body)), None)
        if at_if is None:
            self.missing(f"no `if {names[0]} is None or ...:` renewing the cache")
            return body
        branch = body[at_if]
        func = next(f for f in findall(self._module, m.FunctionDef(name=m.Name(self.func))))
        angles = [p.name.value for p in func.params.params if uses_values(branch.body, p.name.value)]
        if len(angles) != 1:
            self.missing("the cache is not made from one parameter of the function")
            return body
        self.anchored()
        given = angles[0]
        cached = next(n for s in branch.body.body for n in names if n in assigned_names(s))
        test = branch.test if branch.test.lpar else branch.test.with_changes(lpar=[cst.LeftParen()],
                                                                            rpar=[cst.RightParen()])
        new_test = expression(f"X or getattr({cached}, '{self.mark}', None) is not {given}").with_changes(left=test)
        keep = with_comment(statements(f"{cached}.{self.mark} = {given}")[0],
                            "the angles the cache is made from: local and global layers hand different ones")
        branch = branch.with_changes(test=new_test, body=branch.body.with_changes(body=[*branch.body.body, keep]))
        return [*body[:at_if], branch, *body[at_if + 1:]]
