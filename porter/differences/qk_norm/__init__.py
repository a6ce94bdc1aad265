"""Query/key norm: RMSNorm on attention's queries and keys before rotary.

Spec: `attention.qk_norm` (GPT: "none"). Two kinds:
  - "per_head" (Qwen3, Gemma-3): over each head's hn channels, one weight of hn shared by every
    head (HF: `self_attn.q_norm.weight` and `k_norm.weight`, [head_dim]); every tensor-parallel
    rank holds it whole, and its gradient is summed over the ranks;
  - "projection" (OLMo-2): over the whole projection, np * hn channels for queries and ng * hn
    for keys (HF: [num_heads * head_dim] and [num_key_value_heads * head_dim]); each rank holds
    its heads' slice of the weight, and the mean of squares is all-reduced over the ranks, so
    TP=2 normalises as TP=1 does.
porter's switch: `--qk-norm {none,per_head,projection}`. When porter adds it: attention builds
`q_layernorm` and `k_layernorm` (Megatron-Core's names) and applies them right after splitting
q, k and v, before rotary (rewrites.py; the module is megatron/model/qk_norm.py). The scale is
(offset + weight) with the tree's `--rmsnorm-weight-offset` (Gemma-3's 1 + w).
HF: no config field; the modeling code of the family has it (model types in HF_KINDS).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.qk_norm import rewrites as R
from porter.differences.qk_norm.probes import add_qk_norm_probes
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice
from porter.weights import Weight

SWITCH = "qk_norm"
FIELD = "attention.qk_norm"
KINDS = ("per_head", "projection")
# HF model types whose attention normalises q and k, and how (their modeling code, not their config)
HF_KINDS = {"qwen3": "per_head", "qwen3_moe": "per_head", "gemma3_text": "per_head", "olmo2": "projection"}


class QueryKeyNorm(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: choice("none", "none", *KINDS,
                            help="RMSNorm on q and k before rotary: per head (one weight of head_dim) or over "
                                 "the whole projection")}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--qk-norm", "qk_norm", "per_head", "args.qk_norm != 'none'", NETWORK,
                (("type", "str"), ("default", "'none'"), ("choices", "['none', 'per_head', 'projection']"),
                 ("help", "'RMSNorm on query and key before rotary: per_head (one weight of head_dim "
                          "shared by the heads: Qwen3, Gemma-3) or projection (over all heads: OLMo-2).'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] != "none"

    def plan(self, p):
        kind = p.spec[FIELD]
        model = p.model
        if model.qk_method is None:
            raise unsupported("cannot find where attention splits query and key", TRANSFORMER,
                              "a ParallelAttention method that binds query_layer and key_layer",
                              "no such method")
        if kind == "projection" and p.implemented("num_query_groups") and p.spec["attention.num_query_groups"]:
            raise unsupported("the tree's own grouped-query attention repeats the keys per query head before "
                              "porter can normalise them over the key projection", TRANSFORMER,
                              "keys of ng heads after the q, k, v split (porter's grouped-query attention)",
                              f"{p.profile.spellings['num_query_groups'].option}, the tree's own")
        spelling = p.switch(SWITCH, on=kind, field=FIELD)
        p.describe_model(f"query/key norm ({kind.replace('_', ' ')}): RMSNorm on q and k before rotary "
                         f"({spelling.option})")
        if p.implemented(SWITCH):
            return
        groups = p.profile.spellings.get("num_query_groups") or p.profile.porter_spelling("num_query_groups")
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.qk_norm import QKNorm", "imports the query/key norm")
        p.edit(TRANSFORMER, SWITCH, "attention builds a norm for its queries and one for its keys",
               rw(R.AddQueryKeyNorm, cls="ParallelAttention", test=p.tests[SWITCH],
                  whole=f"args.{spelling.dest} == 'projection'", query_heads="args.num_attention_heads",
                  key_heads=f"(getattr(args, '{groups.dest}', None) or args.num_attention_heads)"))
        p.edit(TRANSFORMER, SWITCH, f"ParallelAttention.{model.qk_method} normalises query and key before rotary",
               rw(R.ApplyQueryKeyNorm, cls="ParallelAttention", func=model.qk_method))
        p.create("megatron/model/qk_norm.py", SWITCH, "the query/key norm", "qk_norm.py.j2")

    def to_hf(self, spec, config):
        model_type = config.get("model_type")
        has = HF_KINDS.get(model_type, "none")
        if has != spec[FIELD]:
            raise PorterError(
                f"{spec.hf_class or 'the spec'} normalises query and key {has.replace('_', ' ')!s}, the spec "
                f"{spec[FIELD].replace('_', ' ')}", file=spec.path, construct=FIELD,
                found=f"{FIELD} = {spec[FIELD]!r} for model type {model_type!r}",
                fix=f"set {FIELD} = {has!r}, or name an HF class that normalises q and k so "
                    f"({', '.join(f'{t}: {k}' for t, k in HF_KINDS.items())})",
            )

    def weights(self, layer):
        """q_layernorm and k_layernorm beside the projection: whole on every rank per head, split
        by heads (as the projection's rows) over the whole projection. The kind is the HF
        class's (its model type): what HF's tensors are, which to_hf holds the spec to."""
        model_type = layer.config.get("model_type")
        kind = HF_KINDS.get(model_type)
        if kind is None:
            raise PorterError(f"porter does not know how the HF model type {model_type!r} normalises query and key",
                              construct="an HF model type with a query/key norm", found=repr(model_type),
                              fix=f"convert one of {', '.join(HF_KINDS)}, or report the family")
        a, role = layer.layout.attention, "rows" if kind == "projection" else "replicated"
        layer.add_after("qkv", SWITCH, [Weight(f"{a}.{x}_layernorm.weight", (f"self_attn.{x}_norm.weight",), role)
                                        for x in "qk"])

    def probes(self, layer):
        add_qk_norm_probes(layer)
