"""Issue 13's acceptance on real trees: porter's own commands, as a user runs them.

On a copy of each tree (the "user's tree" here; the tree itself is never touched):
  1. `porter apply llama` exits 0;
  2. a second `porter apply llama` changes no byte;
  3. every changed or created file compiles;
  4. the tree's own argument parser builds with pretrain_llama.py's extra-args provider,
     registers no new duplicate dest, parses the LLaMA defaults and applies them (the tree's
     checks included);
  5. every changed or created module imports;
  6. `porter smoke llama` trains the generated LLaMA for 20 steps and the loss falls;
  7. `porter verify llama` finds both generated classes' logits within 1e-5 of HF's;
  8. `porter revert` gives the tree back byte for byte (caches included: Python writes
     __pycache__ here, and smoke and verify run on scratch copies);
checks 4 and 5 run in a scratch copy with porter's stand-ins, as smoke and verify do. A tree
that needs CUDA must say so: smoke and verify exit 2 with "this tree needs CUDA".
No fix of porter's tests is applied to any tree: what passes here passes for a user.

Run it on a folder of trees: `python -m tests.realtrees.acceptance [--family NAME] TREES [LABEL...]`
(prints a table); tests/realtrees/test_real_trees.py runs it under pytest when
PORTER_REAL_TREES is set.
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The trees of issues 13 and 22 (a TREES.md beside them says where each comes from).
TREES = ("ms-pre", "ms-merge", "ms-llama", "ms-head", "hab-pre", "hab-llama", "bs-head", "hmd-head",
         "alcf-head", "ollf-head", "mast-head", "dspin-head", "llmjp-abci")
SPEC = "llama"
NEEDS_CUDA = "this tree needs CUDA"


@dataclass
class Acceptance:
    label: str
    apply: bool = False
    idempotent: bool = False
    compiles: bool = False
    args: bool = False
    imports: bool = False
    trains: bool | None = None  # None: not reached
    first: float | None = None
    last: float | None = None
    verifies: bool | None = None
    max_logit_diff: dict[str, float] = field(default_factory=dict)  # class -> max |logit - HF|
    needs_cuda: bool = False  # smoke and verify said "this tree needs CUDA" (exit 2)
    reverts: bool = False
    standins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        ported = all((self.apply, self.idempotent, self.compiles, self.args, self.imports, self.reverts))
        return ported and (self.needs_cuda or (self.trains is True and self.verifies is True))

    def row(self) -> str:
        def mark(value):
            return "n/a" if value is None else ("yes" if value else "NO")

        loss = f"{self.first:.3f} → {self.last:.3f}" if self.first is not None else "—"
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in self.max_logit_diff.items()) or "—"
        smoke = "needs CUDA" if self.needs_cuda else mark(self.trains)
        verify = "needs CUDA" if self.needs_cuda else mark(self.verifies)
        cells = [self.label, mark(self.apply), mark(self.idempotent), mark(self.compiles), mark(self.args),
                 mark(self.imports), smoke, loss, verify, diffs, mark(self.reverts), ", ".join(self.standins) or "—"]
        return "| " + " | ".join(cells) + " |"


HEADER = ("| tree | apply | idempotent | compiles | args | imports | smoke | first5 → last5 loss | verify | "
          "max logit diff | revert | stand-ins |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def user_environment() -> dict[str, str]:
    """A user's shell: porter importable, Python writing its caches (so that revert is tested with them)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def porter(args: list[str], env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porter", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


_ARGS_SCRIPT = textwrap.dedent(
    """
    import argparse, importlib, inspect, json, os, sys
    script = importlib.import_module(os.environ["SCRIPT"])
    from megatron import arguments as A

    seen = {}
    family_defaults = getattr(script, os.environ["PROVIDER"])

    def provider(parser):
        parser = family_defaults(parser)
        seen["parser"] = parser
        return parser

    defaults = family_defaults(argparse.ArgumentParser())._defaults
    sys.argv = [os.environ["SCRIPT"] + ".py"] + json.loads(os.environ["ARGV"])
    args = A.parse_args(extra_args_provider=provider)
    checks = os.environ["CHECKS_IN"]
    if checks and checks != "parse_args":  # the tree checks apart from parsing (microsoft HEAD's validate_args)
        # called as the tree's initialize_megatron calls it: with the (empty) defaults only where it
        # takes them (microsoft HEAD: validate_args(args, defaults={}); OpenLLM-France, deep-spin:
        # validate_args(args), their defaults loop lives in initialize_megatron)
        check = getattr(A, checks)
        takes = [p for p in inspect.signature(check).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        check(args, {}) if len(takes) > 1 else check(args)
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

_IMPORT_SCRIPT = "import importlib, os\nfor name in os.environ['MODULES'].split():\n    importlib.import_module(name)\n" \
                 "print('IMPORTED', len(os.environ['MODULES'].split()))\n"


# For a tree that needs CUDA, the parse and import checks (nothing runs) see the CUDA-only
# packages it imports at start-up as empty modules, through porter's own import hooks.
_CUDA_IMPORTS = textwrap.dedent(
    """
    import sys
    from porter.treerun.standins.runtime import HOOKS, module
    from porter.treerun.failure import CUDA_ONLY

    if HOOKS not in sys.meta_path:
        sys.meta_path.insert(0, HOOKS)
    for name in CUDA_ONLY:
        HOOKS.missing(name + ".*", "CUDA-only imports (acceptance: parse and import checks only)",
                      lambda name: module(name, loose=True))
    """
)


CUDA_STUBBED = "\n(CUDA-only imports seen as empty modules)\n"


def in_scratch(tree: Path, scratch: Path, code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `code` as a script in a scratch copy of the tree with porter's stand-ins (as smoke runs the tree).

    When the tree stops on a CUDA-only import, the check runs again with those imports as
    empty modules (the note says so): a CUDA tree must still parse and import.
    """
    from porter.treerun import standins
    from porter.treerun.failure import classify
    from porter.treerun.process import environment
    from porter.treerun.scratch import scratch_copy

    copy = scratch_copy(tree, scratch / "tree")
    script = scratch / "check.py"
    run_env = {**environment(copy, 1), **env, **standins.environment(standins.offered(copy), scratch / "standins.txt")}
    run_env["PYTHONPATH"] = os.pathsep.join([str(copy), str(REPO)])
    for stubs in (False, True):
        script.write_text((_CUDA_IMPORTS if stubs else "") + code)
        done = subprocess.run([sys.executable, "-m", "porter.treerun.standins.launch", str(script)], cwd=copy, env=run_env,
                              capture_output=True, text=True, timeout=600)
        failure = classify(done.stderr, [copy]) if done.returncode else None
        if stubs or failure is None or failure.kind != "needs-cuda":
            done.stdout += CUDA_STUBBED if stubs else ""
            return done
    raise AssertionError("unreachable")


def _module_name(path: str) -> str:
    return path[: -len(".py")].replace("/", ".").removesuffix(".__init__")


def check_arguments(copy: Path, scratch: Path, spec, result: Acceptance) -> None:
    from porter.catalog import profile_of
    from porter.differences.ffn_rule import ffn_hidden_size
    from porter.source import SourceTree
    from porter.treerun.argv import entry_points

    tree = SourceTree.open(copy)
    profile = profile_of(tree)
    script, provider = entry_points(tree, spec)
    argv = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64",
            "--micro-batch-size", "2"]
    if not profile.arguments.forbids_max_positions:
        argv += ["--max-position-embeddings", "64"]
    # Parsed without --deepspeed, microsoft's 2023 checks want what their GPU launch scripts export.
    done = in_scratch(copy, scratch, _ARGS_SCRIPT, {"CHECKS_IN": profile.arguments.checks_function or "",
                                                     "ARGV": json.dumps(argv), "CUDA_DEVICE_MAX_CONNECTIONS": "1",
                                                     "SCRIPT": script, "PROVIDER": provider or ""})
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        result.notes.append("args: " + (done.stderr.strip().splitlines() or ["no output"])[-1])
        return
    data = json.loads(line[len("RESULT "):])
    original = [a.dest for a in profile.arguments.arguments]
    new_duplicates = [d for d in data["duplicates"] if original.count(d) < 2]
    given = {a[2:].replace("-", "_") for a in argv if a.startswith("--")}  # the command line's own, not defaults
    wrong = {k: (v, data["got"][k]) for k, v in data["defaults"].items() if k not in given and data["got"][k] != v}
    ffn = ffn_hidden_size(spec, data["hidden_size"])
    if new_duplicates:
        result.notes.append(f"args: duplicate dests {new_duplicates}")
    if wrong:
        result.notes.append(f"args: defaults not applied {wrong}")
    if data["ffn_hidden_size"] != ffn:
        result.notes.append(f"args: ffn_hidden_size {data['ffn_hidden_size']}, the spec's rule gives {ffn}")
    result.args = not new_duplicates and not wrong and data["ffn_hidden_size"] == ffn
    if CUDA_STUBBED in done.stdout:
        result.notes.append("args: parsed with the CUDA-only imports seen as empty modules")


def _json(done: subprocess.CompletedProcess) -> dict | None:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


def check_smoke(copy: Path, env: dict[str, str], result: Acceptance, family: str = SPEC) -> None:
    done = porter(["smoke", family, "--target", str(copy), "--steps", "20", "--json"], env)
    doc = _json(done)
    if done.returncode == 2 and NEEDS_CUDA in done.stderr:
        result.needs_cuda = True
        result.notes.append("smoke: " + next(x for x in done.stderr.splitlines() if NEEDS_CUDA in x))
        return
    if doc is None or doc.get("schema") != "porter.smoke/1":
        result.trains = False
        result.notes.append(f"smoke: exit {done.returncode}: " + done.stderr.strip()[-3000:])
        return
    result.trains = doc["passed"]
    result.standins = doc["standins"]
    if doc["losses"]:
        result.first, result.last = doc["first5_mean"], doc["last5_mean"]
    if not doc["passed"]:
        result.notes.append(f"smoke: {doc['failure']}")


def check_verify(copy: Path, env: dict[str, str], result: Acceptance, family: str = SPEC) -> None:
    done = porter(["verify", family, "--target", str(copy), "--json"], env)
    doc = _json(done)
    if done.returncode == 2 and NEEDS_CUDA in done.stderr:
        result.notes.append("verify: " + next(x for x in done.stderr.splitlines() if NEEDS_CUDA in x))
        if not result.needs_cuda:
            result.verifies = False
        return
    if result.needs_cuda:  # smoke said CUDA; verify must say it too
        result.needs_cuda = False
        result.notes.append("verify did not say the tree needs CUDA")
    if doc is None or doc.get("schema") != "porter.verify/1":
        result.verifies = False
        result.notes.append(f"verify: exit {done.returncode}: " + done.stderr.strip()[-3000:])
        return
    result.verifies = doc["passed"] and done.returncode == 0
    result.max_logit_diff = {r["class"]: r["max_abs_logit_diff"] for r in doc["results"]}
    result.standins = sorted(set(result.standins) | set(doc.get("standins", [])))
    for r in doc["results"]:
        if not r["passed"]:
            first = r.get("first_divergence") or {}
            result.notes.append(f"verify: {r['class']}: max |logit - HF| {r['max_abs_logit_diff']:.3g}"
                                f"{'; structure: ' + str(len(r['structure'])) + ' tensors' if r['structure'] else ''}"
                                f"{'; first divergence ' + first['module'] if first else ''}")


def run_acceptance(label: str, source: Path, scratch: Path, family: str = SPEC) -> Acceptance:
    from porter.catalog import load_spec
    from porter.naming import spec_in_tree
    from porter.source import SourceTree

    result = Acceptance(label)
    env = user_environment()
    copy = scratch / label
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy, symlinks=True)
    original = snapshot(copy)
    spec = spec_in_tree(load_spec(family), SourceTree.open(copy))  # the names the family takes in this tree

    first = porter(["apply", family, "--target", str(copy)], env)
    result.apply = first.returncode == 0
    if not result.apply:
        result.notes.append("apply: " + (first.stderr.strip() or first.stdout.strip()))
        result.reverts = snapshot(copy) == original
        return result
    changed = [line.split()[1] for line in first.stdout.splitlines() if line.startswith(("changed ", "created "))]
    ported = snapshot(copy)
    second = porter(["apply", family, "--target", str(copy)], env)
    result.idempotent = second.returncode == 0 and snapshot(copy) == ported
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

    check_arguments(copy, scratch / f"{label}-args", spec, result)
    done = in_scratch(copy, scratch / f"{label}-imports", _IMPORT_SCRIPT,
                      {"MODULES": " ".join(_module_name(p) for p in changed)})
    result.imports = done.returncode == 0 and f"IMPORTED {len(changed)}" in done.stdout
    if CUDA_STUBBED in done.stdout:
        result.notes.append("imports: imported with the CUDA-only imports seen as empty modules")
    if not result.imports:
        result.notes.append("imports: " + (done.stderr.strip().splitlines() or ["no output"])[-1])

    check_smoke(copy, env, result, family)
    check_verify(copy, env, result, family)
    if snapshot(copy) != ported:
        result.notes.append("smoke or verify wrote into the tree: "
                            + ", ".join(sorted(set(snapshot(copy)) ^ set(ported))[:5]))
    reverted = porter(["revert", "--target", str(copy)], env)
    now = snapshot(copy)
    result.reverts = reverted.returncode == 0 and now == original
    if not result.reverts:
        result.notes.append(f"revert: exit {reverted.returncode}; differs: "
                            + ", ".join(sorted(k for k in set(now) | set(original) if now.get(k) != original.get(k))[:5]))
    return result


def main(argv: list[str]) -> int:
    import tempfile

    family = SPEC
    if argv[:1] == ["--family"]:
        family, argv = argv[1], argv[2:]
    root = Path(argv[0]) if argv else Path(os.environ.get("PORTER_REAL_TREES", ""))
    labels = argv[1:] or [t for t in TREES if (root / t).is_dir()]
    scratch = Path(tempfile.mkdtemp(prefix="porter-realtrees-"))
    results = []
    for label in labels:
        results.append(run_acceptance(label, root / label, scratch, family))
        print(results[-1].row(), flush=True)
    print(HEADER)
    for result in results:
        print(result.row())
    for result in results:
        for note in result.notes:
            print(f"{result.label}: {note}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
