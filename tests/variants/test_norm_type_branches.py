"""The layer's norms built per norm type in nested if/elif/else, as microsoft's 2024-25 head builds them
(issue 20): OLMo-2's post-norm port builds its output norms in every branch with that branch's class
and arguments, applies once (a second apply changes nothing), reverts byte for byte and matches HF's
Olmo2ForCausalLM; a branch shape porter cannot follow is refused, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.port import prepare
from porter.verify.parity import verify
from tests.helpers.trees import diff_snapshots, edited_copy, snapshot
from tests.variants.conftest import OLMO2, passed, reapply_then_revert

TRANSFORMER = "megatron/model/transformer.py"
LAYER0 = "language_model.encoder.layers.0"
# (indent, the branch's own norm call): each is followed by the output norms built by the same call
BRANCHES = (
    (16, "LayerNorm(args.hidden_size, args.layernorm_epsilon)"),
    (16, "LayerNorm(args.hidden_size, eps=args.layernorm_epsilon)"),
    (12, "RMSNorm(args.hidden_size, args.layernorm_epsilon)"),
)
POST_NORM_BRANCH = (
    "        elif args.normalization == 'rmsnorm':\n"
    "            self.post_attention_layernorm = RMSNorm(args.hidden_size, args.layernorm_epsilon)\n"
)
ELSE_RAISE = "        else:\n            raise ValueError(f'unknown normalization {args.normalization}')\n"


def _layer(root):
    text = (root / TRANSFORMER).read_text()
    return text[text.index("class ParallelTransformerLayer("):text.index("class ParallelTransformer(")]


def test_each_branch_builds_the_output_norms_with_its_own_call(norm_type_branches_olmo2_tree):
    layer = _layer(norm_type_branches_olmo2_tree.root)
    for indent, call in BRANCHES:
        pad = " " * indent
        built = (f"{pad}if args.norm_placement != 'pre':\n"
                 f"{pad}    self.attention_output_layernorm = {call}\n"
                 f"{pad}    self.mlp_output_layernorm = {call}\n")
        assert layer.count(built) == 1, (call, layer)
    # the None defaults once, before the if; the branch that raises is the tree's
    defaults = ("        self.attention_output_layernorm = None\n        self.mlp_output_layernorm = None\n"
                "        if args.normalization == 'layernorm':\n")
    assert layer.count(defaults) == 1
    assert layer.count("            raise ValueError(f'unknown normalization {args.normalization}')\n"
                       "        # Post-norm (OLMo-2)") == 1
    # the input norms are identities after the if; forward normalises both outputs once
    assert layer.count("self.post_attention_layernorm = torch.nn.Identity()") == 1
    assert layer.count("attention_output = self.attention_output_layernorm(attention_output)") == 1
    assert layer.count("mlp_output = self.mlp_output_layernorm(mlp_output)") == 1


def test_a_second_apply_plans_nothing(norm_type_branches_olmo2_tree):
    assert prepare(OLMO2, norm_type_branches_olmo2_tree.root).changes == []


@pytest.mark.slow  # ~10 s: the structure tests above stay in the test command
def test_verify_passes(norm_type_branches_olmo2_tree, tmp_path):
    """The tree's --normalization rmsnorm branch builds the norms: the layer is post-norm as HF's is
    (about 13 s)."""
    result = verify(OLMO2, norm_type_branches_olmo2_tree.root, tmp_path)
    passed(result, ["Olmo2Model", "Olmo2ModelPipe"])
    probes = [p.name for p in result.results[0].probes]
    assert f"{LAYER0}.attention_output_layernorm" in probes and f"{LAYER0}.mlp_output_layernorm" in probes
    assert f"{LAYER0}.input_layernorm" not in probes


def test_reapply_then_revert_is_byte_identical(norm_type_branches_olmo2_tree, tmp_path):
    reapply_then_revert(norm_type_branches_olmo2_tree, tmp_path, model="olmo2")


@pytest.mark.parametrize(("new", "found"), [
    (POST_NORM_BRANCH, "`elif args.normalization == 'rmsnorm':` has no else, so one path builds no self.post_attention_layernorm"),
    ("        elif args.normalization == 'rmsnorm':\n"
     "            self.post_attention_layernorm = None\n" + ELSE_RAISE,
     "a branch assigns self.post_attention_layernorm in `self.post_attention_layernorm = None`"),
], ids=["elif-without-else", "not-a-norm-call"])
def test_a_branch_shape_porter_cannot_follow_is_refused(norm_type_branches_olmo2_tree, tmp_path, new, found):
    """The variant before the port, the else that raises after its post-attention norm's branches
    removed (a path without the norm), or the rmsnorm branch assigning None."""
    tree = edited_copy(norm_type_branches_olmo2_tree.pristine, tmp_path / "Megatron-DeepSpeed",
                       (TRANSFORMER, POST_NORM_BRANCH + ELSE_RAISE, new))
    before = snapshot(tree)
    result = CliRunner().invoke(app, ["apply", "olmo2", "--target", str(tree)])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "cannot find what the OutputNorms rewrite is anchored on" in out
    assert f"file: {TRANSFORMER}" in out and "ParallelTransformerLayer.__init__" in out
    assert "`if args.normalization == 'layernorm':` assigns self.post_attention_layernorm, but " + found in out
    assert not diff_snapshots(before, snapshot(tree))
