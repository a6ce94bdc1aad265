"""porter.treerun.failure: a failed run's last traceback, sorted into environment, CUDA and the tree's own.

The tracebacks are real: each comes from a child Python importing a module of a small tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from porter.treerun.failure import classify, last_traceback


def _fail(tmp_path: Path, body: str) -> tuple[str, Path]:
    """Run `import megatron.model.x` of a tree whose x.py is `body`; its stderr and the tree."""
    tree = tmp_path / "tree"
    (tree / "megatron" / "model").mkdir(parents=True, exist_ok=True)
    (tree / "megatron" / "__init__.py").write_text("")
    (tree / "megatron" / "model" / "__init__.py").write_text("")
    (tree / "megatron" / "model" / "x.py").write_text(body)
    done = subprocess.run([sys.executable, "-c", "import megatron.model.x"], cwd=tree, capture_output=True, text=True)
    assert done.returncode == 1
    return done.stderr, tree


def test_a_missing_package_is_the_environment_with_the_pip_line(tmp_path):
    log, tree = _fail(tmp_path, "import os\nimport six_absent\n")
    log = log.replace("six_absent", "six")  # a package porter knows the pip line of, missing here
    failure = classify(log, [tree])
    assert failure.kind == "missing-package" and failure.is_environment
    assert (failure.where.file, failure.where.line) == ("megatron/model/x.py", 2)
    error = failure.error("the training run")
    assert error.exit_code == 2
    assert "the environment lacks the Python package 'six'" in error.message
    assert "the port is not at fault" in error.message
    assert error.fix.startswith("pip install six")
    assert error.file == "megatron/model/x.py:2"


def test_a_package_no_pip_line_gives_is_said_so_with_what_the_tree_uses_it_for(tmp_path):
    """Issue 22 item 3: a lab's own package (argonne-lcf's `ezpz`): PyPI's project of that name
    may be another one, so porter gives no pip line; it names what the tree uses it for, and
    where the tree's own documents say it comes from."""
    log, tree = _fail(tmp_path, "import porter_lab_pkg\nfrom porter_lab_pkg.dist import get_rank as rank\n"
                                "porter_lab_pkg.setup_torch()\nSIZE = porter_lab_pkg.get_world_size()\n")
    (tree / "README.md").write_text("Install [our helpers](https://github.com/some-lab/porter_lab_pkg) first.\n")
    error = classify(log, [tree]).error("the training run")
    assert error.exit_code == 2
    assert "porter cannot tell which pip package provides it" in error.message
    assert "pip install" not in error.fix
    assert "the tree uses it for: setup_torch, get_world_size, get_rank" in error.found
    assert "README.md names https://github.com/some-lab/porter_lab_pkg" in error.fix


def test_pip_names_and_the_train_extra_are_named(tmp_path):
    def failure(module):
        return classify(f"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                        f"    import {module}\nModuleNotFoundError: No module named '{module}'\n", [tmp_path])

    assert failure("yaml").error("smoke").fix.startswith("pip install pyyaml")
    assert failure("PIL").error("smoke").fix.startswith("pip install pillow")
    assert "porter[train]" in failure("six").error("smoke").fix
    assert "porter[train]" not in failure("yaml").error("smoke").fix


def test_a_cuda_only_import_means_the_tree_needs_cuda(tmp_path):
    log, tree = _fail(tmp_path, "from apex.multi_tensor_apply import multi_tensor_applier\n")
    failure = classify(log, [tree])
    assert failure.kind == "needs-cuda" and failure.package == "apex"
    error = failure.error("the training run")
    assert error.message.startswith("this tree needs CUDA: it imports apex (CUDA-only) at start-up")
    assert "raised by `from apex.multi_tensor_apply import multi_tensor_applier`" in error.found


def test_a_cuda_call_at_start_up_means_the_tree_needs_cuda(tmp_path):
    log, tree = _fail(tmp_path, "import torch\ndevice = torch.cuda.current_device()\n")
    failure = classify(log, [tree])
    assert failure.kind == "needs-cuda", failure
    assert failure.where.line == 2 and "Torch not compiled with CUDA" in failure.exception


def test_a_cuda_stream_in_a_layer_means_the_tree_needs_cuda(tmp_path):
    """An MoE fork builds CUDA streams in its transformer layer (torch.cuda.Stream raises off CUDA)."""
    log, tree = _fail(tmp_path, "import torch\nstream = torch.cuda.Stream(priority=0)\n")
    failure = classify(log, [tree])
    assert failure.kind == "needs-cuda", failure
    assert failure.where.line == 2 and "requires CUDA support" in failure.exception


def test_an_error_of_the_tree_is_named_with_its_line(tmp_path):
    log, tree = _fail(tmp_path, "def f(rope):\n    return rope.to('cpu')\n\nf([1, 2])\n")
    failure = classify(log, [tree])
    assert failure.kind == "error" and not failure.is_environment
    assert failure.summary == ("AttributeError: 'list' object has no attribute 'to' "
                               "(at megatron/model/x.py:2: return rope.to('cpu'))")


def test_a_submodule_missing_from_an_installed_package_is_another_version(tmp_path):
    log, tree = _fail(tmp_path, "from deepspeed.compression_absent.compress import init_compression\n")
    failure = classify(log, [tree])
    assert failure.kind == "missing-package" and failure.package == "deepspeed.compression_absent"
    error = failure.error("the training run")
    assert "the installed deepspeed" in error.message and "written for another deepspeed" in error.message


def test_rank_prefixed_tracebacks_of_torchrun_are_read(tmp_path):
    log, tree = _fail(tmp_path, "x = None\nx.to('cpu')\n")
    prefixed = "".join(f"[rank1]: {line}\n" for line in log.splitlines()) + "E1203 torchrun: ChildFailedError\n"
    frames, exception = last_traceback(prefixed)
    assert exception == "AttributeError: 'NoneType' object has no attribute 'to'"
    assert classify(prefixed, [tree]).where.file == "megatron/model/x.py"


def test_paths_in_the_scratch_copy_are_named_relative_to_the_tree(tmp_path):
    log, copy = _fail(tmp_path, "import porter_absent_package_xyz\n")
    failure = classify(log, [copy, tmp_path / "the-users-tree"])
    assert failure.where.file == "megatron/model/x.py"


def test_a_failed_build_step_without_a_traceback_names_the_missing_module():
    log = ("make: Entering directory '/tmp/x/megatron/data'\n"
           "/venv/bin/python3: No module named pybind11_absent\n"
           "make: *** [Makefile:9: default] Error 1\nMaking C++ dataset helpers module failed, exiting.\n")
    failure = classify(log, [Path("/tmp/x")])
    assert failure.kind == "missing-package" and failure.package == "pybind11_absent"


def test_a_training_log_that_formats_the_fp32_loss_scale_is_named(tmp_path):
    """Issue 22 item 4: a tree's own training_log formats loss_scale as a float; in fp32 it is None."""
    log, tree = _fail(tmp_path, "loss_scale = None\nline = ' loss scale: {:.1f} |'.format(loss_scale)\n")
    failure = classify(log, [tree])
    assert failure.kind == "error" and not failure.is_environment
    assert "the tree's own code at megatron/model/x.py:2 fails in fp32" in failure.summary
    assert "porter smoke trains in fp32 only" in failure.summary


def test_mpi4py_without_an_mpi_library_is_the_environment(tmp_path):
    """Issue 22 item 4: the entry point's `from mpi4py import MPI` on a machine with mpi4py and no
    MPI: the environment, with the install line (not "read the traceback ... the tree's own code")."""
    site = tmp_path / "site" / "mpi4py"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (site / "MPI.py").write_text("raise RuntimeError('cannot load MPI library')\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "pretrain_alcf.py").write_text("from mpi4py import MPI\nRANK = MPI.COMM_WORLD.rank\n")
    done = subprocess.run([sys.executable, "pretrain_alcf.py"], cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    failure = classify(done.stderr, [tree])
    assert failure.kind == "no-mpi" and failure.is_environment
    error = failure.error("the training run")
    assert error.exit_code == 2 and "finds no MPI library" in error.message
    assert "apt-get install libopenmpi-dev" in error.fix and "--cpu" in error.fix


def test_whose_line_failed_is_read_from_porters_journal(ported_tree):
    """A line porter created or changed is the port's; any other, the tree's own (its journal says which)."""
    from porter import journal
    from porter.treerun.owner import PORT, TREE, _changed_lines, owner

    files = [f for apply in journal.read_journal(ported_tree) for f in apply.files]
    created = next(f for f in files if f.created)
    changed = next(f for f in files if not f.created)
    lines = _changed_lines(changed.before, changed.after)
    untouched = next(n for n in range(1, len(changed.after.splitlines()) + 1) if n not in lines)
    assert owner(ported_tree, created.path, 1) == PORT
    assert owner(ported_tree, changed.path, min(lines)) == PORT
    assert owner(ported_tree, changed.path, untouched) == TREE
    assert owner(ported_tree, "megatron/never_ported.py", 3) == TREE
    assert owner(ported_tree.parent, changed.path, untouched) is None  # no journal: porter cannot say


def test_a_line_edited_since_porter_wrote_its_file_is_neither(tmp_path, ported_tree):
    import shutil

    from porter import journal
    from porter.treerun.owner import EDITED, PORT, owner

    tree = tmp_path / "tree"
    shutil.copytree(ported_tree, tree)
    created = next(f for a in journal.read_journal(tree) for f in a.files if f.created and f.path.endswith(".py"))
    lines = created.after.decode().splitlines(keepends=True)
    (tree / created.path).write_text("".join(["raise RuntimeError('mine')\n", *lines]))
    assert owner(tree, created.path, 1) == EDITED
    assert owner(tree, created.path, 2) == PORT  # porter's first line, one lower now


def test_an_error_in_the_trees_own_line_says_so(tmp_path, ported_tree):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(ported_tree, tree)
    log, _ = _fail(tmp_path, "def f(rope):\n    return rope.to('cpu')\n\nf([1, 2])\n")
    failure = classify(log, [tree])
    assert failure.summary.endswith("; the tree's own code at megatron/model/x.py:2 (porter did not write that line)")
