"""A sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE): DeepSpeed's MoE layer around the tree's
ParallelMLP, with the model's own router.

Spec: `moe.num_experts` (unset: a dense MLP; Mixtral: 8; Qwen3-30B-A3B: 128), `moe.top_k`
(experts per token: any k from 1 to the experts; default 2), `moe.norm_topk_prob` (the top-k
router probabilities renormalised to sum to 1: Mixtral always, Qwen3-MoE as its config says),
`moe.aux_loss_coef` (the weight of the load-balancing loss in training), `moe.ffn_hidden_size`
(the experts' own MLP width, HF's moe_intermediate_size; unset: the MLP's), and which layers
have experts: `moe.layer_interval` (every k-th layer, HF's decoder_sparse_step) and
`moe.dense_layers` (0-based layers keeping a dense MLP, HF's mlp_only_layers).

What is DeepSpeed's: the MoE layer (deepspeed.moe.layer.MoE): the experts as copies of the
tree's ParallelMLP, sharded over expert-parallel ranks (and each over the tensor-parallel
ranks at TP > 1), the all-to-all that moves tokens to them and back, their checkpoint files.
What is the model's (megatron/model/mixture_of_experts.py, porter's template): the router, in
the place of DeepSpeed's gate (softmax, top-k, renormalised when the model says so, no token
dropped, logits in fp32), the load-balancing loss (transformers' load_balancing_loss_func: the
routing statistics of all MoE layers pooled, the coefficient applied once; the generated
model computes it from what its layers return) and the initialisation (router and every
expert drawn on their own with the model's std).

Switches, spelled as microsoft/Megatron-DeepSpeed spells them where it has them (and reused
where a tree implements them): `--num-experts` (a count per layer), `--topk`,
`--moe-expert-parallel-size`, `--moe-loss-coeff`, `--expert-interval`; porter's own
`--moe-norm-topk-prob`, `--moe-ffn-hidden-size`, `--moe-dense-layers`. When porter adds the
layer (rewrites.py here) it replaces the tree's `assert num_experts == 1` refusals. The MoE
model runs on the plain DeepSpeed engine (`--no-pipeline-parallel`, a default of the entry
point; the generated <Prefix>ModelPipe refuses experts: its stages would have to carry the
routing statistics to the loss), at any tensor-parallel size the heads allow; expert
parallelism shards the experts over data-parallel ranks.
A tree whose own MoE layer implements the switches (microsoft HEAD) keeps its layer and
DeepSpeed's gate: routing DeepSpeed's gate computes as the model does (k >= 2 renormalised,
no dropping, no noise); its load-balancing loss and initialisation are DeepSpeed's.
Weights (weights.py here): each expert is a ParallelMLP, router `deepspeed_moe.gate.wg`;
DeepSpeed checkpoints every expert in a file of its own.
HF (hf.py here): Mixtral's `num_local_experts`, `num_experts_per_tok`, `router_aux_loss_coef`;
Qwen3-MoE's `num_experts`, `norm_topk_prob`, `moe_intermediate_size`, `decoder_sparse_step`,
`mlp_only_layers`; an absent field is transformers' default. `router_jitter_noise` other than 0
is refused (noise on the router's input in training, which the port does not add).
HF adds the load-balancing loss in training only with output_router_logits (false in the
published configs): the port always adds it, weighed by moe.aux_loss_coef (0 turns it off).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.moe import rewrites as E
from porter.differences.moe import weights as W
from porter.differences.moe.hf import every_name, fields_of
from porter.differences.moe.probes import expert_probes
from porter.errors import PorterError
from porter.hf_reading import raw_of
from porter.planner import rw, unsupported
from porter.profile import ARGUMENTS, TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import flag, number, whole_numbers

SWITCH = "experts"
TRAINING = "_add_training_args"
DISTRIBUTED = "_add_distributed_args"
# microsoft's implementation uses these in transformer.py; porter's rewrites never write them
MICROSOFT = ((TRANSFORMER, "moe_train_capacity_factor"),)


def _spelling(switch, option, dest, on, test, group, *add, implemented_by=MICROSOFT) -> tuple[Spelling, ...]:
    """porter's spelling (microsoft's option and dest) and the tree's own, when it has one."""
    return (Spelling(switch, option, dest, on, test, group, tuple(add)),
            tree_spelling(switch, option, dest, on, test, implemented_by))


SPELLINGS = {
    SWITCH: _spelling(SWITCH, "--num-experts", "num_experts", None, "max(args.num_experts) > 1", NETWORK,
                      ("type", "int"), ("nargs", "'+'"), ("default", "[1]"),
                      ("help", "'Experts per layer: one count for every layer, or one per layer (1: a dense MLP).'")),
    "moe_top_k": _spelling("moe_top_k", "--topk", "topk", None, "args.topk > 1", NETWORK,
                           ("type", "int"), ("default", "1"),
                           ("help", "'Experts each token is routed to (top-k of the router).'")),
    "moe_expert_parallel": _spelling("moe_expert_parallel", "--moe-expert-parallel-size", "moe_expert_parallel_size",
                                     None, "args.moe_expert_parallel_size > 1", DISTRIBUTED,
                                     ("type", "int"), ("default", "1"),
                                     ("help", "'Ranks the experts of a layer are sharded over (of the data-parallel ones).'")),
    "moe_norm_topk_prob": (Spelling(
        "moe_norm_topk_prob", "--moe-norm-topk-prob", "moe_norm_topk_prob", True, "args.moe_norm_topk_prob",
        NETWORK, (("action", "'store_true'"),
                  ("help", "'The router weighs each token\\'s top-k experts by their probabilities renormalised to "
                           "sum to 1 (else by the probabilities).'"))),),
    "moe_ffn_hidden_size": (Spelling(
        "moe_ffn_hidden_size", "--moe-ffn-hidden-size", "moe_ffn_hidden_size", None,
        "args.moe_ffn_hidden_size is not None", NETWORK,
        (("type", "int"), ("default", "None"), ("help", "'Each expert\\'s MLP width (default: --ffn-hidden-size).'"))),),
    "moe_dense_layers": (Spelling(
        "moe_dense_layers", "--moe-dense-layers", "moe_dense_layers", None, "len(args.moe_dense_layers) > 0", NETWORK,
        (("type", "int"), ("nargs", "'*'"), ("default", "[]"),
         ("help", "'Layers (0-based) that keep a dense MLP whatever --num-experts says.'"))),),
    # microsoft's trees put experts in every expert_interval-th layer (default 2); porter's option takes
    # microsoft's name, at a default of 1 (every layer)
    "moe_interval": _spelling("moe_interval", "--expert-interval", "expert_interval", None, "args.expert_interval > 1",
                              NETWORK, ("type", "int"), ("default", "1"),
                              ("help", "'Experts in every expert-interval-th layer (layer number divisible by it); "
                                       "a dense MLP in the others.'")),
    "moe_loss_coeff": _spelling("moe_loss_coeff", "--moe-loss-coeff", "moe_loss_coeff", None, "args.moe_loss_coeff > 0",
                                TRAINING, ("type", "float"), ("default", "0.01"),
                                ("help", "'Weight of the router load-balancing loss in the training loss.'")),
    # a tree's own MoE layer (microsoft's) with DeepSpeed's gate: no dropping, no noise
    "moe_token_dropping": (tree_spelling("moe_token_dropping", "--disable-moe-token-dropping", "moe_token_dropping",
                                         False, "not args.moe_token_dropping", MICROSOFT),),
    "moe_second_expert_sampling": (tree_spelling(
        "moe_second_expert_sampling", "--disable-moe-top2-2nd-expert-sampling", "moe_top2_2nd_expert_sampling", False,
        "not args.moe_top2_2nd_expert_sampling", MICROSOFT),),
}


def experts(spec) -> int:
    """The spec's experts per layer (0: a dense MLP)."""
    return spec["moe.num_experts"] or 0


def top_k(spec) -> int:
    return spec["moe.top_k"] or 2


class MixtureOfExperts(Difference):
    name = SWITCH
    fields = {
        "moe.num_experts": number(None, whole=True, low=1, help="experts per layer (Mixtral: 8); unset: a dense MLP"),
        "moe.top_k": number(None, whole=True, low=0, help="experts per token (default 2)"),
        "moe.norm_topk_prob": flag(True, help="the top-k router probabilities renormalised to sum to 1"),
        "moe.aux_loss_coef": number(None, low=None, help="weight of the router's load-balancing loss in training"),
        "moe.ffn_hidden_size": number(None, whole=True, low=0, help="each expert's MLP width (unset: the MLP's)"),
        "moe.layer_interval": number(1, whole=True, low=0,
                                     help="experts in every k-th layer (1-based numbers divisible by it)"),
        "moe.dense_layers": whole_numbers([], help="layers (0-based) that keep a dense MLP"),
    }
    switch_fields = {"moe_top_k": "moe.top_k", "moe_loss_coeff": "moe.aux_loss_coef",
                     "moe_norm_topk_prob": "moe.norm_topk_prob", "moe_ffn_hidden_size": "moe.ffn_hidden_size",
                     "moe_interval": "moe.layer_interval", "moe_dense_layers": "moe.dense_layers"}
    hf_fields = every_name()
    switchable = ("moe.dense_layers",)  # a run's --moe-dense-layers
    spellings = SPELLINGS
    pipeline_engine = False
    apart_tensors = "porter.differences.moe.weights:rank_experts"
    model_slots = {"imports": "model_imports.py.j2", "init": "model_init.py.j2", "losses": "model_losses.py.j2",
                   "save": "model_save.py.j2", "load": "model_load.py.j2", "pipe_init": "model_pipe_init.py.j2"}

    def wanted(self, spec):
        return spec["moe.num_experts"] is not None

    def validate(self, values, given, fail):
        count, k, coef = values["moe.num_experts"], values["moe.top_k"], values["moe.aux_loss_coef"]
        if count is None:
            for key in ("moe.top_k", "moe.aux_loss_coef", "moe.ffn_hidden_size", "moe.dense_layers"):
                if key in given and values[key] not in (None, []):
                    raise fail(key, f"{key} = {values[key]!r} without moe.num_experts",
                               "set moe.num_experts, or remove " + key,
                               message=f"inconsistent spec: {key} needs experts (moe.num_experts)")
            return
        k = k or 2
        if k > count:
            raise fail("moe.top_k", f"top_k = {k} of {count} experts", "route each token to at most num_experts experts",
                       message="inconsistent spec: more experts per token than experts")
        if coef is not None and coef < 0:
            raise fail("moe.aux_loss_coef", repr(coef), "a coefficient of 0 or more",
                       message="invalid spec field moe.aux_loss_coef")
        if values["linear.mlp_bias"] is True or (values["linear.mlp_bias"] is None and values["linear.bias"]):
            raise fail("linear.mlp_bias", "an MLP bias with experts",
                       "set linear.mlp_bias = false (DeepSpeed's experts drop the bias ParallelMLP returns apart)",
                       message="inconsistent spec: DeepSpeed's MoE layer has no MLP bias")

    def plan(self, p):
        spec = p.spec
        num = p.switch(SWITCH, on=[experts(spec)], field="moe.num_experts")
        p.describe_model("a sparse MLP: DeepSpeed's MoE layer sends each token to the top-k of the experts "
                         f"(args.{num.dest}),\n    by the model's router; the plain engine only "
                         f"({spec.model_class}Pipe refuses experts)")
        k = p.switch("moe_top_k", on=top_k(spec), field="moe.top_k")
        parallel = p.switch("moe_expert_parallel")
        coeff = p.switch("moe_loss_coeff", on=spec["moe.aux_loss_coef"], field="moe.aux_loss_coef")
        if not p.has_dest("no_pipeline_parallel"):
            raise unsupported("the MoE model runs on DeepSpeed's plain engine; this tree has no switch for it",
                              ARGUMENTS, "--no-pipeline-parallel (dest no_pipeline_parallel)", "no such option")
        p.defaults["no_pipeline_parallel"] = True  # the pipe model carries no MoE layers
        if p.implemented(SWITCH):
            self._tree_layer(p, num, k)
            return
        norm = p.switch("moe_norm_topk_prob", on=bool(spec["moe.norm_topk_prob"]))
        width = p.switch("moe_ffn_hidden_size", on=spec["moe.ffn_hidden_size"], field="moe.ffn_hidden_size")
        every = p.switch("moe_interval", on=spec["moe.layer_interval"], field="moe.layer_interval")
        dense = p.switch("moe_dense_layers", on=list(spec["moe.dense_layers"]), field="moe.dense_layers")
        self._checks(p, num, k, parallel)
        p.values[SWITCH] = {"counts": f"args.{num.dest}", "porter_layer": True, "coeff": f"args.{coeff.dest}"}
        layer, stack = "ParallelTransformerLayer", "ParallelTransformer"
        p.edit(ARGUMENTS, SWITCH, f"the tree refused experts; the MoE checks ({num.option}) take its place",
               rw(E.DropExpertsRefusal, cls=None, func=p.checks_function, name=f"args.{num.dest}"))
        p.import_into(TRANSFORMER, SWITCH, "from deepspeed.moe.layer import MoE", "imports DeepSpeed's MoE layer")
        p.import_into(TRANSFORMER, SWITCH,
                      "from megatron.model.mixture_of_experts import Router, built_at_width, draw_experts, "
                      "experts_of_layer", "imports the model's router, the experts' width and draw, the per-layer "
                      "expert count")
        for cls in (layer, stack):
            p.edit(TRANSFORMER, SWITCH, f"{cls} refused experts", rw(E.DropExpertsRefusal, cls=cls, func="__init__",
                                                                    name="num_experts"))
        p.edit(TRANSFORMER, SWITCH, "a layer with experts wraps ParallelMLP in DeepSpeed's MoE layer, with the "
               "model's router", rw(E.SparseMLP, cls=layer, experts="num_experts", topk=f"args.{k.dest}",
                                    expert_parallel=f"args.{parallel.dest}", normalize=f"args.{norm.dest}",
                                    expert_width=f"args.{width.dest}"))
        p.edit(TRANSFORMER, SWITCH, "the MoE layer returns its routing statistics as the layer's moe_loss",
               rw(E.MoEForward, cls=layer))
        p.edit(TRANSFORMER, SWITCH, "each layer gets its expert count from --num-experts, --expert-interval and "
               "--moe-dense-layers", rw(E.ExpertsPerLayer, cls=stack, experts="num_experts",
                                        interval=f"args.{every.dest}", dense_layers=f"args.{dense.dest}"))
        p.create("megatron/model/mixture_of_experts.py", SWITCH,
                 "the model's router, the experts' draw, the load-balancing loss, experts per layer, and the experts' "
                 "place in checkpoints", "mixture_of_experts.py.j2")

    def _checks(self, p, num, k, parallel):
        p.checks.append(
            f"""
            if max(args.{num.dest}) > 1:
                assert len(args.{num.dest}) in (1, args.num_layers), \\
                    'mixture of experts: {num.option} takes one count for every layer, or one per layer'
                assert args.no_pipeline_parallel, \\
                    'mixture of experts: the model runs on the plain DeepSpeed engine; pass --no-pipeline-parallel'
                assert all(n % args.{parallel.dest} == 0 for n in args.{num.dest}), \\
                    'mixture of experts: {parallel.option} must divide the expert counts'
                assert args.data_parallel_size % args.{parallel.dest} == 0, \\
                    'mixture of experts: {parallel.option} must divide the data-parallel size'
                assert 1 <= args.{k.dest} <= min(n for n in args.{num.dest} if n > 1), \\
                    'mixture of experts: {k.option} must be 1 or more (and no more than the experts)'
            """
        )

    def _tree_layer(self, p, num, k):
        """The tree's own MoE layer (microsoft's), with DeepSpeed's gate: what it can compute as the model does."""
        spec = p.spec
        found = {"moe.top_k = 1": top_k(spec) == 1, "moe.norm_topk_prob = false": not spec["moe.norm_topk_prob"],
                 "moe.ffn_hidden_size": spec["moe.ffn_hidden_size"] is not None,
                 "moe.dense_layers": bool(spec["moe.dense_layers"])}
        if p.profile.spellings.get("moe_token_dropping") is None:
            found["tokens dropped over a capacity (no --disable-moe-token-dropping)"] = True
        if p.profile.spellings.get("moe_second_expert_sampling") is None:
            found["the second expert sampled with Gumbel noise, even in eval (no "
                  "--disable-moe-top2-2nd-expert-sampling)"] = True
        if any(found.values()):
            what = ", ".join(f for f, on in found.items() if on)
            raise unsupported(
                "the tree's own MoE layer routes with DeepSpeed's gate, which cannot route as this model does",
                TRANSFORMER, "DeepSpeed's gate: top-k >= 2 renormalised, no dropping, no noise, the MLP's width, "
                "experts in every expert-interval-th layer", what)
        p.switch("moe_token_dropping")
        p.switch("moe_second_expert_sampling")
        if p.profile.spellings.get("moe_interval") is not None:
            p.switch("moe_interval", on=spec["moe.layer_interval"], field="moe.layer_interval")
        elif spec["moe.layer_interval"] != 1:
            raise unsupported("the tree's own MoE layer has experts in every layer", TRANSFORMER,
                              "--expert-interval", f"moe.layer_interval = {spec['moe.layer_interval']}")
        p.values[SWITCH] = {"counts": f"args.{num.dest}", "porter_layer": False, "coeff": None}

    def probes(self, layer):
        expert_probes(layer)

    def weights(self, layer):
        W.expert_weights(layer)

    def expert_parallel_argv(self, switches, size):
        spelling = switches.get("moe_expert_parallel")
        return None if spelling is None else [spelling.option, str(size)]

    def check_checkpoint(self, layout, pipe, tp):
        W.check_engine(pipe)

    def client_state(self, weights):
        return W.client_state(weights)

    def from_hf(self, config):
        fields = fields_of(config.get("model_type"))
        jitter = fields.read(config, fields.jitter) or 0.0
        if jitter:
            raise PorterError(
                "porter cannot port router jitter noise", file=config.path,
                construct="router_jitter_noise = 0 (no noise on the router's input)",
                found=f"router_jitter_noise = {jitter!r}",
                fix="set router_jitter_noise to 0.0 in config.json (it only acts in training), or port this model by hand",
            )
        raw = raw_of(config)
        for name, value in fields.agreed.items():
            if raw.get(name) is not None and raw[name] != value:
                raise PorterError(
                    f"config.json sets {name}, which transformers' {config.get('model_type')} model does not read",
                    file=config.path, construct=f"{name} = {value!r} (where transformers and the model's own code agree)",
                    found=f"{name} = {raw[name]!r}",
                    fix=f"set {name} to {value!r} if transformers' model is the one you train, or port this model by hand")
        count = fields.experts(config)
        if not count:  # said outright where the class has experts by default (DeepSeek's, all dense)
            return {"moe.num_experts": None} if fields.all_dense(config) else {}
        out = {"moe.num_experts": count, "moe.top_k": int(fields.read(config, fields.top_k) or 2),
               "moe.norm_topk_prob": fields.renormalised if fields.norm_topk_prob is None else
               bool(fields.read(config, fields.norm_topk_prob))}
        coef = fields.loss_coef(config)
        if coef is not None:
            out["moe.aux_loss_coef"] = float(coef)
        if fields.width is not None:
            out["moe.ffn_hidden_size"] = int(fields.read(config, fields.width))
        if fields.interval is not None:
            out["moe.layer_interval"] = int(fields.read(config, fields.interval) or 1)
        if fields.dense_layers is not None or fields.first_dense is not None:
            out["moe.dense_layers"] = fields.dense_of(config)
        return out

    def to_hf(self, spec, config):
        fields = fields_of(config.get("model_type"))
        if not self.wanted(spec):
            if fields.first_dense is not None and spec["sizes.num_layers"]:  # every layer dense
                config[fields.first_dense] = spec["sizes.num_layers"]
            return
        written = {fields.count: experts(spec), fields.top_k: top_k(spec)}
        if fields.jitter:
            written[fields.jitter] = 0.0
        if spec["moe.aux_loss_coef"] is not None and (spec["moe.aux_loss_coef"] or not fields.own_loss):
            written[fields.aux_loss_coef] = spec["moe.aux_loss_coef"]  # the model's own field: none is no loss
        said = [  # (the config's field, its value, the spec field, whether the spec asks for it)
            (fields.norm_topk_prob, bool(spec["moe.norm_topk_prob"]), "moe.norm_topk_prob",
             bool(spec["moe.norm_topk_prob"]) != fields.renormalised),
            (fields.width, spec["moe.ffn_hidden_size"], "moe.ffn_hidden_size", spec["moe.ffn_hidden_size"] is not None),
            (fields.interval, spec["moe.layer_interval"], "moe.layer_interval", spec["moe.layer_interval"] != 1),
            (fields.dense_layers, list(spec["moe.dense_layers"]), "moe.dense_layers", bool(spec["moe.dense_layers"])),
        ]
        dense = list(spec["moe.dense_layers"])
        if fields.first_dense is not None:
            if dense != list(range(len(dense))):
                raise PorterError(
                    f"{spec.hf_class or 'the HF class'} keeps dense MLPs in its first layers only", file=spec.path,
                    construct="moe.dense_layers = [0, 1, ..., k - 1] (first_k_dense_replace = k)",
                    found=f"moe.dense_layers = {dense!r}", fix="list the first k layers, or name another HF class")
            written[fields.first_dense] = len(dense)
            said.pop()
        for name, value, field, asked in said:
            if name is not None:
                written[name] = value
            elif asked:
                raise PorterError(
                    f"{spec.hf_class or 'the HF class'} has no config field for {field}", file=spec.path,
                    construct=field, found=f"{field} = {spec[field]!r} for model type {config.get('model_type')!r}",
                    fix=f"remove {field}, or name an HF class whose config has it (Qwen3MoeForCausalLM)")
        config.update(written)

    def shrink_hf(self, read, out, layers, seq_length):
        """As many layers as it takes for a layer with experts (and a dense one, where the file
        keeps some) to be among them, as transformers places them: DeepSeek-V3 keeps a dense MLP
        in its first 3 layers, so 2 layers were a dense model (verify then compared another
        architecture, and no expert was proven); the listed dense layers cut to the layers kept."""
        fields = fields_of(read.get("model_type"))
        if not fields.experts(read):
            return []
        dense = set(fields.dense_of(read))
        interval = int(fields.read(read, fields.interval) or 1) if fields.interval else 1
        kinds = {}
        for i in range(read["num_hidden_layers"]):
            kinds.setdefault(i not in dense and (i + 1) % interval == 0, i)
        notes = []
        needed = 1 + max(kinds.values())
        if needed > layers:
            said = " and ".join(f"first {'expert' if sparse else 'dense'} layer ({i})" for sparse, i in sorted(kinds.items()))
            notes.append(f"{needed} layers, not {layers}: its {said} among them")
            layers = out["num_hidden_layers"] = needed
        if fields.dense_layers and isinstance(read.raw.get(fields.dense_layers), list):
            out[fields.dense_layers] = [i for i in read.raw[fields.dense_layers] if i < layers]
        return notes

    def tiny(self, spec, tiny):
        """The spec's own routing at a small size: at most 16 experts, at most half of them per
        token (Mixtral: 8, top-2; Qwen3-MoE: 16, top-8), the experts narrower than the dense MLP
        where the model's are."""
        if not self.wanted(spec):
            return {}
        count = min(experts(spec), 16)
        out = {"moe.num_experts": count, "moe.top_k": max(1, min(top_k(spec), count // 2))}
        if spec["moe.ffn_hidden_size"] is not None:
            out["moe.ffn_hidden_size"] = tiny.hidden_size // 2
        dense = [i for i in spec["moe.dense_layers"] if i < tiny.num_layers]
        out["moe.dense_layers"] = dense[:tiny.num_layers - 1]  # a sparse layer left (DeepSeek-V3: 3 dense first)
        return out
