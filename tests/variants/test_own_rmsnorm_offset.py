"""Gemma's RMSNorm weight offset on a tree with an RMSNorm of its own (microsoft's --normalization rmsnorm,
its own megatron/model/rmsnorm.py; issue 20, a gap met on microsoft HEAD): the tree's class scales by w
alone, so porter writes its RMSNorm under a free name (rmsnorm_porter.py, the tree's rmsnorm.py kept) and
every method that builds the tree's class builds porter's when --rmsnorm-weight-offset is on.

Cheap here: apply once (shared), both models built in one subprocess (a few seconds), re-apply and
revert. `porter verify gemma` on the variant is slow (17 s on a quiet machine)."""

from __future__ import annotations

import json

import pytest

from porter.catalog import load_spec
from porter.port import prepare
from porter.verify.parity import verify
from tests.variants.conftest import passed, python_in_tree, reapply_then_revert

GEMMA = load_spec("gemma")
TRANSFORMER = "megatron/model/transformer.py"
GPT_MODEL = "megatron/model/gpt_model.py"
PORTERS = "megatron.model.rmsnorm_porter.RMSNorm"
TREES = "megatron.model.rmsnorm.RMSNorm"
CHOICE = "rmsnorm_class = OffsetRMSNorm if args.rmsnorm_weight_offset else RMSNorm"

# GemmaModel and GemmaModelPipe under pretrain_gemma.py's defaults: each norm module's class, and its
# output against x / rms(x) * (1 + w) computed here (w drawn from [-0.5, 0.5]); then GemmaModel built
# with the offset off (the tree's own RMSNorm, x / rms(x) * w): the check tells the two apart.
NORM_CHECK = """
    import json, sys
    sys.argv = ["pretrain_gemma.py", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
                "--kv-channels", "16", "--ffn-hidden-size", "96", "--seq-length", "8",
                "--max-position-embeddings", "8", "--micro-batch-size", "1", "--distributed-backend", "gloo"]
    import torch
    import pretrain_gemma
    from megatron import get_args
    from megatron.initialize import initialize_megatron
    from megatron.model import GemmaModel, GemmaModelPipe

    initialize_megatron(extra_args_provider=pretrain_gemma.gemma_defaults)
    args = get_args()
    args.padded_vocab_size = 64
    torch.manual_seed(0)
    x = torch.randn(8, 2, 64)

    def against(model):
        out = {}
        with torch.no_grad():
            for name, norm in model.named_modules():
                if "norm" not in type(norm).__name__.lower():
                    continue
                norm.weight.uniform_(-0.5, 0.5)
                want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight)
                out[name] = [f"{type(norm).__module__}.{type(norm).__name__}", (norm(x) - want).abs().max().item()]
        return out

    found = {"offset": args.rmsnorm_weight_offset, "model": against(GemmaModel()), "pipe": against(GemmaModelPipe())}
    args.rmsnorm_weight_offset = 0.0
    found["without_offset"] = against(GemmaModel())
    print("NORMS " + json.dumps(found))
"""
MODEL_NORMS = [*(f"language_model.encoder.layers.{i}.{n}" for i in (0, 1)
                 for n in ("input_layernorm", "post_attention_layernorm")), "language_model.encoder.final_layernorm"]
PIPE_NORMS = [*(f"{i}.{n}" for i in (2, 3) for n in ("input_layernorm", "post_attention_layernorm")), "5"]


def test_porters_norm_is_written_beside_the_trees_and_chosen_at_every_method(norm_type_branches_gemma_tree):
    tree = norm_type_branches_gemma_tree
    assert "megatron/model/rmsnorm_porter.py" in tree.changed and "megatron/model/rmsnorm.py" not in tree.changed
    chosen = sorted((e.file, e.rewrite.keywords["cls"]) for e in tree.port.plan.edits if e.name == "ChooseOffsetNorm")
    assert chosen == [(GPT_MODEL, "GPTModelPipe"), (TRANSFORMER, "ParallelTransformer"),
                      (TRANSFORMER, "ParallelTransformerLayer")]
    for rel, sites in ((TRANSFORMER, 3), (GPT_MODEL, 1)):
        text = (tree.root / rel).read_text()
        assert text.count("from megatron.model.rmsnorm_porter import RMSNorm as OffsetRMSNorm\n") == 1
        assert text.count(CHOICE) == (2 if rel == TRANSFORMER else 1)
        assert text.count("rmsnorm_class(args.hidden_size") + text.count("LayerSpec(rmsnorm_class,") == sites
        assert "RMSNorm(args.hidden_size" not in text and "LayerSpec(RMSNorm," not in text
    model = (tree.root / "megatron/model/gemma_model.py").read_text()
    assert ("return (OffsetRMSNorm if args.rmsnorm_weight_offset else RMSNorm) "
            "if args.normalization == 'rmsnorm' else LayerNorm") in model


def test_every_norm_scales_by_one_plus_w(norm_type_branches_gemma_tree):
    """Each norm of both models is porter's and computes x / rms(x) * (1 + w); with the offset off the
    tree's own RMSNorm is built, and the same check fails for every norm (a few seconds)."""
    out = python_in_tree(norm_type_branches_gemma_tree.root, NORM_CHECK)
    found = json.loads(next(line for line in out.splitlines() if line.startswith("NORMS "))[6:])
    assert found["offset"] == 1.0
    for kind, names in (("model", MODEL_NORMS), ("pipe", PIPE_NORMS)):
        assert sorted(found[kind]) == sorted(names), found[kind]
        for name, (cls, diff) in found[kind].items():
            assert cls == PORTERS and diff <= 1e-6, (kind, name, cls, diff)
    assert sorted(found["without_offset"]) == sorted(MODEL_NORMS)
    for name, (cls, diff) in found["without_offset"].items():
        assert cls == TREES and diff > 0.1, (name, cls, diff)


def test_a_second_apply_plans_nothing(norm_type_branches_gemma_tree):
    assert prepare(GEMMA, norm_type_branches_gemma_tree.root).changes == []


def test_reapply_then_revert_is_byte_identical(norm_type_branches_gemma_tree, tmp_path):
    reapply_then_revert(norm_type_branches_gemma_tree, tmp_path, model="gemma")


@pytest.mark.slow
def test_verify_passes(norm_type_branches_gemma_tree, tmp_path):
    passed(verify(GEMMA, norm_type_branches_gemma_tree.root, tmp_path), ["GemmaModel", "GemmaModelPipe"])
