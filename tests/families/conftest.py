"""The families' shared tree: the sample tree with LLaMA-2 and LLaMA-3 ported side by side."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.cli import app
from tests.conftest import copy_sample_tree


@pytest.fixture(scope="session")
def families_tree(tmp_path_factory) -> Path:
    """llama2 then llama3 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("families") / "Megatron-DeepSpeed")
    for family in ("llama2", "llama3"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def mistral_qwen2_tree(tmp_path_factory) -> Path:
    """mistral then qwen2 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("mistral_qwen2") / "Megatron-DeepSpeed")
    for family in ("mistral", "qwen2"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def moe_tree(tmp_path_factory) -> Path:
    """mixtral then qwen3_moe applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("moe") / "Megatron-DeepSpeed")
    for family in ("mixtral", "qwen3_moe"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def qwen3_olmo2_tree(tmp_path_factory) -> Path:
    """qwen3 then olmo2 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("qwen3_olmo2") / "Megatron-DeepSpeed")
    for family in ("qwen3", "olmo2"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def gemmas_tree(tmp_path_factory) -> Path:
    """gemma, gemma2 then gemma3 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("gemmas") / "Megatron-DeepSpeed")
    for family in ("gemma", "gemma2", "gemma3"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def phi3_tree(tmp_path_factory) -> Path:
    """phi3 then phi3_5 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("phi3") / "Megatron-DeepSpeed")
    for family in ("phi3", "phi3_5"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree


@pytest.fixture(scope="session")
def deepseek_tree(tmp_path_factory) -> Path:
    """deepseek_v2_lite then deepseek_v3 applied to one copy of the sample tree (shared: tests must not modify it)."""
    tree = copy_sample_tree(tmp_path_factory.mktemp("deepseek") / "Megatron-DeepSpeed")
    for family in ("deepseek_v2_lite", "deepseek_v3"):
        result = CliRunner().invoke(app, ["apply", family, "--target", str(tree)])
        assert result.exit_code == 0, result.output
    return tree
