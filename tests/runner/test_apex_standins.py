"""The apex stand-ins (issue 22 item 1): where apex is missing (a CPU machine), the trees'
start-up imports get torch with apex's names, arguments and semantics, and each says so.

Each check runs a real child Python with the stand-ins, as porter's runs in a tree do, and
compares with torch's own computation of what apex computes.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

from tests.runner.conftest import run_with_standins

pytestmark = pytest.mark.skipif(importlib.util.find_spec("apex") is not None, reason="apex is installed here")


def test_fused_adam_and_sgd_are_torchs_optimizers_with_apexs_arguments(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import torch
        from apex.optimizers import FusedAdam as Adam, FusedSGD as SGD

        def trained(make):
            torch.manual_seed(0)
            model = torch.nn.Linear(8, 4)
            opt = make(model.parameters())
            for _ in range(3):
                opt.zero_grad()
                model(torch.randn(5, 8)).pow(2).sum().backward()
                opt.step()
            return model.weight.detach()

        kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        assert torch.equal(trained(lambda p: Adam(p, **kw)), trained(lambda p: torch.optim.AdamW(p, **kw)))
        assert torch.equal(trained(lambda p: Adam(p, adam_w_mode=False, **kw)), trained(lambda p: torch.optim.Adam(p, **kw)))
        assert not torch.equal(trained(lambda p: Adam(p, **kw)), trained(lambda p: Adam(p, adam_w_mode=False, **kw)))
        sgd = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
        assert torch.equal(trained(lambda p: SGD(p, **sgd)), trained(lambda p: torch.optim.SGD(p, **sgd)))
        assert isinstance(Adam([torch.nn.Parameter(torch.ones(1))]), Adam)  # distrib_optimizer asserts it
        try:
            Adam([torch.nn.Parameter(torch.ones(1))], bias_correction=False)
        except NotImplementedError as exc:
            print("LOUD", exc)
    """), ["apex.optimizers"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOUD" in done.stdout and "bias_correction=False" in done.stdout
    assert used == ["apex.optimizers"]


def test_multi_tensor_applier_and_amp_c_compute_norms_and_scale(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import torch
        from apex.multi_tensor_apply import multi_tensor_applier
        import amp_C

        tensors = [torch.randn(3, 4), torch.randn(7)]
        overflow = torch.zeros(1, dtype=torch.int)
        norm, per = multi_tensor_applier(amp_C.multi_tensor_l2norm, overflow, [tensors], True)
        expected = torch.cat([t.flatten() for t in tensors]).norm(2)
        assert torch.allclose(norm, expected.reshape(1)) and torch.allclose(per, torch.stack([t.norm() for t in tensors]))
        targets = [torch.empty_like(t) for t in tensors]
        multi_tensor_applier(amp_C.multi_tensor_scale, overflow, [tensors, targets], 0.5)
        assert all(torch.equal(t, s * 0.5) for s, t in zip(tensors, targets)) and overflow.item() == 0
        multi_tensor_applier(amp_C.multi_tensor_scale, overflow, [[torch.tensor([float("inf")])], [torch.zeros(1)]], 1.0)
        assert overflow.item() == 1 and multi_tensor_applier.available
        print("OK")
    """), ["amp_C"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout and used == ["amp_C"]


def test_fused_norms_are_torch_modules_with_apexs_parameters(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import torch
        from apex.normalization import FusedLayerNorm, MixedFusedLayerNorm, FusedRMSNorm, MixedFusedRMSNorm
        from apex.normalization.fused_layer_norm import FusedLayerNormAffineFunction

        x = torch.randn(2, 3, 16)
        rms = MixedFusedRMSNorm(16, 1e-6, sequence_parallel=False)
        assert [n for n, _ in rms.named_parameters()] == ["weight"] and isinstance(rms, FusedRMSNorm)
        with torch.no_grad():
            rms.weight.uniform_(0.5, 1.5)
        # HF's LlamaRMSNorm, written out
        expected = rms.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        assert (rms(x) - expected).abs().max() < 1e-6
        ln = MixedFusedLayerNorm(16, eps=1e-5)
        assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"] and isinstance(ln, FusedLayerNorm)
        assert torch.equal(ln(x), torch.nn.functional.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5))
        assert torch.equal(FusedLayerNormAffineFunction.apply(x, ln.weight, ln.bias, (16,), 1e-5), ln(x))
        print("OK")
    """), ["apex.normalization"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout and used == ["apex.normalization"]


def test_apex_parts_not_stood_in_stay_missing(tmp_path):
    """Only what the stand-ins serve exists: a tree's `try: from apex.contrib... except:` still
    takes its fallback, and `import apex` alone reports no stand-in."""
    done, used = run_with_standins(textwrap.dedent("""
        import apex
        try:
            from apex.contrib.layer_norm.layer_norm import FastLayerNormFN
        except ImportError:
            print("FALLBACK")
    """), ["apex.optimizers", "apex.normalization", "amp_C"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FALLBACK" in done.stdout and used == []
