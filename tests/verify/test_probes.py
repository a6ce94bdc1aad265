"""How the tree's per-rank values become one tensor in HF's orientation."""

import torch

from porter.catalog import load_spec
from porter.layout import WeightLayout
from porter.probe import probe_plan
from porter.verify.probes import combine, orient, pipe_module

PROBES = {p.name: p for p in probe_plan(WeightLayout(), num_layers=2, num_heads=4, differences=load_spec("llama").wanted())}


def test_probes_are_named_by_the_plain_model_and_the_pipe():
    mlp = PROBES["language_model.encoder.layers.1.mlp"]
    assert mlp.path == "mlp.dense_4h_to_h" and mlp.take == "input"
    assert pipe_module(mlp, num_layers=2) == "3.mlp.dense_4h_to_h"
    assert pipe_module(PROBES["output_layer"], num_layers=2) == "6"


def test_orientation_follows_the_batch_dimension():
    embedding = PROBES["language_model.embedding"]
    bsh, sbh = torch.randn(2, 32, 8), torch.randn(32, 2, 8)
    assert orient(embedding, bsh, batch_size=2) is bsh
    assert torch.equal(orient(embedding, sbh, batch_size=2), sbh.transpose(0, 1))
    layer = PROBES["language_model.encoder.layers.0"]
    assert torch.equal(orient(layer, sbh, batch_size=2), sbh.transpose(0, 1))


def test_gate_and_up_halves_of_two_ranks_join_gate_first():
    fc1 = PROBES["language_model.encoder.layers.0.mlp.dense_h_to_4h"]
    gate, up = torch.arange(8.0).view(1, 1, 8), 100 + torch.arange(8.0).view(1, 1, 8)
    ranks = [torch.cat((gate[..., :4], up[..., :4]), dim=-1), torch.cat((gate[..., 4:], up[..., 4:]), dim=-1)]
    assert torch.equal(combine(fc1, ranks), torch.cat((gate, up), dim=-1))


def test_the_logit_tolerance_is_relative_to_the_largest_logit():
    """A tree's own unfused attention sums in another order than HF's: a logit of 6.5 moves by a
    few of its ulps (1.35e-5 on a Habana tree's Gemma-3), which an absolute 1e-5 failed; a wrong
    port (0.05 and more) still fails."""
    from porter.verify.parity import VerifyOptions, logit_tolerance

    fp32 = VerifyOptions()
    assert logit_tolerance(fp32, torch.tensor([[0.3, -0.5]])) == fp32.tolerance
    large = logit_tolerance(fp32, torch.tensor([[6.5, -2.0]]))
    assert large == 6.5 * fp32.tolerance and 1.35e-5 <= large < 0.05
    bf16 = VerifyOptions(dtype="bf16")
    assert logit_tolerance(bf16, torch.tensor([[6.5]])) == 16 * 2.0 ** -8 * 6.5
