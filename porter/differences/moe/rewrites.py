"""Rewrites for a sparse mixture-of-experts MLP on DeepSpeed's own MoE layer (Mixtral, Qwen3-MoE).

Trees shaped like microsoft/Megatron-DeepSpeed f01c9e6e carry the plumbing already: the
layer, the stack and the language model take `num_experts`, the layer returns
(output, moe_loss), pretrain_gpt.py adds the MoE losses. What such a tree may lack is the
layer itself; these rewrites add it where the tree refuses it (`assert num_experts == 1`):
the layer wraps its ParallelMLP in `deepspeed.moe.layer.MoE` with the model's router, the
stack hands each layer its expert count, the layer's forward takes the MoE layer's (output,
routing statistics, counts), and ParallelMLP takes a width of its own for the experts.
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code, dotted, expression, mentions, statements, with_comment
from porter.edits.base import Rewrite

MOE_CALL = "MoE"


class _TakesExperts(Rewrite):
    """A rewrite of a function that must take the expert count as a parameter (microsoft's plumbing)."""

    experts = "num_experts"

    def leave_FunctionDef(self, original, updated):
        params = updated.params
        self._params = {p.name.value for p in (*params.params, *params.posonly_params, *params.kwonly_params)}
        return super().leave_FunctionDef(original, updated)

    def takes_experts(self) -> bool:
        if self.experts in getattr(self, "_params", ()):
            return True
        self.missing(f"{self.where()} takes no `{self.experts}` parameter (the tree lacks microsoft's MoE plumbing: "
                     "the stack and the layer taking num_experts)")
        return False


class DropExpertsRefusal(Rewrite):
    """Remove the tree's `assert ...num_experts... == 1` refusal of mixture-of-experts.

    Why: the sample tree (and trees trimmed like it) keep microsoft's `num_experts`
    arguments but assert that every count is 1, in the argument checks, the layer and the
    stack. The MoE difference's own rewrites and argument checks take their place. A
    function with no such assert has nothing to remove.
    """

    construct = "`assert <test on num_experts> == 1, ...` (the tree's refusal of mixture-of-experts)"

    cls: str | None
    func: str
    name: str

    def _refuses(self, stmt) -> bool:
        for node in findall(stmt, m.Assert()):
            if mentions(node.test, self.name) and findall(node.test, m.Integer("1")):
                return True
        return False

    def rewrite_body(self, body):
        kept = [s for s in body if not (isinstance(s, cst.SimpleStatementLine) and self._refuses(s))]
        if len(kept) == len(body):
            self.already_done()
            return body
        self.anchored()
        removed = next(i for i, s in enumerate(body) if not any(s is k for k in kept))
        if removed < len(body) - 1:
            # the removed assert's comments stay with the statement that followed it
            following = body[removed + 1]
            lines = [*body[removed].leading_lines, *following.leading_lines]
            kept = [following.with_changes(leading_lines=lines) if s is following else s for s in kept]
        return kept


def one_line(call: cst.Call) -> str:
    """`f(a, b=c)` on one line, whatever the layout of the call."""
    parts = [(f"{a.keyword.value}=" if a.keyword else "") + code(a.value) for a in call.args]
    return f"{code(call.func)}({', '.join(parts)})"


class SparseMLP(_TakesExperts):
    """Build DeepSpeed's MoE layer around the tree's MLP when the layer has experts, with the
    model's router in its gate's place and every expert drawn on its own.

    Why: a mixture of experts replaces the MLP with `num_experts` copies of it (the experts) and
    a router that sends each token to its top-k experts, their outputs summed with the router's
    weights. DeepSpeed's `MoE` holds the tree's own ParallelMLP as the expert (its fused gate+up
    projection is HF's gate_up_proj), shards the experts over expert-parallel ranks (and, at a
    tensor-parallel size above 1, each expert over the tensor-parallel ranks, as the tree's
    ParallelMLP is) and moves the tokens. Its gates cannot route as the model does (they
    renormalise always, drop tokens over a capacity, give a first-choice loss per layer), so the
    layer puts the port's `Router` (megatron/model/mixture_of_experts.py) in the gate's place,
    and draws each expert on its own (DeepSpeed copies one MLP into every expert). The router
    needs the layer's number (its draw is seeded by it). An expert narrower than the dense MLP
    (Qwen3-MoE) is built at its own width (`built_at_width`: the tree's MLP reads its width from
    the args).
    """

    construct = "`self.mlp = ParallelMLP(...)` in ParallelTransformerLayer.__init__ (which takes num_experts)"

    func = "__init__"
    cls: str
    experts: str
    topk: str
    expert_parallel: str
    normalize: str
    expert_width: str | None = None  # the experts' own MLP width (the tree's MLP reads it from the args)
    layer_number: str = "layer_number"

    def _router(self, attr: str) -> str:
        """The router in the gate's place and the experts drawn, as lines of code."""
        gate = f"self.{attr}.deepspeed_moe.gate = Router("
        draw = "draw_experts("
        seed = f"(args.seed, {self.layer_number})"
        return (f"{gate}args.hidden_size, {self.experts}, k={self.topk},\n"
                f"{' ' * len(gate)}normalize={self.normalize}, std=args.init_method_std,\n"
                f"{' ' * len(gate)}seed={seed}, pad_to=args.tensor_model_parallel_size)\n"
                f"{draw}self.{attr}, args.init_method_std, args.num_layers, {seed},\n"
                f"{' ' * len(draw)}args.tensor_model_parallel_size)\n")

    @staticmethod
    def _mlp(stmt):
        for assign in findall(stmt, m.Assign(value=m.Call())):
            target = assign.targets[0].target
            callee = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
            if isinstance(target, cst.Attribute) and dotted(target.value) == "self" and callee == "ParallelMLP":
                return target.attr.value, assign.value
        return None

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: findall(s, m.Call(func=m.Name(MOE_CALL)))):
            return body
        if not self.takes_experts():
            return body
        if self.layer_number not in self._params:
            self.missing(f"{self.where()} takes no `{self.layer_number}` parameter (the router's draw is seeded by it)")
            return body
        if not any("self.num_experts" in assigned_names(s) for s in body):
            self.missing("no `self.num_experts = ...` (the layer's forward tells dense from sparse by it)")
            return body
        index = next((i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine) and self._mlp(s)), None)
        if index is None:
            self.missing("no `self.<mlp> = ParallelMLP(...)` statement")
            return body
        attr, call = self._mlp(body[index])
        dense = one_line(call)
        expert = dense if self.expert_width is None else f"built_at_width(args, {self.expert_width}, lambda: {dense})"
        indent = " " * len(f"self.{attr} = {MOE_CALL}(")
        keywords = {"num_experts": self.experts, "ep_size": self.expert_parallel,
                    "enable_expert_tensor_parallelism": "args.tensor_model_parallel_size > 1"}
        keyword_lines = "".join(f",\n    {indent}{key}={value}" for key, value in keywords.items())
        router = "".join(f"    {line}\n" for line in self._router(attr).splitlines())
        new = statements(
            f"if {self.experts} > 1:\n"
            f"    self.{attr} = {MOE_CALL}(args.hidden_size,\n"
            f"    {indent}{expert}{keyword_lines})\n"
            f"{router}"
            f"else:\n"
            f"    self.{attr} = {dense}\n"
        )[0]
        new = with_comment(new, "Mixture of experts: DeepSpeed's MoE layer holds the experts (copies of ParallelMLP, sharded")
        new = with_comment(new, "over expert-parallel ranks) and moves the tokens; the model's router takes its gate's")
        new = with_comment(new, "place, and every expert is drawn on its own (megatron/model/mixture_of_experts.py).")
        new = new.with_changes(leading_lines=[*body[index].leading_lines, *new.leading_lines])
        self.anchored()
        return [*body[:index], new, *body[index + 1:]]


class ExpertsPerLayer(_TakesExperts):
    """Give each layer its expert count: `build_layer(number, 1)` ->
    `build_layer(number, experts_of_layer(num_experts, number, <interval>, <dense layers>))`.

    Why: the stack passes 1 to every layer whatever `num_experts` says. `--num-experts`
    holds one count for every layer or one per layer; the model may keep a dense MLP in some
    layers (HF's decoder_sparse_step: experts in every interval-th layer; mlp_only_layers).
    `experts_of_layer` (megatron/model/mixture_of_experts.py) picks the layer's count by its
    global number, so the pipeline stages agree.
    """

    construct = "`<builder>(<layer number>, 1)` inside ParallelTransformer.__init__'s layer list"

    func = "__init__"
    cls: str
    experts: str
    interval: str = "1"
    dense_layers: str = "()"

    def rewrite_body(self, body):
        builders = {s.name.value for s in body if isinstance(s, cst.FunctionDef)}
        if self.recognised(body, lambda s: findall(s, m.Call(func=m.Name("experts_of_layer")))):
            return body
        if not self.takes_experts():
            return body
        out = []
        for stmt in body:
            for call in findall(stmt, m.Call(func=m.Name())):
                if call.func.value in builders and len(call.args) == 2 and m.matches(call.args[1].value, m.Integer("1")):
                    number = code(call.args[0].value)
                    new_arg = call.args[1].with_changes(value=expression(
                        f"experts_of_layer({self.experts}, {number}, {self.interval}, {self.dense_layers})"))
                    stmt = stmt.deep_replace(call, call.with_changes(args=[call.args[0], new_arg]))
                    self.anchored()
                    break
            out.append(stmt)
        if not self._hits:
            self.missing("no call of a nested layer builder with 1 as its expert count")
            return body
        return out


class MoEForward(Rewrite):
    """Take the MoE layer's (output, routing statistics, expert counts) where the layer runs its MLP.

    Why: the tree's MLP returns (output, bias); DeepSpeed's MoE returns the output, what its
    gate gave as the loss (the port's router: this layer's routing statistics) and the tokens
    each expert got. The statistics become the layer's `moe_loss`, which the tree already
    returns up the stack: the model pools its MoE layers' statistics into one load-balancing
    loss (the model's own, over all layers; its coefficient applied there, once). The experts
    add no bias (DeepSpeed drops the one ParallelMLP returns apart, so the spec refuses an MLP
    bias with experts).
    """

    construct = "`<out>, <bias> = self.mlp(<input>)` and a `moe_loss = ...` in ParallelTransformerLayer.forward"

    func = "forward"
    cls: str
    attr: str = "mlp"

    def _runs_mlp(self, stmt, targets=2):
        if not isinstance(stmt, cst.SimpleStatementLine):
            return None
        for assign in findall(stmt, m.Assign(value=m.Call())):
            target = assign.targets[0].target
            if dotted(assign.value.func) == f"self.{self.attr}" and isinstance(target, cst.Tuple) \
                    and len(target.elements) == targets:
                return assign
        return None

    def rewrite_body(self, body):
        if self.recognised(body, lambda s: isinstance(s, cst.If) and any(
                self._runs_mlp(t, 3) for t in findall(s, m.SimpleStatementLine()))):
            return body
        index = next((i for i, s in enumerate(body) if self._runs_mlp(s)), None)
        if index is None or not any("moe_loss" in {dotted(t.target) for a in findall(s, m.Assign()) for t in a.targets}
                                    for s in body[:index]):
            self.missing("no `x, bias = self.mlp(...)` after a `moe_loss = ...`")
            return body
        assign = self._runs_mlp(body[index])
        output, bias = (code(e.value) for e in assign.targets[0].target.elements)
        argument = code(assign.value.args[0].value)
        new = statements(
            f"""
            if self.num_experts == 1:
                {output}, {bias} = self.{self.attr}({argument})
            else:
                # DeepSpeed's MoE layer: (output, the router's routing statistics, tokens per expert), no
                # bias; the model pools every MoE layer's statistics into its load-balancing loss
                {output}, moe_loss, _ = self.{self.attr}({argument})
                {bias} = None
            """
        )[0]
        new = new.with_changes(leading_lines=body[index].leading_lines)
        self.anchored()
        return [*body[:index], new, *body[index + 1:]]
