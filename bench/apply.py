"""Wall time of `porter diff` and `porter apply` as whole processes, beside the libcst floor.

For each tree (the bundled sample tree, and every tree folder under $PORTER_REAL_TREES) it
times, round-robin so that drift hits all alike, the median of N runs of:

  python        `python -c pass`: the interpreter's start
  libcst        `python -c "import libcst"`
  floor         libcst alone parsing and printing the very files porter parses on that tree
  diff          `python -m porter diff llama --target TREE`
  apply         `python -m porter apply llama --target COPY` (a fresh copy per run, copied
                outside the timing)

and prints diff/floor and apply/floor. A tree porter refuses is timed all the same (its
refusal is the run) and marked; its floor is the files porter parsed before refusing.
With --stages it also prints where `porter diff` spends its time inside the process.

usage: python bench/apply.py [--runs 7] [--spec llama] [--stages] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from versions import versions  # bench/versions.py (the script's folder is on sys.path)

import porter
from porter.errors import PorterError
from porter.resources import sample_tree_dir

TREE_MARK = "megatron/arguments.py"
FLOOR = """
import sys, libcst
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        libcst.parse_module(f.read()).code
"""


def trees() -> list[tuple[str, Path]]:
    found = [("sample", sample_tree_dir())]
    real = os.environ.get("PORTER_REAL_TREES")
    if real:
        for folder in sorted(Path(real).iterdir()):
            if (folder / TREE_MARK).is_file():
                found.append((folder.name, folder))
    return found


def parsed_files(spec: str, tree: Path) -> tuple[list[Path], str]:
    """The files porter parses on this tree (one in-process port), and how the port ends."""
    from porter.catalog import load_spec, profile_of
    from porter.plan import make_plan
    from porter.source import SourceTree
    from porter.workspace import Workspace

    source = SourceTree.open(tree)
    try:
        Workspace(source).render(make_plan(load_spec(spec), profile_of(source)))
        outcome = "ported"
    except PorterError as exc:
        outcome = f"refused: {str(exc).splitlines()[0][:70]}"
    return [tree / path for path in source.parsed()], outcome


def child_env() -> dict[str, str]:
    """The environment of the timed processes: they import the same porter as this script
    (they run in a scratch folder, so that `python -m porter` does not pick up the current one)."""
    env = dict(os.environ)
    root = str(Path(porter.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def bench_tree(name: str, tree: Path, spec: str, runs: int, scratch: Path) -> dict:
    files, outcome = parsed_files(spec, tree)
    env = child_env()
    py = sys.executable
    copy = scratch / name
    commands = {
        "python": ([py, "-c", "pass"], (0,)),
        "libcst": ([py, "-c", "import libcst"], (0,)),
        "floor": ([py, "-c", FLOOR, *map(str, files)], (0,)),
        "diff": ([py, "-m", "porter", "diff", spec, "--target", str(tree)], (0, 1, 2)),
        "apply": ([py, "-m", "porter", "apply", spec, "--target", str(copy)], (0, 2)),
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    for key, (argv, ok) in commands.items():  # warm-up: bytecode caches, page cache
        if key == "apply":
            fresh_copy(tree, copy)
        timed(argv, env, ok, scratch)
    for _ in range(runs):
        for key, (argv, ok) in commands.items():
            if key == "apply":
                fresh_copy(tree, copy)
            times[key].append(timed(argv, env, ok, scratch))
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    return {"tree": name, "outcome": outcome, "files": len(files), "lines": lines,
            **{k: statistics.median(v) for k, v in times.items()}}


def fresh_copy(tree: Path, copy: Path) -> None:
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so", ".git"))


def stages(spec: str, tree: Path, runs: int) -> dict[str, float]:
    """Median seconds of each stage of `porter diff`, in-process (imports excluded).

    profile: reads the tree, parses arguments.py; render: parses the other files, rewrites,
    checks each edit's scope, prints, compiles; recheck: porter.port's checks over the
    result in memory (imports, and the port planned and rendered again: it must change
    nothing); a refused port stops at its refusal. Each run goes as porter.port.prepare
    runs it (the cycle collector paused).
    """
    from porter.catalog import load_spec, profile_of
    from porter.checks import check_imports
    from porter.patch import patch
    from porter.plan import make_plan
    from porter.port import check_stable, no_cyclic_gc
    from porter.source import SourceTree
    from porter.workspace import Workspace

    times: dict[str, list[float]] = {}

    def lap(key: str, start: float) -> float:
        now = time.perf_counter()
        times.setdefault(key, []).append(now - start)
        return now

    for _ in range(runs):
        with no_cyclic_gc():
            t = time.perf_counter()
            loaded = load_spec(spec)
            t = lap("spec", t)
            source = SourceTree.open(tree)
            try:
                profile = profile_of(source)
                t = lap("profile", t)
                plan = make_plan(loaded, profile)
                t = lap("plan", t)
                changes = Workspace(source).render(plan)
                t = lap("render", t)
                ported = source.with_changes({change.path: change.after for change in changes})
                check_imports(ported, changes)
                check_stable(loaded, ported)
                t = lap("recheck", t)
            except PorterError:
                times.setdefault("(refused)", []).append(time.perf_counter() - t)
                continue
            patch(changes)
            lap("diff text", t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--spec", default="llama")
    parser.add_argument("--stages", action="store_true", help="also time the stages of `porter diff` in-process")
    args = parser.parse_args()

    print(f"# porter diff/apply wall time, median of {args.runs} runs ({time.strftime('%Y-%m-%d')}, "
          f"{platform.machine()}, {os.cpu_count()} cores; {versions('libcst', 'typer', 'jinja2')})")
    if not os.environ.get("PORTER_REAL_TREES"):
        print("# (set PORTER_REAL_TREES to a folder of real trees to time them too)")
    header = ("tree", "files", "lines", "python", "+libcst", "floor", "diff", "apply", "diff/floor", "apply/floor", "port")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory(prefix="porter-bench-") as scratch:
        for name, tree in trees():
            r = bench_tree(name, tree, args.spec, args.runs, Path(scratch))
            print(f"| {r['tree']} | {r['files']} | {r['lines']} | {r['python']:.3f} | {r['libcst']:.3f} | "
                  f"{r['floor']:.3f} | {r['diff']:.3f} | {r['apply']:.3f} | {r['diff'] / r['floor']:.2f}x | "
                  f"{r['apply'] / r['floor']:.2f}x | {r['outcome']} |", flush=True)
    if args.stages:
        print("\n# stages of `porter diff` in-process, median seconds (imports excluded)")
        for name, tree in trees():
            found = stages(args.spec, tree, args.runs)
            print(f"{name:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in found.items()))


if __name__ == "__main__":
    main()
