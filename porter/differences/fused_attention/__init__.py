"""porter's own improvement on every port: one fused kernel for the core attention.

No spec field: it computes what the tree's attention computes (scores, masked softmax,
context) in one call of torch's scaled_dot_product_attention (or Gaudi's FusedSDPA), where
that is the same function; the tree's own code stays for everything else (dropout in
training, a half-precision softmax, the inference cache). A tree whose core attention porter
cannot recognise keeps its unfused attention.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.fused_attention import rewrites as Att
from porter.errors import PorterError
from porter.planner import rw
from porter.profile import TRANSFORMER


class FusedAttention(Difference):
    name = "attention"
    changes_model = False
    hf_fields = ("use_bidirectional_attention",)  # transformers 5's Gemma: null or false in causal models

    def wanted(self, spec):
        return True

    def plan(self, p):
        site = p.profile.attention
        if site is None or not site.fusable:
            p.reused.append("attention: keeps the tree's unfused attention (no core attention porter can fuse)")
            return
        p.import_into(TRANSFORMER, "attention",
                      "from megatron.model.fused_attention import fused_attention, fused_attention_applies",
                      "imports the fused attention")
        p.edit(TRANSFORMER, "attention", f"{site.cls}.{site.func} calls one fused attention kernel where it computes the same",
               rw(Att.FusedCoreAttention, cls=site.cls, func=site.func, softmax=site.softmax, dropout=site.dropout,
                  alpha=site.alpha, cache_test=site.cache_test))
        p.create("megatron/model/fused_attention.py", "attention", "the fused core attention", "fused_attention.py.j2")

    def from_hf(self, config):
        if config.get("use_bidirectional_attention"):
            raise PorterError("config.json asks for bidirectional attention; porter ports causal language models",
                              file=config.path, construct="use_bidirectional_attention: null or false",
                              found="use_bidirectional_attention = true",
                              fix="port a causal model (the field false or absent), or port this one by hand")
        return {}
