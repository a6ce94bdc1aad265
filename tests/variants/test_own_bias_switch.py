"""Qwen2 (a bias on the QKV projection only) on a tree that implements the linears' no-bias switch
itself, Megatron-LM's way (microsoft f4157bea's `--disable-bias-linear`): the tree's switch stays in
charge of the attention output and the MLP, the QKV projections take `args.add_bias_linear or
args.add_qkv_bias`; both classes verify against HF; the port with the QKV bias dropped fails verify
and names the projection; re-apply and revert. All of it runs models: slow (the text-level tests
of the rewrite are tests/rewrites/test_keep_site_bias.py)."""

from __future__ import annotations

import pytest

from porter.catalog import load_spec
from porter.verify.parity import VerifyOptions, verify
from tests.variants.conftest import copy_of, passed, reapply_then_revert

QWEN2 = load_spec("qwen2")
TRANSFORMER = "megatron/model/transformer.py"
WIDE = "bias=args.add_bias_linear or args.add_qkv_bias)"
LAYER0 = "language_model.encoder.layers.0"

pytestmark = pytest.mark.slow  # ~1-3 minutes on 2 cores, all of it


def test_the_trees_switch_stays_and_the_qkv_projections_take_the_sites_too(own_bias_switch_qwen2_tree):
    text = (own_bias_switch_qwen2_tree.root / TRANSFORMER).read_text()
    assert text.count(WIDE) == 3  # the fused projection; the cross-attention's query and key_value
    assert text.count("bias=args.add_bias_linear") == 6 and "no_bias" not in text
    script = (own_bias_switch_qwen2_tree.root / "pretrain_qwen2.py").read_text()
    assert "add_bias_linear=False" in script and "add_qkv_bias=True" in script


def test_qwen2_verifies_and_without_its_qkv_bias_fails_naming_the_projection(own_bias_switch_qwen2_tree, tmp_path):
    passed(verify(QWEN2, own_bias_switch_qwen2_tree.root, tmp_path / "ok"), ["Qwen2Model", "Qwen2ModelPipe"])
    tree = copy_of(own_bias_switch_qwen2_tree, tmp_path / "broken")
    path = tree / TRANSFORMER
    path.write_text(path.read_text().replace(WIDE, "bias=args.add_bias_linear)"))
    result = verify(QWEN2, tree, tmp_path / "bad", VerifyOptions(kinds=("model",)))
    assert not result.passed
    (r,) = result.results
    assert r.first_divergence is not None and r.first_divergence.name == f"{LAYER0}.attention.query_key_value", r.as_dict()
    assert f"{LAYER0}.attention.query_key_value.bias" in str(r.structure), r.structure
    print(f"without the QKV bias: first divergence {r.first_divergence.name}, max |dlogit| {r.max_logit_diff:.3g}, "
          f"structure {r.structure}")


def test_reapply_and_revert(own_bias_switch_qwen2_tree, tmp_path):
    reapply_then_revert(own_bias_switch_qwen2_tree, tmp_path, model="qwen2")
