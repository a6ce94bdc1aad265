"""Bad input, each case a test, through the real CLI on copies of the sample tree.

Every case must give: a non-zero exit; porter's error (no traceback, since --debug is off)
whose `file:` line names the file, whose `looked for:` line names the construct and whose
`fix:` line says what to do; and not one byte changed anywhere under the test's folder (the
tree, the spec files): a snapshot of every file (SHA-256 and mode), folder and link before
and after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from porter.port import apply
from porter.resources import specs_dir
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot

LLAMA = (specs_dir() / "llama.toml").read_text()
TRANSFORMER = "megatron/model/transformer.py"


@dataclass
class Case:
    setup: Callable[[Path, Path], list]  # (tree, tmp folder) -> CLI arguments
    file: str  # what the `file:` line must contain
    says: tuple[str, ...] = ()  # words the message must contain besides


def spec(tmp: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def with_spec(text: str) -> Callable[[Path, Path], list]:
    return lambda tree, tmp: ["apply", spec(tmp, text), "--target", tree]


def replace(tree: Path, rel: str, old: str, new: str, count: int = 1) -> None:
    path = tree / rel
    text = path.read_text()
    assert text.count(old) >= count, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, count))


def edit(rel: str, old: str, new: str) -> Callable[[Path, Path], list]:
    def setup(tree, tmp):
        replace(tree, rel, old, new)
        return ["apply", "llama", "--target", tree]
    return setup


def tree_then(change: Callable[[Path, Path], None], command: tuple = ("apply", "llama")):
    def setup(tree, tmp):
        change(tree, tmp)
        return [*command, "--target", tree]
    return setup


def ported_then(change: Callable[[Path, Path], None], command: tuple = ("apply", "llama")):
    def setup(tree, tmp):
        apply("llama", tree)
        change(tree, tmp)
        return [*command, "--target", tree]
    return setup


# -- the cases ----------------------------------------------------------------------------------


def _spec_folder(tree, tmp):
    (tmp / "folder.toml").mkdir()
    return ["apply", tmp / "folder.toml", "--target", tree]


def _spec_not_utf8(tree, tmp):
    (tmp / "latin1.toml").write_bytes(LLAMA.replace('"llama"', '"llam\xe4"').encode("latin-1"))
    return ["apply", tmp / "latin1.toml", "--target", tree]


def _file_target(tree, tmp):
    (tmp / "file").write_text("not a tree\n")
    return ["apply", "llama", "--target", tmp / "file"]


def _not_megatron(tree, tmp):
    other = tmp / "project"
    (other / "src").mkdir(parents=True)
    (other / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (other / "src" / "model.py").write_text("class GPT:\n    pass\n")
    return ["apply", "llama", "--target", other]


def _empty(tree, tmp):
    (tmp / "empty").mkdir()
    return ["apply", "llama", "--target", tmp / "empty"]


def _bytes(rel: str, transform: Callable[[bytes], bytes]):
    def change(tree, tmp):
        path = tree / rel
        path.write_bytes(transform(path.read_bytes()))
    return change


def _read_only_file(tree, tmp):
    (tree / TRANSFORMER).chmod(0o444)


def _read_only_folder(tree, tmp):
    (tree / "megatron/model").chmod(0o555)


def _symlinked_file(tree, tmp):
    outside = tmp / "elsewhere" / "transformer.py"
    outside.parent.mkdir()
    shutil.move(tree / TRANSFORMER, outside)
    (tree / TRANSFORMER).symlink_to(outside)


def _symlinked_folder(tree, tmp):
    shutil.move(tree / "megatron/tokenizer", tmp / "tokenizer")
    (tree / "megatron/tokenizer").symlink_to(tmp / "tokenizer")


def _dangling_link(tree, tmp):
    (tree / "megatron/model/gpt_model.py").unlink()
    (tree / "megatron/model/gpt_model.py").symlink_to(tmp / "gone.py")


def _folder_where_file_goes(tree, tmp):
    (tree / "megatron/model/rmsnorm.py").mkdir()
    (tree / "megatron/model/rmsnorm.py" / "keep.txt").write_text("mine\n")


def _users_file_in_the_way(tree, tmp):
    (tree / "megatron/model/rmsnorm.py").write_text("# my own RMSNorm\nclass RMSNorm:\n    pass\n")


def _rename_anchor_class(tree, tmp):
    replace(tree, TRANSFORMER, "ParallelMLP", "FeedForward", count=3)


def _duplicate_class(tree, tmp):
    path = tree / TRANSFORMER
    text = path.read_text()
    start = text.index("class ParallelMLP(")
    end = text.index("class ParallelAttention(")
    path.write_text(text[:end] + text[start:end] + text[end:])


def _duplicate_method(tree, tmp):
    path = tree / TRANSFORMER
    text = path.read_text()
    start = text.index("    def forward(self, hidden_states, attention_mask, layer_past=None,")
    end = text.index("def bias_dropout_add(")
    path.write_text(text[:end] + text[start:end] + text[end:])


def _delete_global_vars(tree, tmp):
    (tree / "megatron/global_vars.py").unlink()


def _delete_model_utils(tree, tmp):
    (tree / "megatron/model/utils.py").unlink()


def _no_checks_loop(tree, tmp):
    """Neither the defaults loop nor the derived MLP width porter anchors its checks on."""
    replace(tree, "megatron/arguments.py", "    for key in defaults:\n", "    for key in list(defaults):\n")
    replace(tree, "megatron/arguments.py", "    if args.ffn_hidden_size is None:\n", "    if not args.ffn_hidden_size:\n")


def _conflicting_option(tree, tmp):
    replace(
        tree, "megatron/arguments.py",
        "    group.add_argument('--no-query-key-layer-scaling'",
        "    group.add_argument('--layernorm-type', type=str, default='layernorm',\n"
        "                       choices=['layernorm', 'scalenorm'])\n"
        "    group.add_argument('--no-query-key-layer-scaling'",
    )


def _no_tokenizer_chain(tree, tmp):
    replace(tree, "megatron/tokenizer/tokenizer.py", "if args.tokenizer_type == 'BertWordPieceLowerCase':",
            "if args.tokenizer_type.lower() == 'bertwordpiecelowercase':")


def _restore_one_file(tree, tmp):
    pristine = copy_sample(tmp / "pristine")
    shutil.copy(pristine / "megatron/arguments.py", tree / "megatron/arguments.py")


def _generated_without_journal(tree, tmp):
    ported = copy_sample(tmp / "ported")
    apply("llama", ported)
    shutil.copy(ported / "pretrain_llama.py", tree / "pretrain_llama.py")


def _remove_rotary_application(tree, tmp):
    replace(tree, TRANSFORMER,
            "            query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)\n", "")
    replace(tree, TRANSFORMER, "        if self.rotary_emb is not None:\n            offset = ",
            "        if False:\n            offset = ")


def _append_comment(tree, tmp):
    with open(tree / TRANSFORMER, "a") as handle:
        handle.write("# my note\n")


def _edit_porter_line(tree, tmp):
    replace(tree, TRANSFORMER, "gate_and_up = 2 if args.activation_func_type in ('swiglu', 'geglu') else 1",
            "gate_and_up = 2 if args.activation_func_type in ('swiglu', 'geglu', 'reglu') else 1")


def _edit_generated_file(tree, tmp):
    with open(tree / "pretrain_llama.py", "a") as handle:
        handle.write("# tuned by me\n")


def _delete_changed_file(tree, tmp):
    (tree / "megatron/global_vars.py").unlink()


def _damage_journal(tree, tmp):
    path = tree / ".porter/journal.json"
    path.write_text(path.read_text()[:200])


def _garbage_journal(tree, tmp):
    (tree / ".porter").mkdir()
    (tree / ".porter/journal.json").write_text("{not json")


def _tampered_journal(tree, tmp):
    path = tree / ".porter/journal.json"
    text = path.read_text()
    path.write_text(text.replace('"after_sha256": "', '"after_sha256": "0', 1))


_HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, str(os.getpid()).encode())\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _live_lock(tree, tmp):
    (tree / ".porter").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tree / ".porter/lock")], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    _live_lock.holder = holder


CASES: dict[str, Case] = {
    # -- the model and its spec
    "unknown model name": Case(lambda tree, tmp: ["apply", "gpt5", "--target", tree], "model_diffs/gpt5.toml",
                               ("unknown model", "llama")),
    "spec file missing": Case(lambda tree, tmp: ["apply", tmp / "none.toml", "--target", tree], "none.toml",
                              ("not found",)),
    "spec file is a folder": Case(_spec_folder, "folder.toml", ("cannot read",)),
    "spec file not UTF-8": Case(_spec_not_utf8, "latin1.toml", ("UTF-8",)),
    "spec malformed TOML": Case(with_spec("[model\nname = 'x'\n"), "bad.toml", ("malformed",)),
    "spec unknown section": Case(with_spec(LLAMA + "\n[attentions]\nheads = 8\n"), "bad.toml", ("[attentions]",)),
    "spec unknown key": Case(with_spec(LLAMA.replace("eps = 1e-6", "eps = 1e-6\nkind = 'rms'")), "bad.toml",
                             ("norm.kind",)),
    "spec wrong type": Case(with_spec(LLAMA.replace("eps = 1e-6", 'eps = "small"')), "bad.toml",
                            ("norm.eps", "'small'")),
    "spec value out of range": Case(with_spec(LLAMA.replace("eps = 1e-6", "eps = 2.0")), "bad.toml",
                                    ("norm.eps", "< 1")),
    "spec value not a choice": Case(with_spec(LLAMA.replace('type = "swiglu"', 'type = "relu"')), "bad.toml",
                                    ("activation.type", "swiglu")),
    "spec inconsistent: multiple_of with 4h": Case(
        with_spec(LLAMA.replace('ffn_hidden_size = "2/3*4h"', 'ffn_hidden_size = "4h"')), "bad.toml",
        ("inconsistent", "mlp.multiple_of")),
    "spec inconsistent: rope_theta without rotary": Case(
        with_spec(LLAMA.replace('type = "rotary"', 'type = "learned"')), "bad.toml",
        ("inconsistent", "rope_theta")),
    "spec without [model]": Case(with_spec(LLAMA[LLAMA.index("[activation]"):]), "bad.toml", ("no [model]",)),
    "spec name not an identifier": Case(with_spec(LLAMA.replace('name = "llama"', 'name = "my-llama"')),
                                        "bad.toml", ("model.name",)),
    "spec defaults for arguments the tree lacks": Case(
        with_spec(LLAMA + "use_flash_attn = true\n"), "bad.toml", ("use_flash_attn",)),
    # -- the target
    "target missing": Case(lambda tree, tmp: ["apply", "llama", "--target", tmp / "nowhere"], "nowhere",
                           ("does not exist",)),
    "target is a file": Case(_file_target, "file", ("not a directory",)),
    "target not a Megatron-DeepSpeed tree": Case(_not_megatron, "project", ("megatron/arguments.py",)),
    "target empty folder": Case(_empty, "empty", ("not a Megatron-DeepSpeed tree",)),
    "target is the tree's megatron/ folder": Case(
        lambda tree, tmp: ["apply", "llama", "--target", tree / "megatron"], "megatron", ("missing",)),
    "syntax error in arguments.py": Case(
        edit("megatron/arguments.py", "def parse_args(", "def parse_args(("), "megatron/arguments.py",
        ("syntax error",)),
    "syntax error in transformer.py": Case(
        edit(TRANSFORMER, "class ParallelMLP(MegatronModule):", "class ParallelMLP(MegatronModule)"), TRANSFORMER,
        ("syntax error",)),
    "file not UTF-8": Case(tree_then(_bytes(TRANSFORMER, lambda b: b.replace(b"Shapes:", b"Shap\xe9s:"))),
                           TRANSFORMER, ("UTF-8",)),
    "file mixes CRLF and LF": Case(
        tree_then(_bytes(TRANSFORMER, lambda b: b.replace(b"\n", b"\r\n", 40))), TRANSFORMER,
        ("line endings",)),
    "read-only file": Case(tree_then(_read_only_file), TRANSFORMER, ("read-only",)),
    "read-only folder": Case(tree_then(_read_only_folder), "megatron/model", ("read-only",)),
    "symlinked file": Case(tree_then(_symlinked_file), TRANSFORMER, ("symbolic link",)),
    "symlinked folder": Case(tree_then(_symlinked_folder), "megatron/tokenizer", ("symbolic link",)),
    "dangling symlink to a file porter reads": Case(tree_then(_dangling_link), "tree",
                                                     ("megatron/model/gpt_model.py",)),
    "a folder where porter creates a file": Case(tree_then(_folder_where_file_goes), "megatron/model/rmsnorm.py",
                                                 ("not a regular file",)),
    "the user's own file where porter creates one": Case(tree_then(_users_file_in_the_way),
                                                         "megatron/model/rmsnorm.py", ("porter did not write it",)),
    "unknown variant: anchor class renamed": Case(tree_then(_rename_anchor_class), TRANSFORMER,
                                                  ("ParallelMLP", "FeedForward")),
    "unknown variant: anchor class duplicated": Case(tree_then(_duplicate_class), TRANSFORMER,
                                                     ("defined 2 times",)),
    "unknown variant: anchor method duplicated": Case(tree_then(_duplicate_method), TRANSFORMER,
                                                      ("ParallelAttention.forward is defined 2 times",)),
    "unknown variant: a file porter edits is missing": Case(tree_then(_delete_global_vars),
                                                            "megatron/global_vars.py", ("missing",)),
    "unknown variant: a module porter's new files import is missing": Case(
        tree_then(_delete_model_utils), "megatron/model/utils.py", ("does not have",)),
    "unknown variant: no argument checks loop": Case(tree_then(_no_checks_loop), "megatron/arguments.py",
                                                     ("for key in defaults",)),
    "unknown variant: option with porter's name, other meaning": Case(
        tree_then(_conflicting_option), "megatron/arguments.py", ("--layernorm-type", "already used")),
    "unknown variant: tokenizer chain written differently": Case(
        tree_then(_no_tokenizer_chain), "megatron/tokenizer/tokenizer.py", ("build_tokenizer",)),
    "unknown variant: a name porter's new files import is missing": Case(
        edit("megatron/model/gpt_model.py", "def CrossEntropy(output, labels):", "def cross_entropy(output, labels):"),
        "megatron/model/gpt_model.py", ("CrossEntropy", "llama_model.py")),
    # -- porter's own earlier work
    "partially ported: one file restored by hand": Case(ported_then(_restore_one_file), "megatron/arguments.py",
                                                       ("edited since porter changed it", "porter revert")),
    "partially ported: generated file without a journal": Case(
        tree_then(_generated_without_journal), "pretrain_llama.py", ("no journal",)),
    "hand-edited after porting, then apply": Case(ported_then(_remove_rotary_application), TRANSFORMER,
                                                  ("edited since porter changed it",)),
    "a generated file hand-edited after porting, then apply": Case(
        ported_then(_edit_generated_file), "pretrain_llama.py", ("edited since porter created it", "mv ")),
    "a generated file hand-edited after porting, then diff": Case(
        ported_then(_edit_generated_file, ("diff", "llama")), "pretrain_llama.py", ("edited since porter created it",)),
    "a tree file porter changed deleted after porting, then apply": Case(
        ported_then(_delete_changed_file), "megatron/global_vars.py", ("deleted since porter changed it",)),
    "hand-edited after porting, then revert": Case(ported_then(_append_comment, ("revert",)), TRANSFORMER,
                                                   ("--keep-edits",)),
    "revert --keep-edits with edits overlapping porter's": Case(
        ported_then(_edit_porter_line, ("revert", "--keep-edits")), TRANSFORMER, ("overlap",)),
    "revert --keep-edits of an edited generated file": Case(
        ported_then(_edit_generated_file, ("revert", "--keep-edits")), "pretrain_llama.py", ("edited",)),
    "revert after a changed file was deleted": Case(
        ported_then(_delete_changed_file, ("revert", "--keep-edits")), "megatron/global_vars.py", ("deleted",)),
    "revert of a tree never ported": Case(lambda tree, tmp: ["revert", "--target", tree], ".porter/journal.json",
                                          ("nothing to revert",)),
    "revert with a damaged journal": Case(ported_then(_damage_journal, ("revert",)), ".porter/journal.json",
                                          ("damaged",)),
    "revert with a tampered journal": Case(ported_then(_tampered_journal, ("revert",)), ".porter/journal.json",
                                           ("does not match",)),
    "apply with a garbage journal": Case(tree_then(_garbage_journal), ".porter/journal.json", ("damaged",)),
    "revert of a missing target": Case(lambda tree, tmp: ["revert", "--target", tmp / "nowhere"], "nowhere",
                                       ("not a folder",)),
    # -- other porter runs
    "another porter run holds the lock": Case(tree_then(_live_lock), ".porter/lock", ("still running",)),
    "diff of a target that is not a tree": Case(lambda tree, tmp: ["diff", *_not_megatron(tree, tmp)[1:]], "project",
                                                ("not a Megatron-DeepSpeed tree",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tree, tmp_path, cli):
    case = CASES[name]
    args = case.setup(tree, tmp_path)
    try:
        before = snapshot(tmp_path)
        result = cli(*args)
        after = snapshot(tmp_path)
    finally:
        holder = getattr(_live_lock, "holder", None)
        if holder is not None:
            holder.send_signal(signal.SIGTERM)
            holder.wait()
            _live_lock.holder = None
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert output.startswith("porter: error: "), output
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in output.splitlines()[1:] if ":" in line}
    assert case.file in lines.get("file", ""), output
    assert lines.get("looked for"), output
    assert lines.get("fix"), output
    for word in case.says:
        assert word in output, f"{word!r} not in:\n{output}"
    assert not diff_snapshots(before, after), "\n".join(diff_snapshots(before, after))


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_debug_shows_the_traceback(tree, cli):
    result = cli("apply", "gpt5", "--target", tree, "--debug")
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "PorterError"  # raised through, so Python prints its traceback


def test_no_traceback_from_the_real_command(tree, tmp_path):
    """The same, run as users run it: a separate process, its stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "porter", "apply", "gpt5", "--target", str(tree)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("porter: error: unknown model 'gpt5'")
    debug = subprocess.run([sys.executable, "-m", "porter", "apply", "gpt5", "--target", str(tree), "--debug"],
                           capture_output=True, text=True, env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
