"""Run the commands the docs show, the way a reader would, and compare what they print.

A page's fenced blocks are read in order and run in one sandbox folder per page (so a page
can port a tree in one block and train it in the next), which starts with a pristine copy of
the bundled sample tree as `Megatron-DeepSpeed/`, committed in a git repository of its own:

- ```console blocks are transcripts: each `$ command` runs in bash and what it prints
  (stdout and stderr together) must equal the lines below it, up to the next `$`. A decimal
  number (a loss, a logit difference) must be the number printed to within the block's
  tolerance: 1e-3 (absolute) unless its info string says another (```console tolerance=1e-6);
  every other character must be equal. A line `...` matches any lines. A command must exit 0
  unless its comment says `# exit status N` (or it ends with `; echo "exit status $?"`, which
  shows the status to the reader).
- ```sh / ```bash blocks are command lists: each line runs (a `# comment` is not one), and must
  exit 0 unless its comment says `exit status N`.
- ```yaml blocks (CI workflows): every `run:` command runs, like a ```sh line.
- a block whose info string has `file=NAME` (```toml file=my_model.toml) is written to NAME.
- `cd DIR` moves the sandbox's working folder for the commands that follow.
- any other block is not run, and must say why in its info string: `not-run="why"`, or
  `checked-by=TEST` naming the test that checks what it shows (```text checked-by=tests/...).
  `how_checked()` says for every block how it is checked; `python -m tests.docs.runner --list
  PAGE...` prints it.

`porter` is this checkout's porter, run by the Python that runs the tests; `python` is that
Python too. A page that names `./llama-hf` (your HF weights) gets a tiny random HF LLaMA
there, made by porter's own verify reference, as the stand-in for the reader's weights. Commands that set up a machine (venvs, pip installs) are not run: the caller
names them in `excluded`, exactly as they are written.

When porter's output changes on purpose, `python -m tests.docs.runner --update PAGE...`
reruns the pages and writes what each transcript now prints into it (a transcript with a
`...` elision is left for you to edit, and listed).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(```+|~~~+)\s*([^`]*)$")
DECIMAL = re.compile(r"\d+\.\d+(?:[eE][-+]?\d+)?")
EXIT_NOTE = re.compile(r"exit status (\d+)")
DEFAULT_TOLERANCE = 1e-3
RUN = ("console", "sh", "bash", "shell", "yaml")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    attrs: dict[str, str]
    text: str

    @property
    def tolerance(self) -> float:
        return float(self.attrs.get("tolerance", DEFAULT_TOLERANCE))


@dataclass
class Command:
    page: str
    line: int
    command: str
    expected_output: str | None  # a transcript's lines; None: not compared
    expected_status: int
    tolerance: float = DEFAULT_TOLERANCE  # for the decimals of expected_output


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group(1), shlex.split(match.group(2))
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        attrs = dict(word.split("=", 1) for word in info[1:] if "=" in word)
        out.append(Block(page=page.name, line=start + 1, lang=info[0] if info else "", attrs=attrs,
                         text="\n".join(body) + "\n"))
        i += 1
    return out


def _joined(lines: list[str]) -> list[tuple[int, str]]:
    """(offset, command) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for n, line in enumerate(lines):
        if not pending:
            first = n
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        out.append((first, " ".join(part.strip() for part in pending)))
        pending = []
    return out


def _status(comment: str) -> int:
    match = EXIT_NOTE.search(comment)
    return int(match.group(1)) if match else 0


def commands(block: Block) -> list[Command]:
    if block.lang == "console":
        out: list[Command] = []
        lines = block.text.splitlines()
        n = 0
        while n < len(lines):
            if not lines[n].startswith("$ "):
                raise ValueError(f"{block.page}:{block.line + 1 + n}: a transcript line outside a command's output")
            start = n
            parts = [lines[n][2:]]
            while parts[-1].endswith("\\"):
                n += 1
                parts[-1] = parts[-1][:-1]
                parts.append(lines[n].strip())
            n += 1
            output = []
            while n < len(lines) and not lines[n].startswith("$ "):
                output.append(lines[n])
                n += 1
            command = " ".join(p.strip() for p in parts)
            out.append(Command(block.page, block.line + 1 + start, command, "\n".join(output),
                               _status(command.partition(" #")[2]), block.tolerance))
        return out
    if block.lang in ("sh", "bash", "shell"):
        lines = block.text.splitlines()
        out = []
        for offset, text in _joined(lines):
            code, _, comment = text.partition(" #")
            if code.strip() and not code.lstrip().startswith("#"):
                out.append(Command(block.page, block.line + 1 + offset, code.strip(), None, _status(comment)))
        return out
    if block.lang == "yaml":
        out = []
        for run in _yaml_runs(yaml.safe_load(block.text)):
            for text in run.splitlines():
                code, _, comment = text.partition(" #")
                if code.strip():
                    out.append(Command(block.page, block.line, code.strip(), None, _status(comment)))
        return out
    return []


def _yaml_runs(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["run"]] if isinstance(node.get("run"), str) else []
        for key, value in node.items():
            if key != "run":
                found.extend(_yaml_runs(value))
        return found
    if isinstance(node, list):
        return [run for item in node for run in _yaml_runs(item)]
    return []


def matches(expected: str, actual: str, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """A transcript's expected lines against what was printed (see the module docstring)."""
    pattern = []
    numbers: list[float] = []
    for line in expected.rstrip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        parts = DECIMAL.split(line.rstrip())
        numbers += [float(n) for n in DECIMAL.findall(line)]
        pattern.append(f"({DECIMAL.pattern})".join(re.escape(p) for p in parts) + r"[ \t]*\n")
    text = "\n".join(line.rstrip() for line in actual.rstrip("\n").splitlines()) + "\n" if actual.strip() else ""
    found = re.fullmatch("".join(pattern), text)
    if found is None:
        return False
    return all(abs(float(got) - want) <= tolerance for got, want in zip(found.groups(), numbers, strict=True))


def checked_block(test: str) -> Block:
    """The one block of the docs whose info string says `checked-by=...::TEST` (for that test)."""
    from tests.docs.test_docs import PAGES

    found = [b for page in PAGES for b in blocks(page) if b.attrs.get("checked-by", "").endswith(f"::{test}")]
    assert len(found) == 1, f"{len(found)} blocks of the docs say checked-by=...::{test}"
    return found[0]


def how_checked(block: Block, excluded: set[str] = frozenset()) -> str | None:
    """How the docs test checks a block, or None when it neither runs it nor says why not."""
    if "file" in block.attrs:
        return f"written to {block.attrs['file']} for the commands after it"
    if "checked-by" in block.attrs:
        return f"not run here; checked by {block.attrs['checked-by']}"
    if "not-run" in block.attrs:
        return f"not run: {block.attrs['not-run']}"
    if block.lang not in RUN:
        return None
    cmds = commands(block)
    skipped = [c.command for c in cmds if c.command in excluded]
    if skipped and len(skipped) == len(cmds):
        return "not run: it sets up a machine (a venv, pip installs)"
    what = "run, each output compared (decimals to within " f"{block.tolerance:g})" if block.lang == "console" \
        else "run, each command's exit status checked"
    return what + (f"; not run: {', '.join(skipped)} (machine set-up)" if skipped else "")


def tiny_hf_llama(folder: Path) -> None:
    """A small random LLaMA in HF's format, shaped by the bundled llama spec."""
    from porter import convert
    from porter.catalog import load_spec
    from porter.verify.reference import TinyConfig, random_reference

    model = random_reference(load_spec("llama"), TinyConfig())
    convert.write_hf(folder, model.config.to_dict(), model.state_dict())


class Sandbox:
    """A folder a reader would work in: a pristine sample tree, and porter on the PATH."""

    def __init__(self, folder: Path, hf_weights: bool = False) -> None:
        self.root = folder
        self.cwd = folder
        if hf_weights:
            tiny_hf_llama(folder / "llama-hf")
        tree = folder / "Megatron-DeepSpeed"
        shutil.copytree(REPO / "sample_tree", tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        git_env = {**os.environ, "GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.com",
                   "GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@example.com"}
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the tree before porter"]):
            subprocess.run(["git", *args], cwd=tree, env=git_env, check=True, capture_output=True)
        bin_dir = folder / ".bin"
        bin_dir.mkdir()
        for name, target in (("porter", f'"{sys.executable}" -m porter "$@"'), ("python", f'"{sys.executable}" "$@"')):
            script = bin_dir / name
            script.write_text(f"#!/bin/sh\nexec {target}\n")
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        self.env = {
            **git_env,
            "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
            "COLUMNS": "100",
            "TERM": "dumb",
            "NO_COLOR": "1",
        }

    def write(self, block: Block) -> None:
        path = self.cwd / block.attrs["file"]
        path.parent.mkdir(parents=True, exist_ok=True)  # file=Llama-3.1-8B/config.json: a model folder
        path.write_text(block.text, encoding="utf-8")

    def run(self, command: Command) -> tuple[int, str]:
        if re.fullmatch(r"cd \S+", command.command):
            self.cwd = (self.cwd / command.command[3:]).resolve()
            return 0, ""
        done = subprocess.run(
            ["bash", "-c", command.command], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        )
        return done.returncode, done.stdout


def run_page(page: Path, folder: Path, excluded: set[str], printed: dict[int, str] | None = None) -> tuple[int, list[str]]:
    """Run a page; returns (commands run, failures as readable reports). `printed` collects what
    each mismatched transcript printed, by its command's line."""
    sandbox = Sandbox(folder, hf_weights="./llama-hf" in page.read_text(encoding="utf-8"))
    failures: list[str] = []
    ran = 0
    for block in blocks(page):
        if "file" in block.attrs:
            sandbox.write(block)
            continue
        for command in commands(block):
            if command.command in excluded:
                continue
            status, output = sandbox.run(command)
            ran += 1
            where = f"{command.page}:{command.line}: $ {command.command}"
            if status != command.expected_status:
                failures.append(f"{where}\nexit status {status}, the page says {command.expected_status}\n{output[-3000:]}")
            elif command.expected_output is not None and not matches(command.expected_output, output,
                                                                     command.tolerance):
                if printed is not None:
                    printed[command.line] = output
                failures.append(f"{where}\nprinted (paste this into the page if the change is right):\n{output}"
                                f"\nthe page shows:\n{command.expected_output}\n")
    return ran, failures


def update(page: Path, excluded: set[str]) -> list[str]:
    """Rewrite the page's mismatched transcripts with what they print now; returns what is left."""
    import tempfile

    printed: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        _, failures = run_page(page, Path(folder), excluded, printed)
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    left = [f for f in failures if not any(f.startswith(f"{page.name}:{n}:") for n in printed)]
    for number in sorted(printed, reverse=True):
        start = number  # the index of the line after the command
        end = start
        while end < len(lines) and not lines[end].startswith(("$ ", "```")):
            end += 1
        if any(line.strip() == "..." for line in lines[start:end]):
            left.append(f"{page.name}:{number}: has a `...` elision: update it by hand")
            continue
        new = [line.rstrip() + "\n" for line in printed[number].rstrip("\n").splitlines()] if printed[number].strip() else []
        lines[start:end] = new
    page.write_text("".join(lines), encoding="utf-8")
    return left


if __name__ == "__main__":
    import argparse

    from tests.docs.test_docs import CI_INSTALL, setup_commands

    parser = argparse.ArgumentParser(description="The docs' blocks: how each is checked, or update the transcripts.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--update", nargs="+", type=Path, metavar="PAGE",
                        help="rerun the pages and write what each transcript now prints into it")
    action.add_argument("--list", nargs="+", type=Path, metavar="PAGE", help="say how each block is checked")
    options = parser.parse_args()
    excluded = {*setup_commands(), CI_INSTALL}
    for page in options.list or []:
        for block in blocks(page):
            print(f"{page}:{block.line} ```{block.lang}: {how_checked(block, excluded) or 'NOT RUN, AND NO REASON GIVEN'}")
    for left in (item for page in options.update or [] for item in update(page.resolve(), excluded)):
        print(left, file=sys.stderr)
