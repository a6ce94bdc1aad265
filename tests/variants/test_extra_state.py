"""Parallel linears that put `_extra_state: None` into the state dict (HabanaAI/Megatron-DeepSpeed
891d6db9's get_extra_state): verify compares the model with the converted weights without
tripping over the non-tensor entries (issue 13 saw `'NoneType' object has no attribute 'shape'`)."""

from __future__ import annotations

from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, python_in_tree


def test_the_variants_state_dict_holds_extra_state(extra_state_tree):
    out = python_in_tree(extra_state_tree.root, """
        import torch
        from megatron.mpu import layers
        linear = layers.ColumnParallelLinear.__new__(layers.ColumnParallelLinear)
        torch.nn.Module.__init__(linear)
        linear.weight = torch.nn.Parameter(torch.zeros(2, 2))
        print(sorted(linear.state_dict().items(), key=str)[0])
    """)
    assert "('_extra_state', None)" in out


def test_verify_passes(extra_state_tree, tmp_path):
    passed(verify(LLAMA, extra_state_tree.root, tmp_path), ["LLaMAModel", "LLaMAModelPipe"])
