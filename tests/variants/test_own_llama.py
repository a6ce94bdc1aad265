"""A tree that holds its own pretrain_llama.py and megatron/model/llama_model.py exporting
LLaMAModel (Habana 7086aadb; argonne-lcf holds its own pretrain_llama.py): porter leaves them
alone, ports under free names (porter.naming) and says so; verify runs porter's classes;
revert leaves the tree's own files byte for byte."""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner

from porter.cli import app
from porter.naming import spec_in_tree
from porter.port import prepare
from porter.source import SourceTree
from porter.verify.parity import verify
from tests.variants.conftest import LLAMA, passed, python_in_tree, reapply_then_revert
from tests.variants.variants import make_variant

OWN = ("pretrain_llama.py", "megatron/model/llama_model.py")
PORTERS = ("pretrain_llama_porter.py", "megatron/model/llama_porter_model.py")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_trees_own_files_are_left_alone(own_llama_tree):
    root, pristine = own_llama_tree.root, own_llama_tree.pristine
    for rel in OWN:
        assert _sha(root / rel) == _sha(pristine / rel), rel
    assert not set(OWN) & own_llama_tree.changed
    assert set(PORTERS) <= own_llama_tree.changed
    model = (root / "megatron/model/llama_porter_model.py").read_text()
    assert "class LLaMAPorterModel(" in model and "class LLaMAPorterModelPipe(" in model
    exports = (root / "megatron/model/__init__.py").read_text()
    # the tree's own export stays; porter's classes are exported beside it, under their own names
    assert "from .llama_model import LLaMAModel, LLaMAModelPipe\n" in exports
    assert "from .llama_porter_model import LLaMAPorterModel, LLaMAPorterModelPipe" in exports
    script = (root / "pretrain_llama_porter.py").read_text()
    assert "LLaMAPorterModelPipe(" in script and "LLaMAModel(" not in script


def test_the_port_imports_both_models(own_llama_tree):
    """megatron.model, imported in the tree, gives the tree's LLaMAModel and porter's class."""
    out = python_in_tree(own_llama_tree.root, """
        import megatron.model as M
        print(M.LLaMAModel.__module__, M.LLaMAPorterModel.__module__)
    """)
    assert out.split()[-2:] == ["megatron.model.llama_model", "megatron.model.llama_porter_model"]


def test_inspect_says_which_names_porter_takes(own_llama_tree):
    result = CliRunner().invoke(app, ["inspect", "llama", "--target", str(own_llama_tree.pristine)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert ("the tree holds its own pretrain_llama.py, megatron/model/llama_model.py, left alone: porter's are "
            "pretrain_llama_porter.py, megatron/model/llama_porter_model.py and LLaMAPorterModel") in text


def test_a_tree_with_only_its_own_entry_point(tmp_path):
    """argonne-lcf's shape: only pretrain_llama.py is the tree's; porter's names move as a set,
    so the entry point and its model module keep belonging together."""
    tree = make_variant("own_pretrain_llama", tmp_path / "tree")
    spec = spec_in_tree(LLAMA, SourceTree.open(tree))
    assert (spec.script, spec.module_name, spec.model_class) == (
        "pretrain_llama_porter.py", "llama_porter_model", "LLaMAPorterModel")
    assert spec.renamed_because == ("pretrain_llama.py",)
    changed = {c.path for c in prepare(LLAMA, tree).changes}
    assert set(PORTERS) <= changed and "pretrain_llama.py" not in changed


def test_a_second_apply_plans_nothing(own_llama_tree):
    assert prepare(LLAMA, own_llama_tree.root).changes == []


def test_verify_passes_on_porters_classes(own_llama_tree, tmp_path):
    passed(verify(LLAMA, own_llama_tree.root, tmp_path), ["LLaMAPorterModel", "LLaMAPorterModelPipe"])


def test_reapply_then_revert_is_byte_identical(own_llama_tree, tmp_path):
    """The whole tree as before: the tree's own pretrain_llama.py and llama_model.py included."""
    reapply_then_revert(own_llama_tree, tmp_path)

