"""Rewrites of the tree's ParallelAttention for the query/key norm (Qwen3, Gemma-3, OLMo-2).

Two small edits: attention builds a norm for its queries and one for its keys when the switch
asks (`__init__`), and normalises them right after the projection is split into query, key and
value, before rotary rotates them (`forward`). The norm lives in megatron/model/qk_norm.py
(qk_norm.py.j2 here).
"""

from __future__ import annotations

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import mentions, statements, with_comment
from porter.edits.base import Rewrite

QUERY_NORM = "self.q_layernorm"
KEY_NORM = "self.k_layernorm"


class AddQueryKeyNorm(Rewrite):
    """Build attention's query and key norms in `__init__` when the switch is on.

    Why: Qwen3, Gemma-3 and OLMo-2 normalise queries and keys with RMSNorm before rotary. The
    norms are attention's own modules (their weights are saved with it, as
    `q_layernorm.weight` and `k_layernorm.weight`, Megatron-Core's names). Per head, each norm
    is one weight of hn shared by every head (`heads` None); over the whole projection its
    width is the projection's, np * hn for queries and ng * hn for keys, split by heads over the
    tensor-parallel ranks. `query_heads` and `key_heads` say, as expressions, how many heads
    each projection has when the norm spans it, and None per head.
    """

    construct = "ParallelAttention.__init__ with `self.hidden_size_per_attention_head`"

    func = "__init__"
    cls: str
    test: str  # true when the switch is on
    whole: str  # true when the norm spans the whole projection
    query_heads: str
    key_heads: str
    head_dim: str = "self.hidden_size_per_attention_head"
    eps: str = "args.layernorm_epsilon"

    def rewrite_body(self, body):
        if self.recognised(body, QUERY_NORM):
            return body
        if not any(mentions(s, self.head_dim) for s in body):
            self.missing(f"no {self.head_dim} in __init__")
            return body
        self.anchored()
        new = statements(
            f"""
            {QUERY_NORM} = {KEY_NORM} = None
            if {self.test}:
                query_heads = {self.query_heads} if {self.whole} else None
                key_heads = {self.key_heads} if {self.whole} else None
                {QUERY_NORM} = QKNorm({self.head_dim}, eps={self.eps}, heads=query_heads)
                {KEY_NORM} = QKNorm({self.head_dim}, eps={self.eps}, heads=key_heads)
            """
        )
        new[0] = with_comment(with_comment(new[0], "Query/key norm: RMSNorm on q and k before rotary, per head (one "
                                                   "weight of hn for every head, heads None)"),
                              "or over the whole projection (its heads: the mean of squares spans every rank's).")
        return body + new


class ApplyQueryKeyNorm(Rewrite):
    """Normalise query and key right after they are split out of the QKV projection.

    Why: the norm acts on the projection's output, per head [sq, b, np, hn] (or over all of a
    rank's heads, the module all-reducing across ranks), before rotary rotates q and k and
    before cached keys are joined (cached keys are normalised already). Inserted right after
    the statement that binds both `query_layer` and `key_layer`, where porter's rotary
    rewrite puts the rotation: planned after it, the norm comes first.
    """

    construct = "the statement in forward that binds `query_layer` and `key_layer`"

    cls: str
    func: str
    query: str = "query_layer"
    key: str = "key_layer"

    def rewrite_body(self, body):
        if self.recognised(body, QUERY_NORM):
            return body
        binds = None
        for i, stmt in enumerate(body):
            names = {node.value for assign in findall(stmt, m.Assign()) for target in assign.targets
                     for node in findall(target.target, m.Name())}
            if self.query in names and self.key in names:
                binds = i
                break
        if binds is None:
            self.missing(f"no statement assigns both {self.query} and {self.key}")
            return body
        self.anchored()
        new = statements(
            f"""
            if {QUERY_NORM} is not None:
                {self.query} = {QUERY_NORM}({self.query})
                {self.key} = {KEY_NORM}({self.key})
            """
        )
        new[0] = with_comment(new[0], "Query/key norm: q [sq, b, np, hn] and k [sq, b, ng, hn], before rotary.")
        return body[: binds + 1] + new + body[binds + 1:]
