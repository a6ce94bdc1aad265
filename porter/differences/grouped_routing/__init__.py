"""DeepSeek's router: its scores, a correction bias, group-limited choice, a routed scaling factor,
and its sequence-level load-balancing loss, on the MoE difference's Router.

Spec `[moe.router]`: `score` ("softmax", DeepSeek-V2; "sigmoid", DeepSeek-V3), `expert_bias`
(DeepSeek-V3's e_score_correction_bias: added to the scores to choose, not to weigh),
`num_groups` and `group_topk` (each token picks among the experts of its best group_topk
groups), `group_score` ("max": a group's best score, DeepSeek-V2's group_limited_greedy;
"top2_sum": the sum of its two best biased scores, DeepSeek-V3's noaux_tc), `scaling_factor`
(the weights times routed_scaling_factor) and `load_balancing` ("aux_loss": the MoE
difference's pooled loss; "seq_aux_loss": DeepSeek's per sequence, per layer). The top k and
the renormalisation are the MoE difference's (`moe.top_k`, `moe.norm_topk_prob`).
Switches, spelled as Megatron-LM spells them where it has them: `--moe-router-score-function`,
`--moe-router-enable-expert-bias`, `--moe-router-num-groups`, `--moe-router-group-topk`,
`--moe-router-topk-scaling-factor`, `--moe-router-load-balancing-type`; porter's own
`--moe-router-group-score`. The layer's Router becomes GroupedRouter (rewrites.py,
grouped_routing.py.j2 here); the correction bias is a weight of its own (weights.py here).
HF, as transformers reads it (its DeepSeek routers ignore scoring_func and DeepSeek-V3's
topk_method: a value that disagrees with what they compute is refused): DeepSeek-V2's softmax
with topk_method "greedy" or "group_limited_greedy" (n_group, topk_group), DeepSeek-V3's sigmoid
with the bias and grouped choice; routed_scaling_factor; seq_aux (DeepSeek's own field: the
sequence-level loss with aux_loss_alpha; transformers computes no such loss).
"""

from __future__ import annotations

from dataclasses import dataclass

from porter.differences.base import Difference
from porter.differences.grouped_routing import rewrites as G
from porter.differences.grouped_routing.weights import correction_bias
from porter.differences.moe.hf import fields_of
from porter.errors import PorterError
from porter.hf_reading import as_read, raw_of
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import choice, flag, number

SWITCH = "moe_router"
PREFIX = "moe.router."
FILE = "megatron/model/grouped_routing.py"


def _spelling(switch, option, dest, on, test, *add) -> tuple[Spelling, ...]:
    return (Spelling(switch, option, dest, on, test, NETWORK, tuple(add)),)


SPELLINGS = {
    "moe_router_score": _spelling(
        "moe_router_score", "--moe-router-score-function", "moe_router_score_function", "sigmoid",
        "args.moe_router_score_function != 'softmax'", ("type", "str"), ("default", "'softmax'"),
        ("choices", "['softmax', 'sigmoid']"), ("help", "'The router\\'s expert scores: softmax over the experts, or "
                                                        "each logit\\'s sigmoid.'")),
    "moe_router_expert_bias": _spelling(
        "moe_router_expert_bias", "--moe-router-enable-expert-bias", "moe_router_enable_expert_bias", True,
        "args.moe_router_enable_expert_bias", ("action", "'store_true'"),
        ("help", "'A correction bias per expert, added to the scores to choose the experts (not to weigh them).'")),
    "moe_router_groups": _spelling(
        "moe_router_groups", "--moe-router-num-groups", "moe_router_num_groups", None,
        "args.moe_router_num_groups is not None", ("type", "int"), ("default", "None"),
        ("help", "'Expert groups: each token chooses among the experts of its best --moe-router-group-topk groups.'")),
    "moe_router_group_topk": _spelling(
        "moe_router_group_topk", "--moe-router-group-topk", "moe_router_group_topk", None,
        "args.moe_router_group_topk is not None", ("type", "int"), ("default", "None"),
        ("help", "'Groups each token chooses its experts in.'")),
    "moe_router_group_score": _spelling(
        "moe_router_group_score", "--moe-router-group-score", "moe_router_group_score", None,
        "args.moe_router_group_score != 'max'", ("type", "str"), ("default", "'max'"),
        ("choices", "['max', 'top2_sum']"),
        ("help", "'A group\\'s score: its best expert\\'s, or the sum of its two best (biased) ones.'")),
    "moe_router_scaling": _spelling(
        "moe_router_scaling", "--moe-router-topk-scaling-factor", "moe_router_topk_scaling_factor", None,
        "args.moe_router_topk_scaling_factor != 1.0", ("type", "float"), ("default", "1.0"),
        ("help", "'The routed experts\\' weights times this (routed_scaling_factor).'")),
    "moe_router_load_balancing": _spelling(
        "moe_router_load_balancing", "--moe-router-load-balancing-type", "moe_router_load_balancing_type", None,
        "args.moe_router_load_balancing_type != 'aux_loss'", ("type", "str"), ("default", "'aux_loss'"),
        ("choices", "['aux_loss', 'seq_aux_loss']"),
        ("help", "'The load-balancing loss: pooled over the layers (aux_loss), or DeepSeek\\'s per sequence and "
                 "layer (seq_aux_loss); weighed by --moe-loss-coeff.'")),
}
# spec field -> (switch, the GroupedRouter keyword it sets)
OPTIONS = {"score": ("moe_router_score", "score"), "expert_bias": ("moe_router_expert_bias", "expert_bias"),
           "num_groups": ("moe_router_groups", "groups"), "group_topk": ("moe_router_group_topk", "group_topk"),
           "group_score": ("moe_router_group_score", "group_score"),
           "scaling_factor": ("moe_router_scaling", "scaling"),
           "load_balancing": ("moe_router_load_balancing", "load_balancing")}


@dataclass(frozen=True)
class RouterFields:
    """What a model type's router computes, as transformers' modeling code does."""

    score: str
    expert_bias: bool
    methods: dict  # topk_method -> its group score (None: no groups); the first: what an absent one computes


BY_MODEL_TYPE = {
    "deepseek_v2": RouterFields("softmax", False, {"greedy": None, "group_limited_greedy": "max"}),
    "deepseek_v3": RouterFields("sigmoid", True, {"noaux_tc": "top2_sum"}),
}


class GroupedRouting(Difference):
    name = SWITCH
    fields = {
        PREFIX + "score": choice("softmax", "softmax", "sigmoid", help="the router's expert scores"),
        PREFIX + "expert_bias": flag(False, help="a correction bias per expert, to choose (DeepSeek-V3)"),
        PREFIX + "num_groups": number(None, whole=True, help="expert groups (group-limited choice)"),
        PREFIX + "group_topk": number(None, whole=True, help="groups each token chooses its experts in"),
        PREFIX + "group_score": choice("max", "max", "top2_sum", help="a group's score"),
        PREFIX + "scaling_factor": number(1.0, help="the routed experts' weights times this"),
        PREFIX + "load_balancing": choice("aux_loss", "aux_loss", "seq_aux_loss", help="the load-balancing loss"),
    }
    hf_fields = ("scoring_func", "topk_method", "n_group", "topk_group", "routed_scaling_factor", "seq_aux")
    spellings = SPELLINGS
    switch_fields = {switch: PREFIX + key for key, (switch, _) in OPTIONS.items()}
    pipeline_engine = False

    def wanted(self, spec):
        return any(spec[key] != field.base for key, field in self.fields.items())

    def validate(self, values, given, fail):
        if not any(values[k] != f.base for k, f in self.fields.items()):
            return
        count, k = values["moe.num_experts"], values["moe.top_k"] or 2
        if count is None:
            key = next(k for k, f in self.fields.items() if values[k] != f.base)
            raise fail(key, f"{key} = {values[key]!r} without moe.num_experts", "set moe.num_experts, or remove " + key,
                       message=f"inconsistent spec: {key} needs experts (moe.num_experts)")
        groups, group_topk = values[PREFIX + "num_groups"], values[PREFIX + "group_topk"]
        if groups is not None:
            per = count // groups
            if count % groups or (values[PREFIX + "group_score"] == "top2_sum" and per < 2):
                raise fail(PREFIX + "num_groups", f"{groups} groups of {count} experts",
                           "groups of equal size (two experts or more each for top2_sum)",
                           message="inconsistent spec: the experts do not split into the groups")
            if group_topk is None or not 1 <= group_topk <= groups or k > group_topk * per:
                raise fail(PREFIX + "group_topk", f"group_topk = {group_topk} of {groups} groups for top-{k}",
                           f"between 1 and {groups}, with group_topk * {per} experts >= moe.top_k",
                           message="inconsistent spec: the chosen groups cannot give the top-k")
        elif group_topk is not None:
            raise fail(PREFIX + "group_topk", "group_topk without num_groups", f"set {PREFIX}num_groups",
                       message="inconsistent spec: group_topk needs groups")
        if values[PREFIX + "load_balancing"] == "seq_aux_loss" and values[PREFIX + "score"] != "softmax":
            raise fail(PREFIX + "load_balancing", "seq_aux_loss with sigmoid scores", "softmax scores",
                       message="porter ports DeepSeek's sequence-level loss over softmax scores (DeepSeek-V2's)")
        if values[PREFIX + "expert_bias"] and values[PREFIX + "group_score"] == "max" and groups is not None:
            raise fail(PREFIX + "group_score", "a correction bias with groups scored by their best expert",
                       "group_score = 'top2_sum' (DeepSeek-V3's grouping with a bias)",
                       message="inconsistent spec: DeepSeek's grouping with a bias sums each group's two best")

    def plan(self, p):
        if not (p.values.get("experts") or {}).get("porter_layer"):
            raise unsupported("DeepSeek's router is built on porter's MoE layer; the tree has its own", TRANSFORMER,
                              "porter's Router (megatron/model/mixture_of_experts.py)", "the tree's own MoE layer")
        spec = p.spec
        options = {}
        for key, (switch, keyword) in OPTIONS.items():
            options[keyword] = f"args.{p.switch(switch, on=spec[PREFIX + key], field=PREFIX + key).dest}"
        options["loss_coeff"] = f"args.{p.switches['moe_loss_coeff'].dest}"
        p.describe_model("DeepSeek's router: " + ", ".join(self._said(spec)))
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.grouped_routing import GroupedRouter",
                      "imports DeepSeek's router")
        p.edit(TRANSFORMER, SWITCH, "the MoE layer routes with DeepSeek's router (scores, correction bias, groups, "
               "scaling, sequence-level loss by switch)", rw(G.GroupedRouterCall, cls="ParallelTransformerLayer",
                                                             options=options))
        p.create(FILE, SWITCH, "DeepSeek's router", "grouped_routing.py.j2")

    @staticmethod
    def _said(spec) -> list[str]:
        said = [f"{spec[PREFIX + 'score']} scores"]
        if spec[PREFIX + "expert_bias"]:
            said.append("a correction bias to choose")
        if spec[PREFIX + "num_groups"]:
            said.append(f"the best {spec[PREFIX + 'group_topk']} of {spec[PREFIX + 'num_groups']} groups")
        if spec[PREFIX + "scaling_factor"] != 1.0:
            said.append(f"weights times {spec[PREFIX + 'scaling_factor']:g}")
        if spec[PREFIX + "load_balancing"] == "seq_aux_loss":
            said.append("a sequence-level balance loss")
        return said

    def weights(self, layer):
        fields = BY_MODEL_TYPE.get(layer.config.get("model_type"))
        if fields is not None and fields.expert_bias:
            correction_bias(layer)

    def from_hf(self, config):
        fields = BY_MODEL_TYPE.get(config.get("model_type"))
        if fields is None:
            return {}
        if not fields_of(config.get("model_type")).experts(config):  # every layer dense: no router
            return {key: field.base for key, field in self.fields.items()}

        read, raw = as_read(config), raw_of(config)

        def field(name):  # as transformers reads it where its class has the field, else as the file says
            return read.get(name) if read.defines(name) else raw.get(name)

        scoring = field("scoring_func")
        if scoring is not None and scoring != fields.score:
            raise _disagrees(config, "scoring_func", scoring, fields.score)
        method = field("topk_method")
        method = next(iter(fields.methods)) if method is None else method
        if method not in fields.methods:
            raise _disagrees(config, "topk_method", method, " or ".join(map(repr, fields.methods)))
        out = {PREFIX + "score": fields.score, PREFIX + "expert_bias": fields.expert_bias,
               PREFIX + "scaling_factor": float(field("routed_scaling_factor"))}
        group_score = fields.methods[method]
        if group_score is not None:
            if field("n_group") is None or field("topk_group") is None:
                raise PorterError(f"topk_method {method!r} without its groups", file=config.path,
                                  construct="n_group and topk_group", found=f"n_group = {config.get('n_group')!r}, "
                                  f"topk_group = {config.get('topk_group')!r}", fix="set both")
            out.update({PREFIX + "num_groups": int(field("n_group")), PREFIX + "group_topk": int(field("topk_group")),
                        PREFIX + "group_score": group_score})
        if raw.get("aux_loss_alpha"):  # DeepSeek's own training loss: fields of the file, not of the class
            if raw.get("seq_aux") is False:
                raise PorterError("porter ports DeepSeek's sequence-level load-balancing loss only", file=config.path,
                                  construct="seq_aux = true with aux_loss_alpha > 0",
                                  found=f"seq_aux = false, aux_loss_alpha = {raw['aux_loss_alpha']}",
                                  fix="set seq_aux to true (DeepSeek-V2's), or aux_loss_alpha to 0")
            out[PREFIX + "load_balancing"] = "seq_aux_loss"
        return out

    def to_hf(self, spec, config):
        fields = BY_MODEL_TYPE.get(config.get("model_type"))
        if fields is not None and spec["moe.num_experts"] is None:
            return  # no experts, no router (the MoE difference makes every layer dense)
        if fields is None:
            if self.wanted(spec):
                raise PorterError(f"{spec.hf_class} has no DeepSeek router", file=spec.path, construct="[moe.router]",
                                  found=", ".join(self._said(spec)),
                                  fix="name a DeepSeek class (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM)")
            return
        group_score = spec[PREFIX + "group_score"] if spec[PREFIX + "num_groups"] else None
        method = next((m for m, g in fields.methods.items() if g == group_score), None)
        found = []
        if spec[PREFIX + "score"] != fields.score:
            found.append(f"score = {spec[PREFIX + 'score']!r}")
        if bool(spec[PREFIX + "expert_bias"]) != fields.expert_bias:
            found.append(f"expert_bias = {spec[PREFIX + 'expert_bias']}")
        if method is None:
            found.append(f"groups scored by {group_score}" if group_score else "no groups")
        if found:
            raise PorterError(f"{spec.hf_class} routes otherwise", file=spec.path, construct="[moe.router]",
                              found=", ".join(found), fix="a spec of that class's routing, or another class")
        config.update(scoring_func=fields.score, topk_method=method, routed_scaling_factor=spec[PREFIX + "scaling_factor"])
        if spec[PREFIX + "load_balancing"] == "seq_aux_loss":  # DeepSeek's own field (the class has none)
            config["seq_aux"] = True
        # no groups: one group of every expert (DeepSeek-V2-Lite's n_group = topk_group = 1), the same choice
        config.update(n_group=spec[PREFIX + "num_groups"] or 1, topk_group=spec[PREFIX + "group_topk"] or 1)

    def tiny(self, spec, tiny):
        """Groups that choose (4 of 16 experts each, 2 groups kept, top-3), the spec's scores,
        bias, scaling and loss."""
        if not self.wanted(spec) or not spec[PREFIX + "num_groups"]:
            return {}
        return {PREFIX + "num_groups": 4, PREFIX + "group_topk": 2, "moe.top_k": 3}


def _disagrees(config, name, found, computed) -> PorterError:
    return PorterError(
        f"config.json's {name} disagrees with what transformers' {config.get('model_type')} router computes",
        file=config.path, construct=f"{name}: {computed} (or absent)", found=f"{name} = {found!r}",
        fix=f"set {name} to {computed} if transformers' model is the one you train, or port this model by hand")
