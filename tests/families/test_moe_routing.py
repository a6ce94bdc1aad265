"""The MoE difference's routing as the model defines it: the load-balancing loss of the port's
generated code against transformers' load_balancing_loss_func (values and gradients, Mixtral's
top-2 and Qwen3-MoE's top-8 without renormalisation), and what the router and the experts
start as in a ported tree at expert-parallel size 2."""

import importlib
import importlib.util
import json

import pytest
import torch

from porter import convert
from porter.catalog import load_spec
from porter.naming import spec_in_tree
from porter.source import SourceTree
from porter.treerun.argv import tokenizer_argv, tree_job
from porter.treerun.in_tree import run_in_tree
from porter.treerun.shape import tiny_spec
from porter.verify.reference import TinyConfig

MIXTRAL = load_spec("mixtral")


@pytest.fixture(scope="module")
def generated(moe_tree):
    """The port's megatron/model/mixture_of_experts.py, imported from the tree (it needs torch only)."""
    found = importlib.util.spec_from_file_location("ported_mixture_of_experts",
                                                   moe_tree / "megatron/model/mixture_of_experts.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("experts", "k", "normalize", "family"), [
    (8, 2, True, "mixtral"), (16, 8, False, "qwen3_moe")], ids=["mixtral", "qwen3_moe"])
def test_the_load_balancing_loss_is_transformers_over_all_layers(generated, experts, k, normalize, family):
    """Three MoE layers (a dense one between them) through the port's Router and the model's
    load_balancing_loss, against transformers' load_balancing_loss_func on the same router logits
    times router_aux_loss_coef: the loss and every router's gradient."""
    reference = importlib.import_module(f"transformers.models.{family}.modeling_{family}").load_balancing_loss_func
    torch.manual_seed(0)
    hidden, tokens, coeff = 16, 40, 0.02
    routers = [generated.Router(hidden, experts, k=k, normalize=normalize, std=0.5, seed=(7, n)) for n in range(3)]
    inputs = [torch.randn(tokens, hidden) for _ in routers]
    returned = []
    for n, (router, x) in enumerate(zip(routers, inputs, strict=True)):
        returned.append(router(x, None, True)[0])  # DeepSpeed's MOELayer calls it so; [0] is its l_aux
        if n == 0:
            returned.append(torch.tensor(0.0))  # what a dense layer returns
    (mine,) = generated.load_balancing_loss(returned, coeff)
    mine.backward()

    weights = [r.wg.weight.detach().clone().requires_grad_() for r in routers]
    theirs = coeff * reference(tuple(x @ w.t() for x, w in zip(inputs, weights, strict=True)), experts, k)
    theirs.backward()
    assert abs(mine.item() - theirs.item()) <= 1e-6 * theirs.item(), (mine.item(), theirs.item())
    for router, weight in zip(routers, weights, strict=True):
        assert weight.grad.abs().max() > 0
        torch.testing.assert_close(router.wg.weight.grad, weight.grad, rtol=1e-5, atol=1e-9)


def test_the_router_weighs_the_top_k_as_the_model_does(generated):
    """Renormalised (Mixtral, norm_topk_prob) or the softmax's own probabilities (Qwen3-MoE
    without it), every token kept (no capacity limit: the capacity is the busiest expert's count)."""
    torch.manual_seed(1)
    x = torch.randn(30, 16)
    for normalize in (True, False):
        router = generated.Router(16, 8, k=3, normalize=normalize, std=0.5, seed=(1, 1))
        _, capacity, experts, indices, locations, weights, counts = router(x, None, True)
        probs = torch.softmax(x @ router.wg.weight.t(), dim=-1)
        top, chosen = probs.topk(3, dim=-1)
        assert torch.equal(indices.t().long(), chosen) and experts == 8
        torch.testing.assert_close(weights.t(), top / top.sum(-1, keepdim=True) if normalize else top)
        assert capacity == int(counts.max()) and counts.sum() == 30 * 3 and (locations >= 0).all()
        dense = router(x)  # older DeepSpeed's dense dispatch: the same routes
        assert dense[1].shape == (30, 8, capacity) and torch.equal(dense[2], dense[1] > 0)
        torch.testing.assert_close(dense[1].sum(dim=(1, 2)), weights.sum(0))


def test_router_and_experts_start_independent_with_the_models_std(moe_tree, tmp_path):
    """The tree builds MixtralModel at expert-parallel size 2 (two processes, four experts each):
    the router is the model's (N(0, init_method_std), the same on both ranks) and every expert is
    its own draw (N(0, std) in, N(0, std / sqrt(2 * layers)) out): DeepSpeed's MoE layer alone
    would copy one MLP into all of them and leave the router at torch's default init."""
    tree = SourceTree.open(moe_tree)
    spec = spec_in_tree(MIXTRAL, tree)
    port = convert.Port(spec, moe_tree)
    tiny = TinyConfig()
    argv = port.expert_parallel_argv(2) + port.run_argv(tiny_spec(spec, tiny)) + \
        tokenizer_argv(spec, port.profile, tmp_path)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"tree": tree_job(spec, tree, port.profile, tiny, argv_extra=argv, dp=2),
                               "out": str(tmp_path / "out")}))
    run_in_tree(moe_tree, "tests.helpers.moe_start", job, 2, tmp_path / "run.log", 600, "building MixtralModel")
    ranks = [torch.load(tmp_path / f"out/rank{r}.pt", weights_only=False) for r in (0, 1)]
    std = spec.training_defaults["init_method_std"]
    layers = sorted(ranks[0])
    assert len(layers) == tiny.num_layers
    for layer in layers:
        router = ranks[0][layer]["router"]
        assert ranks[0][layer]["router_class"] == "Router" and torch.equal(router, ranks[1][layer]["router"])
        assert abs(router.std().item() / std - 1) < 0.15, router.std()
        experts = {**ranks[0][layer]["experts"], **ranks[1][layer]["experts"]}
        assert sorted(experts) == list(range(8))
        fc1, fc2 = (f"{name}.weight" for name in ("dense_h_to_4h", "dense_4h_to_h"))
        for weights in experts.values():
            assert abs(weights[fc1].std().item() / std - 1) < 0.1
            assert abs(weights[fc2].std().item() / (std / (2 * tiny.num_layers) ** 0.5) - 1) < 0.1
        flat = torch.stack([torch.cat([w.flatten() for w in e.values()]) for e in experts.values()])
        correlation = torch.corrcoef(flat) - torch.eye(8)
        assert correlation.abs().max() < 0.05, correlation  # eight draws, none a copy of another
    assert not torch.equal(ranks[0][layers[0]]["router"], ranks[0][layers[1]]["router"])
