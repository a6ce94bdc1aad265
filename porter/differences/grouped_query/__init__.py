"""Grouped-query attention (GQA; MQA with one group): fewer key/value heads than query heads.

Spec: `attention.num_query_groups` (GPT: unset, one key/value head per query head; LLaMA-2
70B and LLaMA-3: 8; Gemma 2B: 1). Trees spell the switch `--num-key-value-heads` (microsoft
since d6c9d841, implemented; porter registers the same spelling elsewhere). When porter adds
it: the fused QKV projection shrinks to (np + 2 * ng) * hn, laid out per group
[ng, np/ng + 2, hn] (the tree's per-head layout when ng = np), is split by groups, and keys
and values are repeated for the tree's unfused attention math only: the fused kernel takes
the groups as they are. The tensor-parallel size must divide ng (checked with the arguments).
HF: `num_key_value_heads`. A tree whose own GQA projects q and (k, v) apart (apart.py): its
two projections are named in the layout, and the weights and probes follow them (weights.py);
one porter cannot read is refused. A tree whose own repeat of the key/value heads is a
zero-stride view its unfused attention cannot `.view` (expanded.py) gets those views repaired.
"""

from __future__ import annotations

from dataclasses import dataclass

from porter.differences.base import Difference
from porter.differences.grouped_query import rewrites as G
from porter.differences.grouped_query.apart import ApartProjections, split_projections
from porter.differences.grouped_query.expanded import ExpandedRepeat, expanded_repeat, keys_repeated
from porter.differences.grouped_query.weights import apart_probes, apart_weights
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import number

SWITCH = "num_query_groups"


@dataclass(frozen=True)
class TreeGQA:
    """What the tree's own grouped-query attention does that porter follows or repairs."""

    apart: ApartProjections | None  # q and (k, v) projected apart (apart.py)
    expanded: ExpandedRepeat | None  # a zero-stride key/value repeat (expanded.py)
    keys_repeated: bool = False  # keys repeated per query head where q and k are first bound (expanded.py)


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

    def detect(self, parsed):
        transformer = parsed(TRANSFORMER)
        if transformer is None:
            return None
        return TreeGQA(split_projections(transformer), expanded_repeat(transformer), keys_repeated(transformer))

    def layout(self, profile, spec):
        facts = profile.facts.get(self.name)
        if facts is None:
            return {}
        out = {"gqa_keys_repeated": facts.keys_repeated}
        apart = facts.apart
        if apart is None:
            return out
        if apart.found:
            if self.wanted(spec):
                raise _unreadable(apart)
            return out
        return {**out, "gqa_query": apart.query, "gqa_key_value": apart.key_value}

    def weights(self, layer):
        apart_weights(layer)

    def probes(self, layer):
        apart_probes(layer)

    def validate(self, values, given, fail):
        groups, heads = values["attention.num_query_groups"], values["sizes.num_attention_heads"]
        if groups is not None and heads is not None and heads % groups:
            raise fail("attention.num_query_groups", f"{groups} key/value heads for {heads} attention heads",
                       "make num_attention_heads a multiple of the key/value heads",
                       message="inconsistent sizes: the attention heads do not share the key/value heads evenly")

    def plan(self, p):
        groups = p.spec["attention.num_query_groups"]
        spelling = p.switch(SWITCH, on=groups, field="attention.num_query_groups")
        facts = p.facts(self.name) or TreeGQA(None, None)
        if facts.apart is not None and facts.apart.found:
            raise _unreadable(facts.apart)
        if p.implemented(SWITCH):
            expanded = facts.expanded
            if expanded is not None:
                p.edit(TRANSFORMER, SWITCH,
                       f"repair: ParallelAttention.{expanded.method} repeats key/value heads by expand (a zero stride, "
                       f"no copy), which CoreAttention.forward's {' and '.join(expanded.viewed)} .view cannot take "
                       "with one key/value head on a rank and more than one sequence; reshape (the same view where one "
                       "is possible)",
                       rw(G.ReshapeRepeatedKeyValue, cls="CoreAttention", func="forward", names=expanded.viewed))
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


def _unreadable(apart: ApartProjections) -> PorterError:
    """The refusal of a tree whose GQA builds a query and a key/value projection porter cannot read:
    its weights would go to the wrong tensors."""
    return PorterError(
        "ParallelAttention projects query and key/value apart under grouped-query attention, in a layout porter "
        "cannot read", file=TRANSFORMER,
        construct="ParallelAttention: with fewer key/value heads than query heads, self.<q> = ColumnParallelLinear("
                  "h, np * hn) and self.<kv> = ColumnParallelLinear(h, 2 * ng * hn), whose output is viewed as "
                  "[ng, 2 * hn] and cut in key | value halves",
        found=apart.found,
        fix="port this tree's grouped-query attention by hand (or port a model with one key/value head per query "
            "head), or report the variant",
    )
