"""What `porter demo` leaves and suggests, without its training run: the folder git ignores,
and the `porter explain` hint naming a line of code a spec key wrote."""

from __future__ import annotations

import shutil
import subprocess

from porter.cli.port_commands import _a_ported_line, _make_demo_folder
from porter.port import apply
from tests.helpers.trees import copy_sample


def test_the_hint_names_a_line_of_code_a_spec_key_wrote(porter, tmp_path):
    tree = copy_sample(tmp_path / "Megatron-DeepSpeed")
    hint = _a_ported_line(apply("llama", tree).changes)
    explained = porter("explain", f"{tree}/{hint}")
    assert explained.exit_code == 0, explained.output
    first, *rest = explained.stdout.splitlines()
    code = first.split(": ", 1)[1].strip()
    assert code and not code.startswith("#"), first  # not a blank line, not a comment
    assert "  written by porter: apply 1 of llama" in rest
    assert any(line.startswith("  spec key: ") and "checks" not in line for line in rest), explained.stdout


def test_the_demo_folder_leaves_a_checkout_clean(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    folder = tmp_path / "porter-demo"
    assert _make_demo_folder(folder)
    copy_sample(folder / "Megatron-DeepSpeed")
    (folder / "smoke").mkdir()
    (folder / "smoke" / "train.log").write_text("step 1\n")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""
    shutil.rmtree(folder / "Megatron-DeepSpeed")
    assert _make_demo_folder(folder)  # a second run: still porter's, still ignored


def test_a_folder_the_user_had_is_left_as_it_is(tmp_path):
    mine = tmp_path / "work"
    mine.mkdir()
    assert not _make_demo_folder(mine)
    assert list(mine.iterdir()) == []
