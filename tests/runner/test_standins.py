"""porter.treerun.standins: each stand-in acts only where the real piece is missing or fails, and says so.

Every check runs a real child Python through porter.treerun.standins.launch, as porter's runs in a
tree do, with the real packages of this environment (DeepSpeed, numpy, torch).
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy
import pytest

from porter.treerun import standins
from tests.runner.conftest import run_with_standins


def test_every_standin_has_a_name_a_line_for_the_user_and_an_install():
    found = standins.all_standins()
    assert len({s.name for s in found}) == len(found) == len(standins.MODULES)
    for standin in found:
        module = importlib.import_module(standin.module)
        assert standin.what and callable(module.install) and callable(module.applies)


def test_offered_follows_what_the_tree_uses(tmp_path):
    (tmp_path / "megatron").mkdir()
    (tmp_path / "megatron" / "training.py").write_text("from deepspeed.compression.compress import init_compression\n")
    (tmp_path / "pretrain_gpt.py").write_text("import habana_frameworks.torch.core as htcore\n")
    names = {s.name for s in standins.offered(tmp_path)}
    assert {"deepspeed.compression", "habana mark_step"} <= names
    assert "use_hpu" not in names and "numpy aliases" not in names


def test_deepspeed_compression_is_served_only_when_deepspeed_lacks_it(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import torch
        from deepspeed.compression.compress import init_compression, redundancy_clean
        print("IMPORTED", init_compression.__module__)
    """), ["deepspeed.compression"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    if importlib.util.find_spec("deepspeed.compression.compress") is None:  # DeepSpeed 0.19 and later
        assert used == ["deepspeed.compression"]
        assert "IMPORTED porter.treerun.standins.deepspeed_compression" in done.stdout
    else:
        assert used == [] and "IMPORTED deepspeed.compression.compress" in done.stdout


def test_the_compression_standin_returns_the_model_unchanged():
    from porter.treerun.standins.deepspeed_compression import _unchanged

    model = object()
    assert _unchanged(model, "ds_config.json", teacher_model=None) is model


def test_numpy_aliases_answer_only_the_removed_names(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import numpy as np
        assert np.float is float and np.int is int and np.object is object
        assert np.float32 is not float and np.dtype(np.float).itemsize == 8
        try:
            np.no_such_name
        except AttributeError as exc:
            print("STILL", exc)
    """), ["numpy aliases"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "STILL module 'numpy' has no attribute 'no_such_name'" in done.stdout
    removed = not hasattr(numpy, "float")  # numpy >= 1.24
    assert used == (["numpy aliases"] if removed else [])


def test_vision_standin_serves_a_missing_torchvision_and_pil(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import torchvision.transforms as T
        from torchvision.datasets import VisionDataset
        from PIL import Image, ImageFilter

        class Folder(VisionDataset):  # as megatron/data/image_folder.py does
            pass

        T.Compose([T.RandomResizedCrop(224, interpolation=Image.BICUBIC), T.ToTensor()])

        def resize(size, interpolation=Image.BICUBIC, mode=T.InterpolationMode.BILINEAR):  # module-level defaults
            return T.Resize(size, interpolation=interpolation)

        print("IMPORTED")
    """), ["torchvision"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IMPORTED" in done.stdout
    has_real = importlib.util.find_spec("torchvision") is not None and importlib.util.find_spec("PIL") is not None
    assert used == ([] if has_real else ["torchvision"])


def test_tutel_standin_lets_a_dense_model_import_a_moe_fork(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        from tutel import moe as tutel_moe  # as an MoE fork's transformer.py does at module level

        def gating(mask):  # used by the fork's expert routing only
            return tutel_moe.fast_cumsum_sub_one(mask)

        print("IMPORTED")
    """), ["tutel"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IMPORTED" in done.stdout
    assert used == ([] if importlib.util.find_spec("tutel") is not None else ["tutel"])


def test_vision_standin_replaces_a_torchvision_that_fails_while_it_imports(tmp_path):
    # A torchvision built for another torch: found on the path, but its import raises (as the
    # PyPI wheel does beside CPU torch).
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("from torchvision import _meta\n")
    (broken / "_meta.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    done, used = run_with_standins(textwrap.dedent("""
        import sys
        import torchvision
        import torchvision.transforms as T
        assert "torchvision._meta" not in sys.modules
        print("SERVED", type(torchvision).__name__, T.Compose([]) is not None)
    """), ["torchvision"], tmp_path, extra_path=[tmp_path / "site"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SERVED LooseModule True" in done.stdout
    assert used == ["torchvision"]


def test_without_the_standin_the_broken_torchvision_fails_as_it_is(tmp_path):
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    done, used = run_with_standins("import torchvision\n", [], tmp_path, extra_path=[tmp_path / "site"])
    assert done.returncode == 1 and "operator torchvision::nms does not exist" in done.stderr
    assert used == []


def test_flash_attn_builder_error_is_the_type_error_older_trees_catch(tmp_path):
    # microsoft 69e3c6a0's transformer.py, at import time
    done, used = run_with_standins(textwrap.dedent("""
        from deepspeed.accelerator import get_accelerator
        FlashAttentionBuilder = get_accelerator().get_op_builder("FlashAttentionBuilder")
        try:
            flash_attn_builder = FlashAttentionBuilder().load()
        except TypeError:
            flash_attn_builder = None
        print("FALLBACK", flash_attn_builder)
    """), ["flash-attn builder"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FALLBACK None" in done.stdout
    assert used == ["flash-attn builder"]


def test_use_hpu_is_added_to_the_parser_only_when_deepspeed_lacks_it(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        import argparse, deepspeed
        parser = deepspeed.add_config_arguments(argparse.ArgumentParser())
        print("USE_HPU", parser.parse_args([]).use_hpu, parser.parse_args(["--use_hpu"]).use_hpu)
    """), ["use_hpu"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "USE_HPU False True" in done.stdout
    assert used == ["use_hpu"]


def test_habana_mark_step_is_a_no_op_without_an_hpu_module(tmp_path):
    if importlib.util.find_spec("habana_frameworks") is not None:
        pytest.skip("Habana's own habana_frameworks is installed here")
    done, used = run_with_standins(textwrap.dedent("""
        import importlib.util
        import habana_frameworks.torch.core as htcore
        htcore.mark_step()
        try:
            import habana_frameworks.torch.hpu
        except ImportError:
            print("NO HPU")
    """), ["habana mark_step"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NO HPU" in done.stdout  # DeepSpeed and the tree detect no HPU
    assert used == ["habana mark_step"]


def test_torch_six_is_served_where_torch_2_removed_it(tmp_path):
    done, used = run_with_standins(textwrap.dedent("""
        from torch._six import inf
        print("INF", inf == float("inf"))
    """), ["torch._six"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INF True" in done.stdout
    assert used == ([] if importlib.util.find_spec("torch._six") else ["torch._six"])
