"""Issue 4's acceptance on a real tree: port it, check it, train it.

On a scratch copy of the tree (never the tree itself):
  1. `porter apply llama` exits 0;
  2. a second `porter apply llama` changes no byte;
  3. every changed or created file compiles;
then, after the scratch fixes of cpu_fixes.py (the trees' own CPU, numpy 2 and upstream
DeepSpeed problems, unrelated to LLaMA; with the stand-ins of standins/):
  4. the tree's own argument parser builds with pretrain_llama.py's extra-args provider,
     registers no new duplicate dest (argparse itself refuses duplicate options), parses
     the LLaMA defaults and applies them (the tree's checks included);
  5. every changed or created module imports;
  6. for the trees that can run on CPU: `porter smoke llama` trains the generated LLaMA for
     20 steps with DeepSpeed's pipeline engine and the loss falls;
  7. and `porter verify llama` finds the generated models' logits equal to HF transformers'
     LlamaForCausalLM's within 1e-5 (issue 7).

Run it on a folder of trees: `python -m tests.realtrees.acceptance /work/trees` (prints a
table); tests/realtrees/test_real_trees.py runs it under pytest when PORTER_REAL_TREES is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.realtrees.cpu_fixes import apply_fixes

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
TREES = ("ms-pre", "ms-head", "hab-pre", "bs-head")
TRAINS = ("ms-pre", "ms-head", "hab-pre")  # bigscience needs apex (CUDA)
OPTIONAL_STANDINS = {"hab-pre": "habana", "bs-head": "apex"}
SPEC = "llama"


@dataclass
class Acceptance:
    label: str
    apply: bool = False
    idempotent: bool = False
    compiles: bool = False
    args: bool = False
    imports: bool = False
    trains: bool | None = None  # None: not attempted (the tree cannot run here)
    first: float | None = None
    last: float | None = None
    verifies: bool | None = None  # `porter verify`: HF parity of the generated models (None: not attempted)
    max_logit_diff: dict[str, float] = field(default_factory=dict)  # class -> max |logit - HF|
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all((self.apply, self.idempotent, self.compiles, self.args, self.imports)) and \
            self.trains is not False and self.verifies is not False

    def row(self) -> str:
        def mark(value):
            return "n/a" if value is None else ("yes" if value else "NO")

        loss = f"{self.first:.3f} → {self.last:.3f}" if self.first is not None else "—"
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in self.max_logit_diff.items()) or "—"
        cells = [self.label, mark(self.apply), mark(self.idempotent), mark(self.compiles), mark(self.args),
                 mark(self.imports), mark(self.trains), loss, mark(self.verifies), diffs]
        return "| " + " | ".join(cells) + " |"


HEADER = ("| tree | apply | idempotent | compiles | args | imports | trains | first5 → last5 loss | verify | "
          "max logit diff |\n|---|---|---|---|---|---|---|---|---|---|")


def environment(label: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(STANDINS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PORTER_STANDINS"] = OPTIONAL_STANDINS.get(label, "")
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def porter(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porter", *args], env=env, capture_output=True, text=True, cwd=REPO)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and ".porter" not in p.parts
    }


_ARGS_SCRIPT = textwrap.dedent(
    """
    import argparse, json, os, sys
    import pretrain_llama
    from megatron import arguments as A

    seen = {}

    def provider(parser):
        parser = pretrain_llama.llama_defaults(parser)
        seen["parser"] = parser
        return parser

    defaults = pretrain_llama.llama_defaults(argparse.ArgumentParser())._defaults
    sys.argv = ["pretrain_llama.py"] + json.loads(sys.argv[1])
    args = A.parse_args(extra_args_provider=provider)
    if os.environ["CHECKS_IN"] == "validate_args":  # microsoft HEAD checks apart from parsing
        A.validate_args(args, {})
    dests = [a.dest for a in seen["parser"]._actions if a.dest != "help"]
    got = {k: getattr(getattr(args, k), "name", getattr(args, k)) for k in defaults}
    print("RESULT " + json.dumps({
        "duplicates": sorted({d for d in dests if dests.count(d) > 1}),
        "defaults": {k: getattr(v, "name", v) for k, v in defaults.items()},
        "got": got,
        "ffn_hidden_size": args.ffn_hidden_size,
        "hidden_size": args.hidden_size,
    }, default=str))
    """
)

_IMPORT_SCRIPT = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('IMPORTED', len(sys.argv) - 1)\n"


def _module_name(path: str) -> str:
    return path[: -len(".py")].replace("/", ".").removesuffix(".__init__")


def check_arguments(copy: Path, label: str, env: dict[str, str], result: Acceptance) -> None:
    from porter.features import profile_of
    from porter.features.ffn_rule import ffn_hidden_size
    from porter.source import SourceTree
    from porter.spec import load_spec

    profile = profile_of(SourceTree.open(copy))
    argv = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64",
            "--micro-batch-size", "2"]
    if not profile.arguments.forbids_max_positions:
        argv += ["--max-position-embeddings", "64"]
    run_env = dict(env, CHECKS_IN=profile.arguments.checks_function or "", RANK="0", WORLD_SIZE="1")
    done = subprocess.run([sys.executable, "-c", _ARGS_SCRIPT, json.dumps(argv)], cwd=copy, env=run_env,
                          capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        result.notes.append("args: " + (done.stderr.strip().splitlines() or ["no output"])[-1])
        return
    data = json.loads(line[len("RESULT "):])
    original = [a.dest for a in profile.arguments.arguments]
    new_duplicates = [d for d in data["duplicates"] if original.count(d) < 2]
    wrong = {k: (v, data["got"][k]) for k, v in data["defaults"].items() if data["got"][k] != v}
    spec = load_spec(SPEC)
    ffn = ffn_hidden_size(spec, data["hidden_size"])
    if new_duplicates:
        result.notes.append(f"args: duplicate dests {new_duplicates}")
    if wrong:
        result.notes.append(f"args: defaults not applied {wrong}")
    if data["ffn_hidden_size"] != ffn:
        result.notes.append(f"args: ffn_hidden_size {data['ffn_hidden_size']}, the spec's rule gives {ffn}")
    result.args = not new_duplicates and not wrong and data["ffn_hidden_size"] == ffn


def run_acceptance(label: str, source: Path, scratch: Path, train: bool | None = None) -> Acceptance:
    result = Acceptance(label)
    env = environment(label)
    copy = scratch / label
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy, symlinks=True)

    first = porter(["apply", SPEC, "--target", str(copy)], env)
    result.apply = first.returncode == 0
    if not result.apply:
        result.notes.append("apply: " + (first.stderr.strip() or first.stdout.strip()))
        return result
    changed = [line.split()[1] for line in first.stdout.splitlines() if line.startswith(("changed ", "created "))]
    before = snapshot(copy)
    second = porter(["apply", SPEC, "--target", str(copy)], env)
    result.idempotent = second.returncode == 0 and snapshot(copy) == before
    if not result.idempotent:
        result.notes.append("second apply: " + (second.stderr.strip() or second.stdout.strip()))

    failures = []
    for path in changed:
        try:
            py_compile.compile(str(copy / path), doraise=True, cfile=str(scratch / "compiled.pyc"))
        except py_compile.PyCompileError as exc:
            failures.append(f"{path}: {exc.msg}")
    result.compiles = bool(changed) and not failures
    result.notes += [f"compile: {f}" for f in failures]

    # The trees' own CPU / numpy-2 / upstream-DeepSpeed problems, unrelated to LLaMA, are fixed
    # in this scratch copy only now, after porter's output was checked as porter wrote it.
    result.notes += [f"scratch fix {line}" for line in apply_fixes(copy, label)]
    check_arguments(copy, label, env, result)

    modules = [_module_name(p) for p in changed]
    done = subprocess.run([sys.executable, "-c", _IMPORT_SCRIPT, *modules], cwd=copy, env=dict(env, PYTHONPATH=f"{copy}{os.pathsep}{env['PYTHONPATH']}"),
                          capture_output=True, text=True)
    result.imports = done.returncode == 0 and f"IMPORTED {len(modules)}" in done.stdout
    if not result.imports:
        result.notes.append("imports: " + (done.stderr.strip().splitlines() or ["no output"])[-1])

    if train is None:
        train = label in TRAINS
    if train:
        from porter.smoke import SmokeConfig, run_smoke
        from porter.spec import load_spec

        with standins_environment(env):
            smoke = run_smoke(load_spec(SPEC), copy, scratch / f"{label}-smoke", SmokeConfig(steps=20))
        result.trains = smoke.passed
        if smoke.losses:
            result.first, result.last = smoke.first, smoke.last
        if not smoke.passed:
            result.notes.append("smoke: " + smoke.log[-3000:])
        check_parity(label, copy, scratch, env, result)
    return result


@contextmanager
def standins_environment(env: dict[str, str]) -> Iterator[None]:
    """PYTHONPATH and PORTER_STANDINS of `env` for the runs porter starts in a real tree, then as before."""
    keys = ("PYTHONPATH", "PORTER_STANDINS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# Which generated classes `porter verify` checks per tree. microsoft HEAD's LLaMAModelPipe is
# its GPTModelPipe, whose layer specs start with a float16 cast and end with LMHeadPipe:
# porter's weight layout has the positions of its own template only.
VERIFY_KINDS = {"ms-head": ("model",)}


def check_parity(label: str, copy: Path, scratch: Path, env: dict[str, str], result: Acceptance) -> None:
    """`porter verify` (HF parity, TP=1): the workers run in the tree with the stand-ins; HF here."""
    from porter.errors import PorterError
    from porter.spec import load_spec
    from porter.verify.parity import VerifyOptions, verify

    try:
        with standins_environment(env):
            outcome = verify(load_spec(SPEC), copy, scratch / f"{label}-verify",
                             VerifyOptions(kinds=VERIFY_KINDS.get(label, ("model", "pipe"))))
    except PorterError as exc:
        result.verifies = False
        result.notes.append(f"verify: {exc}")
        return
    result.verifies = outcome.passed
    result.max_logit_diff = {r.model_class: r.max_logit_diff for r in outcome.results}
    if not outcome.passed:
        from porter.verify.parity import describe

        result.notes.append("verify: " + describe(outcome))


def main(argv: list[str]) -> int:
    import tempfile

    root = Path(argv[0]) if argv else Path(os.environ.get("PORTER_REAL_TREES", ""))
    labels = argv[1:] or [t for t in TREES if (root / t).is_dir()]
    scratch = Path(tempfile.mkdtemp(prefix="porter-realtrees-"))
    results = [run_acceptance(label, root / label, scratch) for label in labels]
    print(HEADER)
    for result in results:
        print(result.row())
    for result in results:
        for note in result.notes:
            print(f"{result.label}: {note}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
