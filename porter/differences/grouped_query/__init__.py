"""Grouped-query attention (GQA; MQA with one group): fewer key/value heads than query heads.

Spec: `attention.num_query_groups` (GPT: unset, one key/value head per query head; LLaMA-2
70B and LLaMA-3: 8; Gemma 2B: 1). Trees spell the switch `--num-key-value-heads` (microsoft
since d6c9d841, implemented; porter registers the same spelling elsewhere). When porter adds
it: the fused QKV projection shrinks to (np + 2 * ng) * hn, laid out per group
[ng, np/ng + 2, hn] (the tree's per-head layout when ng = np), is split by groups, and keys
and values are repeated for the tree's unfused attention math only: the fused kernel takes
the groups as they are. The tensor-parallel size must divide ng (checked with the arguments).
HF: `num_key_value_heads`.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.grouped_query import repair as R
from porter.differences.grouped_query import rewrites as G
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import number

SWITCH = "num_query_groups"


class GroupedQueryAttention(Difference):
    name = SWITCH
    model_switches = ('num_query_groups',)
    fields = {"attention.num_query_groups": number(None, whole=True,
                                                   help="key/value heads (GQA; 1: MQA); unset: one per query head")}
    hf_fields = ("num_key_value_heads",)
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--num-key-value-heads", "num_key_value_heads", None, "args.num_key_value_heads", NETWORK,
                (("type", "int"), ("default", "None"),
                 ("help", "'Key/value heads of grouped-query attention (1: multi-query); default: one per attention head.'")),
            ),
            # microsoft (d6c9d841): ParallelAttention groups q, k, v itself.
            tree_spelling(SWITCH, "--num-key-value-heads", "num_key_value_heads", None, "args.num_key_value_heads",
                          ((TRANSFORMER, "num_key_value_groups"),)),
        ),
    }

    def wanted(self, spec):
        return spec["attention.num_query_groups"] is not None

    def validate(self, values, given, fail):
        groups, heads = values["attention.num_query_groups"], values["sizes.num_attention_heads"]
        if groups is not None and heads is not None and heads % groups:
            raise fail("attention.num_query_groups", f"{groups} key/value heads for {heads} attention heads",
                       "make num_attention_heads a multiple of the key/value heads",
                       message="inconsistent sizes: the attention heads do not share the key/value heads evenly")

    def plan(self, p):
        groups = p.spec["attention.num_query_groups"]
        spelling = p.switch(SWITCH, on=groups, field="attention.num_query_groups")
        if p.implemented(SWITCH):
            site = p.profile.attention
            if groups == 1 and site is not None and not site.fusable:
                p.edit(TRANSFORMER, SWITCH, f"repair: {site.cls}.{site.func} reshapes keys and values (the tree's own "
                       "repeat of a single key/value head is an expand, which view refuses)",
                       rw(R.ReshapedKeysAndValues, cls=site.cls, func=site.func))
            return
        p.checks.append(
            f"""
            if args.{spelling.dest} is not None:
                assert args.num_attention_heads % args.{spelling.dest} == 0, \\
                    'grouped-query attention: --num-attention-heads must be a multiple of {spelling.option}'
                assert args.{spelling.dest} % args.tensor_model_parallel_size == 0, \\
                    'grouped-query attention: the tensor-parallel size must divide {spelling.option}'
            """
        )
        method = p.model.qk_method
        if method is None:
            raise unsupported("cannot find where attention splits query, key and value", TRANSFORMER,
                              "a ParallelAttention method that splits self.query_key_value's output in q, k, v",
                              "no such method")
        p.import_into(TRANSFORMER, SWITCH,
                      "from megatron.model.grouped_attention import repeat_key_value, split_query_key_value",
                      "imports the grouped q, k, v split")
        p.edit(TRANSFORMER, SWITCH, "the fused QKV projection is (np + 2 * ng) heads wide, laid out per group",
               rw(G.GroupedQKVProjection, cls="ParallelAttention", groups=f"args.{spelling.dest}"))
        p.edit(TRANSFORMER, SWITCH, f"ParallelAttention.{method} splits q, k, v by groups; keys and values are "
               "repeated for the unfused math only",
               rw(G.GroupedQKVSplit, cls="ParallelAttention", func=method))
        p.create("megatron/model/grouped_attention.py", SWITCH, "the grouped q, k, v split", "grouped_attention.py.j2")

    def from_hf(self, config):
        kv, heads = config.get("num_key_value_heads"), config.get("num_attention_heads")
        if kv is None:
            return {}
        # one per query head is said outright (None), not left to the family (Gemma's spec has 1, 7B 16)
        return {"attention.num_query_groups": None if kv == heads else int(kv)}

    def to_hf(self, spec, config):
        groups = spec["attention.num_query_groups"]
        if groups is None:  # one per query head, said outright: HF classes default otherwise (Gemma: 16)
            groups = spec["sizes.num_attention_heads"]
        if groups is not None:
            config["num_key_value_heads"] = groups

    def tiny(self, spec, tiny):
        groups = spec["attention.num_query_groups"]
        if groups is None:
            return {}
        return {"attention.num_query_groups": 1 if groups == 1 else max(1, tiny.num_attention_heads // 2)}
