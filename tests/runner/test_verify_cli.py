"""`porter verify` as a user runs it: a relative --workdir, a missing transformers, a failing rank.

Real runs of the ported sample tree: the HF reference, the conversion, the tree's own loader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.runner.test_smoke_cli import every_file, porter


def test_a_relative_workdir_works_and_the_tree_is_never_written(ported_tree, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.chdir(tmp_path)
    before = every_file(ported_tree)
    result = porter("verify", "llama", "--target", ported_tree, "--workdir", "verify-here", "--models", "model")
    assert result.exit_code == 0, result.output[-3000:]
    assert "LLaMAModel (TP=1, PP=1): passed" in result.stdout
    assert (tmp_path / "verify-here" / "job.json").is_file()  # the user's --workdir is kept
    assert not (tmp_path / "verify-here" / "tree").exists()  # its scratch copy is not, once passed
    assert every_file(ported_tree) == before


def test_without_transformers_verify_is_an_environment_error_with_the_pip_line(ported_tree):
    # transformers made unimportable in porter's own process, as in a venv with only porter[train]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["transformers"] = None
        from porter.cli import main
        sys.argv = ["porter", "verify", "llama", "--target", {str(ported_tree)!r}]
        main()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr
    assert "porter: error: porter verify needs transformers" in done.stderr
    assert "pip install 'porter[parity]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failing_rank_of_a_tp_2_run_shows_its_own_error(damaged_port, temp_dir):
    tree = damaged_port("megatron/model/llama_model.py", "        self.parallel_output = parallel_output\n        self.pre_process",
                        "        self.parallel_output = parallel_output\n"
                        "        if torch.distributed.get_rank() == 1:\n"
                        "            raise RuntimeError('rank 1 cannot build it')\n"
                        "        self.pre_process")
    result = porter("verify", "llama", "--target", tree, "--tp", "2", "--models", "model")
    assert result.exit_code == 2
    assert "failed inside the tree: RuntimeError: rank 1 cannot build it" in result.stderr
    assert "file:       megatron/model/llama_model.py:" in result.stderr
    assert "the line named is a line edited at megatron/model/llama_model.py:" in result.stderr, result.stderr[-1500:]
    assert "ChildFailedError" not in result.stderr
    kept = list(temp_dir.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("porter-verify-Megatron-DeepSpeed-")
    assert f"work folder kept for the failure: {kept[0]}" in result.stderr


def test_a_tree_that_asserts_cuda_at_start_up_needs_cuda(damaged_port, temp_dir):
    tree = damaged_port("pretrain_llama.py", "\ndef llama_defaults(parser):",
                        "\nassert torch.cuda.is_available(), 'this tree runs on GPUs'\n\n\ndef llama_defaults(parser):")
    result = porter("verify", "llama", "--target", tree, "--models", "model")
    assert result.exit_code == 2
    assert "porter: error: this tree needs CUDA: it requires CUDA at start-up, and this machine has none" in result.stderr
    assert "file:       pretrain_llama.py:" in result.stderr
