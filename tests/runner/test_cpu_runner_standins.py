"""Start-up problems a CPU runner meets (issue 22 item 4), stood in under --cpu and named.

Each check runs a real child Python with porter's stand-ins, as porter's runs in a tree do.
"""

from __future__ import annotations

import shutil
import sysconfig
import textwrap
from pathlib import Path

import pytest

from porter.resources import sample_tree_dir
from porter.treerun import standins
from tests.runner.conftest import run_with_standins

HELPERS_CPP = """
#include <pybind11/pybind11.h>
int doubled(int x) { return 2 * x; }
PYBIND11_MODULE(helpers, m) { m.def("doubled", &doubled); }
"""

RANK_DISCOVERY = textwrap.dedent("""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    print("RANK", comm.Get_rank(), comm.Get_size(), comm.bcast("addr", root=0))
""")


def test_mpi4py_without_mpi_gets_a_comm_world_of_one_process(tmp_path):
    """mpi4py installed, no MPI library (`cannot load MPI library`): the entry point's rank
    discovery runs; a missing mpi4py gets the same."""
    broken = tmp_path / "site" / "mpi4py"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("__version__ = '4.0.0'\n")
    (broken / "MPI.py").write_text("raise RuntimeError('cannot load MPI library')\n")  # as mpi4py's own wheel says
    for path in ([tmp_path / "site"], []):
        done, used = run_with_standins(RANK_DISCOVERY, ["mpi4py"], tmp_path, extra_path=path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "RANK 0 1 addr" in done.stdout and used == ["mpi4py"]


def test_mpi4py_stand_in_refuses_a_collective_across_processes(tmp_path):
    done, _ = run_with_standins("import os\nos.environ['WORLD_SIZE'] = '2'\n" + RANK_DISCOVERY, ["mpi4py"], tmp_path)
    assert done.returncode != 0 and "cannot broadcast across 2 processes without an MPI library" in done.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="builds helpers.cpp with g++")
def test_dataset_helpers_without_a_suffix_are_built_for_this_python(tmp_path):
    """megatron/data/Makefile's LIBEXT from another machine's python3-config: make writes `helpers`
    with no suffix and the import fails; the stand-in builds them for this Python."""
    tree = tmp_path / "tree"
    shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (tree / "megatron/data/helpers.cpp").write_text(HELPERS_CPP)  # a tree's helpers, in short
    (tree / "megatron/data/helpers").write_bytes(b"")  # what make wrote, without the suffix
    assert "dataset helpers" in {s.name for s in standins.offered(tree)}
    done, used = run_with_standins(textwrap.dedent("""
        import numpy as np
        from megatron.data import helpers
        assert helpers.doubled(21) == 42
        print("BUILT", helpers.__file__)
    """), ["dataset helpers"], tmp_path, extra_path=[tree])
    assert done.returncode == 0, done.stderr[-3000:]
    assert used == ["dataset helpers"]
    built = Path(done.stdout.split("BUILT ")[1].strip())
    assert built.name == "helpers" + sysconfig.get_config_var("EXT_SUFFIX") and built.parent == tree / "megatron/data"


def test_the_jit_warm_up_on_cuda_tensors_is_skipped_without_cuda(tmp_path):
    """microsoft 9e72d571's set_jit_fusion_options() warms its fused kernels up on device='cuda'."""
    tree = tmp_path / "tree"
    (tree / "megatron").mkdir(parents=True)
    (tree / "megatron" / "__init__.py").write_text("")
    (tree / "megatron" / "initialize.py").write_text(textwrap.dedent("""
        import torch

        def set_jit_fusion_options():
            _warmup_jit_function()

        def _warmup_jit_function():
            torch.rand(4, device='cuda')
    """))
    assert "JIT warm-up" in {s.name for s in standins.offered(tree)}
    done, used = run_with_standins("from megatron.initialize import set_jit_fusion_options\nset_jit_fusion_options()\n"
                                   "print('STARTED')\n", ["JIT warm-up"], tmp_path, extra_path=[tree])
    assert done.returncode == 0, done.stderr[-3000:]
    import torch

    assert "STARTED" in done.stdout and used == ([] if torch.cuda.is_available() else ["JIT warm-up"])


ACCELERATOR_TIMERS = textwrap.dedent("""
    import torch
    from deepspeed.accelerator import get_accelerator

    def gathered_times(names):
        return torch.zeros((1, len(names)), dtype=torch.float, device=get_accelerator().current_device())
""")


def test_deepspeed_cpu_current_device_is_a_device_torch_takes(tmp_path):
    """microsoft 9e72d571's timers make a tensor on get_accelerator().current_device(): an index on
    CUDA, LOCAL_RANK (a string torch refuses) from DeepSpeed's CPU accelerator."""
    tree = tmp_path / "tree"
    (tree / "megatron").mkdir(parents=True)
    (tree / "megatron" / "__init__.py").write_text("")
    (tree / "megatron" / "timers.py").write_text(ACCELERATOR_TIMERS)
    name = "DeepSpeed CPU current_device()"
    assert name in {s.name for s in standins.offered(tree)}
    done, used = run_with_standins(textwrap.dedent("""
        import importlib.util
        import torch
        import deepspeed.accelerator.cpu_accelerator as served
        from megatron.timers import gathered_times

        t = gathered_times(['a', 'b'])
        print('TIMES', t.device.type, tuple(t.shape))
        # DeepSpeed's own class, loaded apart from the stand-in: what the tree gets without it
        spec = importlib.util.spec_from_file_location("deepspeed.accelerator.unpatched_cpu_accelerator", served.__file__)
        unpatched = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(unpatched)
        try:
            torch.zeros(1, device=unpatched.CPU_Accelerator().current_device())
        except RuntimeError as exc:
            print('REFUSED', exc)
    """), [name], tmp_path, extra_path=[tree])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TIMES cpu (1, 2)" in done.stdout and used == [name]
    assert "REFUSED Invalid device string: '0'" in done.stdout  # LOCAL_RANK, as DeepSpeed's CPU accelerator gives it
