"""How fast `porter convert` is, and how much memory it takes, against copying the same files.

For each synthetic LLaMA-3-shaped model asked for (tests/helpers/synthetic_llama.py: 0.5 GB,
1.5 GB and 3 GB of bf16, written tensor by tensor in 1 GB safetensors shards with an index),
in one run:
  1. copies the HF folder (`cp -r`) and times it: the floor of reading and writing those bytes;
  2. runs `porter convert hf-to-megatron --tp 2 --pp 2 --json` in a process of its own (the
     llama3 port of the bundled sample tree) and reads its figures: wall time, the process's
     own peak resident memory (`peak_bytes`, VmHWM), bytes read and written;
  3. copies the checkpoint folder (`cp -r`), timed;
  4. runs `porter convert megatron-to-hf --json` back, timed likewise;
  5. checks the round trip bit for bit, tensor by tensor (safetensors itself reads both sides).
Before each timed command the page cache's dirty pages are written out (`sync`), so that one
command's writes are not charged to the next. Ratios: peak memory over the model's size, time
over the copy of the same files just before. The process floor is the peak memory of a Python
that imports what the conversion imports and converts nothing; the fixed cost is the time of
both commands on a tiny model (a few MB: Python's start, imports, reading the tree, the tree's
own argument parser), and "streamed / copy" is (convert s - fixed cost) / copy s.

usage: python bench/convert.py [--sizes 0.5GB,1.5GB,3GB] [--tp 2] [--pp 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from versions import versions  # bench/versions.py (the script's folder is on sys.path)

import porter
from porter.resources import sample_tree_dir

REPO = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "0.5GB", "1.5GB", "3GB", "8B")  # tests/helpers/synthetic_llama.py's SHAPES


def helper(code: str) -> str:
    """Run Python code with tests/helpers importable, in a process of its own: this one stays small
    (a process started by a large one counts that one's memory in its own ru_maxrss)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{code} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def human(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(porter.__file__).resolve().parent.parent),
                                                    env.get("PYTHONPATH")) if p)
    return env


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, the largest peak resident memory of the command's processes (wait4), stdout)."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=environment(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}\n{err.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, text


def copy_seconds(source: Path, dest: Path) -> float:
    seconds, _, _ = timed(["cp", "-r", str(source), str(dest)], dest.parent)
    shutil.rmtree(dest)
    return seconds


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def ported_tree(folder: Path) -> Path:
    tree = folder / "Megatron-DeepSpeed"
    shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    done = subprocess.run([sys.executable, "-m", "porter", "apply", "llama3", "--target", str(tree)],
                          env=environment(), cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"porter apply llama3 failed:\n{done.stdout}{done.stderr}")
    return tree


def floor_bytes() -> int:
    return int(helper("import torch, transformers, porter.convert.run, porter.cli; "
                      "from porter.convert.stream import peak_bytes; "
                      "transformers.LlamaConfig; print(peak_bytes())").strip())


def convert(direction: str, args: list[str], folder: Path) -> dict:
    wall, largest, out = timed([sys.executable, "-m", "porter", "convert", direction, *args, "--json"], folder)
    return {**json.loads(out), "wall": wall, "largest": largest}


def bench_size(name: str, tree: Path, work: Path, tp: int, pp: int) -> list[dict]:
    hf, ckpt, back = work / f"hf-{name}", work / f"ckpt-{name}", work / f"back-{name}"
    helper(f"from tests.helpers.synthetic_llama import write_model; write_model({str(hf)!r}, {name!r})")
    model_bytes = size_of(hf)
    rows = []
    copy = copy_seconds(hf, work / "copy")
    there = convert("hf-to-megatron", ["--hf", str(hf), "--out", str(ckpt), "--target", str(tree), "--model", "llama3",
                                       "--tp", str(tp), "--pp", str(pp)], work)
    rows.append({"model": name, "bytes": model_bytes, "direction": f"hf-to-megatron --tp {tp} --pp {pp}",
                 "copy": copy, **there})
    copy = copy_seconds(ckpt, work / "copy")
    again = convert("megatron-to-hf", ["--load", str(ckpt), "--out", str(back), "--target", str(tree),
                                       "--model", "llama3"], work)
    rows.append({"model": name, "bytes": model_bytes, "direction": "megatron-to-hf", "copy": copy, **again})
    differ = helper(f"from tests.helpers.synthetic_llama import same_bits; print(same_bits({str(hf)!r}, {str(back)!r}))")
    for row in rows:
        row["bit_exact"] = differ.strip() == "[]"
    shutil.rmtree(hf)
    shutil.rmtree(ckpt)
    shutil.rmtree(back)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5GB,1.5GB,3GB", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--pp", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where the models go (default: a temporary folder)")
    cli = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="porter-bench-convert-", dir=cli.workdir))
    try:
        tree = ported_tree(work)
        floor = floor_bytes()
        load = os.getloadavg()
        fixed = {row["direction"]: row["wall"] for row in bench_size("tiny", tree, work, cli.tp, cli.pp)}
        rows = [row for name in cli.sizes.split(",") for row in bench_size(name, tree, work, cli.tp, cli.pp)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# porter convert vs cp -r of the same files, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} at the start; "
          f"{versions('torch', 'safetensors', 'transformers')}")
    print(f"# process floor (Python with torch, transformers and porter imported): {human(floor)}; fixed cost "
          + ", ".join(f"{d}: {s:.1f} s" for d, s in fixed.items()) + "\n")
    print("| model | direction | copy s | convert s | convert / copy | streamed / copy | peak memory | peak / model | "
          "largest process | read | written | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        streamed = (r["wall"] - fixed[r["direction"]]) / r["copy"]
        print(f"| {r['model']} ({human(r['bytes'])}) | {r['direction']} | {r['copy']:.2f} | {r['wall']:.2f} | "
              f"{r['wall'] / r['copy']:.2f}x | {streamed:.2f}x | {human(r['peak_bytes'])} | "
              f"{r['peak_bytes'] / r['bytes']:.2f}x | {human(r['largest'])} | {human(r['bytes_read'])} | "
              f"{human(r['bytes_written'])} | {'yes' if r['bit_exact'] else 'NO'} |")
    print("(convert s: the whole command, Python's start and the tree's own argument parser included; "
          "in-process seconds: " + ", ".join(f"{r['seconds']:.2f}" for r in rows) + ". peak memory: the porter "
          "process's own, as --json reports it (VmHWM); largest process: the largest peak of the command's "
          "processes (wait4's ru_maxrss), the tree's argument parser included)")


if __name__ == "__main__":
    main()
