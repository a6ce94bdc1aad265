"""porter.patch: patches git applies byte for byte, whatever the line endings."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from porter.patch import file_patch, file_stat, split_lines
from porter.source import decode
from porter.workspace import FileChange

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

# Lines as real files have them, plus the awkward ones: CR inside a line, a form feed, tabs,
# trailing blanks, non-ASCII.
LINE = st.sampled_from(["import torch", "", "    x = 1", "\ty = 2  ", "# café ✓", "a\x0cb", "z\r", "}"])


def change(before: bytes | None, after: bytes, path: str = "pkg/f.py") -> FileChange:
    return FileChange(path=path, before=None if before is None else decode(path, before), text="",
                      after=after, provenance=[None] * len(split_lines(after)))


def git_apply(patch: str, files: dict[str, bytes]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for path, data in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        (root / "x.patch").write_bytes(patch.encode("utf-8"))
        subprocess.run(["git", "apply", "x.patch"], cwd=root, check=True, capture_output=True)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "x.patch"}


def text(lines: list[str], newline: str, final: bool) -> bytes:
    body = newline.join(lines) + (newline if final and lines else "")
    return body.encode("utf-8")


@settings(max_examples=40, deadline=None)
@given(
    old=st.lists(LINE, max_size=12), new=st.lists(LINE, max_size=12),
    newline=st.sampled_from(["\n", "\r\n"]), old_final=st.booleans(), new_final=st.booleans(),
)
def test_git_applies_the_patch_of_any_change_byte_for_byte(old, new, newline, old_final, new_final):
    before, after = text(old, newline, old_final), text(new, newline, new_final)
    patch = file_patch(change(before, after))
    if before == after:
        assert patch == ""
        return
    assert git_apply(patch, {"pkg/f.py": before}) == {"pkg/f.py": after}


@settings(max_examples=15, deadline=None)
@given(new=st.lists(LINE, min_size=1, max_size=12), final=st.booleans())
@example(new=[""], final=False)  # an empty created file: git writes no ---/+++ lines
def test_a_created_file_is_a_new_file_diff(new, final):
    after = text(new, "\n", final)
    patch = file_patch(change(None, after, "new/dir/g.py"))
    head = "diff --git a/new/dir/g.py b/new/dir/g.py\nnew file mode 100644\n"
    assert patch == head if after == b"" else patch.startswith(head + "--- /dev/null\n")
    assert git_apply(patch, {}) == {"new/dir/g.py": after}


def test_lines_split_on_newline_only():
    assert split_lines(b"a\x0cb\r\nc\rd\ne") == ["a\x0cb\r\n", "c\rd\n", "e"]
    assert split_lines(b"") == []


def test_a_missing_final_newline_is_marked_like_git():
    patch = file_patch(change(b"a\nb\n", b"a\nb"))
    assert patch.endswith("-b\n+b\n\\ No newline at end of file\n")


def test_stat_attributes_lines_to_the_features_that_wrote_them():
    before = b"one\ntwo\nthree\n"
    after = b"one\nTWO\n\nextra\nthree\n"
    c = change(before, after)
    c.provenance = [None, "rmsnorm: A", None, "swiglu: B", None]
    stat = file_stat(c)
    assert (stat.added, stat.removed) == (3, 1)
    # the untagged blank line of the block goes to its nearest tagged neighbour
    assert sum(a for a, _ in stat.by_feature.values()) == 3
    assert stat.by_feature["rmsnorm"][1] == 1  # the replaced line
    assert set(stat.by_feature) == {"rmsnorm", "swiglu"}
