"""A sparse mixture-of-experts MLP (Mixtral): DeepSpeed's MoE layer around the tree's ParallelMLP.

Spec: `moe.num_experts` (unset: a dense MLP; Mixtral: 8), `moe.top_k` (experts per token,
default 2) and `moe.aux_loss_coef` (the router's load-balancing loss in training; Mixtral
8x7B: 0.02). Every layer is sparse. The router is HF's: softmax over the experts, the top-k,
renormalised to sum to 1 -- DeepSpeed's top-2 gate (and its top-k gate, k > 2) computes
exactly that once token dropping and the Gumbel noise on the second expert are off, which
they are by default here, so eval logits are deterministic. Top-1 is refused: DeepSpeed
weighs a single expert by its probability, HF's renormalisation by 1.

Switches, spelled as microsoft/Megatron-DeepSpeed spells them (and reused where a tree
implements them): the tree's `--num-experts` (a count per layer), `--topk`,
`--moe-expert-parallel-size`, `--disable-moe-token-dropping`,
`--disable-moe-top2-2nd-expert-sampling`, `--moe-loss-coeff`. When porter adds the layer
(rewrites.py here) it replaces the tree's `assert num_experts == 1` refusals. The MoE
model runs on the plain DeepSpeed engine (`--no-pipeline-parallel`, a default of the entry
point; the generated <Prefix>ModelPipe refuses experts) and with a tensor-parallel size of 1
(the experts are whole ParallelMLPs); expert parallelism shards the experts over
data-parallel ranks.
Weights (weights.py here): each expert is a ParallelMLP, router `deepspeed_moe.gate.wg`;
DeepSpeed checkpoints every expert in a file of its own.
HF: `num_local_experts`, `num_experts_per_tok`, `router_aux_loss_coef`; `router_jitter_noise`
other than 0 is refused (noise on the router's input in training, which DeepSpeed's gate does
not add the same way).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.moe import rewrites as E
from porter.differences.moe import weights as W
from porter.differences.moe.probes import expert_probes
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import ARGUMENTS, TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import number

SWITCH = "experts"
TRAINING = "_add_training_args"
DISTRIBUTED = "_add_distributed_args"
# microsoft's implementation uses these in transformer.py; porter's rewrites never write them
MICROSOFT = ((TRANSFORMER, "expert_interval"),)


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
    "moe_token_dropping": _spelling("moe_token_dropping", "--disable-moe-token-dropping", "moe_token_dropping", False,
                                    "not args.moe_token_dropping", TRAINING,
                                    ("action", "'store_false'"), ("dest", "'moe_token_dropping'"),
                                    ("help", "'Every token reaches its experts (no capacity limit).'")),
    "moe_second_expert_sampling": _spelling(
        "moe_second_expert_sampling", "--disable-moe-top2-2nd-expert-sampling", "moe_top2_2nd_expert_sampling", False,
        "not args.moe_top2_2nd_expert_sampling", TRAINING,
        ("action", "'store_false'"), ("dest", "'moe_top2_2nd_expert_sampling'"),
        ("help", "'Top-2 routing picks the second expert by probability, without Gumbel noise.'")),
    # microsoft's trees put experts in every expert_interval-th layer (default 2); Mixtral: every layer
    "moe_interval": (tree_spelling("moe_interval", "--expert-interval", "expert_interval", 1, "args.expert_interval == 1",
                                   MICROSOFT),),
    "moe_loss_coeff": _spelling("moe_loss_coeff", "--moe-loss-coeff", "moe_loss_coeff", None, "args.moe_loss_coeff > 0",
                                TRAINING, ("type", "float"), ("default", "0.01"),
                                ("help", "'Weight of the router load-balancing loss in the training loss.'")),
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
        "moe.aux_loss_coef": number(None, low=None, help="weight of the router's load-balancing loss in training"),
    }
    switch_fields = {"moe_top_k": "moe.top_k", "moe_loss_coeff": "moe.aux_loss_coef"}
    hf_fields = ("num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "router_jitter_noise")
    spellings = SPELLINGS
    pipeline_engine = False
    apart_tensors = "porter.differences.moe.weights:rank_experts"
    model_slots = {"imports": "model_imports.py.j2", "save": "model_save.py.j2", "load": "model_load.py.j2",
                   "pipe_init": "model_pipe_init.py.j2"}

    def wanted(self, spec):
        return spec["moe.num_experts"] is not None

    def validate(self, values, given, fail):
        count, k, coef = values["moe.num_experts"], values["moe.top_k"], values["moe.aux_loss_coef"]
        if count is None:
            for key in ("moe.top_k", "moe.aux_loss_coef"):
                if key in given:
                    raise fail(key, f"{key} = {values[key]!r} without moe.num_experts",
                               "set moe.num_experts, or remove " + key,
                               message=f"inconsistent spec: {key} needs experts (moe.num_experts)")
            return
        k = k or 2
        if k > count:
            raise fail("moe.top_k", f"top_k = {k} of {count} experts", "route each token to at most num_experts experts",
                       message="inconsistent spec: more experts per token than experts")
        if k == 1:
            raise fail("moe.top_k", "top_k = 1",
                       "route each token to 2 experts or more (DeepSpeed's top-1 gate weighs the expert by its "
                       "router probability; HF renormalises it to 1)",
                       message="porter cannot port top-1 routing with HF's weights")
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
        p.describe_model("a sparse MLP: DeepSpeed's MoE layer routes each token to the top-k of the experts\n"
                         f"    (args.{num.dest}); the plain engine only ({spec.model_class}Pipe refuses experts)")
        k = p.switch("moe_top_k", on=top_k(spec), field="moe.top_k")
        parallel = p.switch("moe_expert_parallel")
        dropping = p.switch("moe_token_dropping")
        sampling = p.switch("moe_second_expert_sampling")
        coeff = p.switch("moe_loss_coeff", on=spec["moe.aux_loss_coef"], field="moe.aux_loss_coef")
        if p.profile.spellings.get("moe_interval") is not None:
            p.switch("moe_interval")
        if not p.has_dest("no_pipeline_parallel"):
            raise unsupported("the MoE model runs on DeepSpeed's plain engine; this tree has no switch for it",
                              ARGUMENTS, "--no-pipeline-parallel (dest no_pipeline_parallel)", "no such option")
        p.defaults["no_pipeline_parallel"] = True  # the pipe model carries no MoE layers
        p.checks.append(
            f"""
            if max(args.{num.dest}) > 1:
                assert len(args.{num.dest}) in (1, args.num_layers), \\
                    'mixture of experts: {num.option} takes one count for every layer, or one per layer'
                assert args.no_pipeline_parallel, \\
                    'mixture of experts: the model runs on the plain DeepSpeed engine; pass --no-pipeline-parallel'
                assert args.tensor_model_parallel_size == 1, \\
                    'mixture of experts: each expert is a whole ParallelMLP; use --tensor-model-parallel-size 1'
                assert all(n % args.{parallel.dest} == 0 for n in args.{num.dest}), \\
                    'mixture of experts: {parallel.option} must divide the expert counts'
                assert args.data_parallel_size % args.{parallel.dest} == 0, \\
                    'mixture of experts: {parallel.option} must divide the data-parallel size'
                assert 2 <= args.{k.dest} <= min(n for n in args.{num.dest} if n > 1), \\
                    'mixture of experts: {k.option} must be 2 or more (and no more than the experts)'
            """
        )
        p.values[SWITCH] = {"counts": f"args.{num.dest}", "porter_layer": not p.implemented(SWITCH)}
        if p.implemented(SWITCH):
            if p.profile.spellings.get("moe_second_expert_sampling") is None:
                raise unsupported(
                    "the tree's MoE layer samples the second expert with Gumbel noise, even in eval", TRANSFORMER,
                    "--disable-moe-top2-2nd-expert-sampling passed to MoE(top2_2nd_expert_sampling=...)",
                    "the tree's MoE(...) without that switch: HF's top-2 routing cannot be reproduced")
            return
        layer, stack = "ParallelTransformerLayer", "ParallelTransformer"
        p.edit(ARGUMENTS, SWITCH, f"the tree refused experts; the MoE checks ({num.option}) take its place",
               rw(E.DropExpertsRefusal, cls=None, func=p.checks_function, name=f"args.{num.dest}"))
        p.import_into(TRANSFORMER, SWITCH, "from deepspeed.moe.layer import MoE", "imports DeepSpeed's MoE layer")
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.mixture_of_experts import experts_of_layer",
                      "imports the per-layer expert count")
        for cls in (layer, stack):
            p.edit(TRANSFORMER, SWITCH, f"{cls} refused experts", rw(E.DropExpertsRefusal, cls=cls, func="__init__",
                                                                    name="num_experts"))
        p.edit(TRANSFORMER, SWITCH, "a layer with experts wraps ParallelMLP in DeepSpeed's MoE layer",
               rw(E.SparseMLP, cls=layer, experts="num_experts", topk=f"args.{k.dest}",
                  expert_parallel=f"args.{parallel.dest}", token_dropping=f"args.{dropping.dest}",
                  second_expert_sampling=f"args.{sampling.dest}", loss_coeff=f"args.{coeff.dest}"))
        p.edit(TRANSFORMER, SWITCH, "the MoE layer returns its load-balancing loss as the layer's moe_loss",
               rw(E.MoEForward, cls=layer))
        p.edit(TRANSFORMER, SWITCH, "each layer gets its expert count from --num-experts",
               rw(E.ExpertsPerLayer, cls=stack, experts="num_experts"))
        p.create("megatron/model/mixture_of_experts.py", SWITCH,
                 "experts per layer, and the experts' place in checkpoints", "mixture_of_experts.py.j2")

    def probes(self, layer):
        expert_probes(layer)

    def weights(self, layer):
        W.expert_weights(layer)

    def expert_parallel_argv(self, switches, size):
        spelling = switches.get("moe_expert_parallel")
        return None if spelling is None else [spelling.option, str(size)]

    def check_checkpoint(self, layout, pipe, tp):
        W.check_engine(pipe, tp)

    def client_state(self, weights):
        return W.client_state(weights)

    def from_hf(self, config):
        count = config.get("num_local_experts")
        jitter = config.get("router_jitter_noise") or 0.0
        if jitter:
            raise PorterError(
                "porter cannot port router jitter noise", file=config.path,
                construct="router_jitter_noise = 0 (no noise on the router's input)",
                found=f"router_jitter_noise = {jitter!r}",
                fix="set router_jitter_noise to 0.0 in config.json (it only acts in training), or port this model by hand",
            )
        if count is None:
            return {}
        out = {"moe.num_experts": int(count), "moe.top_k": int(config.get("num_experts_per_tok") or 2)}
        if config.get("router_aux_loss_coef") is not None:
            out["moe.aux_loss_coef"] = float(config["router_aux_loss_coef"])
        return out

    def to_hf(self, spec, config):
        if not self.wanted(spec):
            return
        config.update(num_local_experts=experts(spec), num_experts_per_tok=top_k(spec), router_jitter_noise=0.0)
        if spec["moe.aux_loss_coef"] is not None:
            config["router_aux_loss_coef"] = spec["moe.aux_loss_coef"]

    def tiny(self, spec, tiny):
        """The spec's own routing (Mixtral: 8 experts, top-2), at most 8 experts."""
        if not self.wanted(spec):
            return {}
        count = min(experts(spec), 8)
        return {"moe.num_experts": count, "moe.top_k": min(top_k(spec), count)}



