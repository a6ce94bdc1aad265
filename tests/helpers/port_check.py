"""Check ported trees for real, many at a time: the test side of tests/helpers/model_check.py.

`check_trees(jobs)` runs the model_check worker over the jobs in a few processes (one per
core by default; each process checks its share of trees one after the other) and returns
each job's result. A worker that dies leaves its remaining jobs to be retried one per
process, so a tree that crashes Python is reported as broken, not lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from porter.corpus import train_sentencepiece, write_corpus
from porter.differences.ffn_rule import ffn_hidden_size
from porter.spec import Spec
from porter.treerun.process import environment

WORKER = Path(__file__).with_name("model_check.py")
HIDDEN = 64  # model_check's hidden size


@cache
def tokenizer_model() -> str:
    """A small SentencePiece model, trained once per test session."""
    folder = Path(tempfile.mkdtemp(prefix="porter-check-tok-"))
    text, _ = write_corpus(folder / "corpus")
    train_sentencepiece(text, folder / "tokenizer", 1000)
    return str(folder / "tokenizer.model")


def features(spec: Spec) -> dict[str, bool]:
    return {
        "swiglu": spec["activation.type"] == "swiglu",
        "rotary": spec["position_embedding.type"] == "rotary",
        "rmsnorm": spec["norm.type"] == "rmsnorm",
        "final_norm": spec["norm.final_norm"],
        "tied": spec["embeddings.tied"],
        "bias": spec["linear.bias"],
    }


def job(job_id: str, spec: Spec, tree: Path, renames: dict | None = None, gpt_only: bool = False) -> dict:
    """A model_check job; `renames`: attributes a mutated tree renamed; `gpt_only`: check
    only that the tree builds and runs GPT (for an un-ported tree)."""
    return {
        "renames": renames or {},
        "gpt_only": gpt_only,
        "id": job_id,
        "tree": str(tree),
        "name": spec.name,
        "script": spec.script,
        "model_class": spec.model_class,
        "features": features(spec),
        "ffn_hidden_size": ffn_hidden_size(spec, HIDDEN),
        "rope_theta": spec["position_embedding.rope_theta"],
        "norm_eps": spec["norm.eps"],
        "tokenizer_model": tokenizer_model(),
    }


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # DeepSpeed JIT-builds a CPU communication op: a cache beside porter's own runs' (this
    # environment's build command differs from theirs, and one cache would rebuild at each switch)
    env["TORCH_EXTENSIONS_DIR"] = environment(Path.cwd())["TORCH_EXTENSIONS_DIR"] + "-model-check"
    return env


def _launch(jobs: list[dict], folder: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    jobs_file = folder / f"{name}.json"
    results = folder / f"{name}.jsonl"
    log = folder / f"{name}.log"
    jobs_file.write_text(json.dumps(jobs))
    handle = open(log, "w")
    proc = subprocess.Popen([sys.executable, str(WORKER), str(jobs_file), str(results)],
                            env=_environment(), stdout=handle, stderr=subprocess.STDOUT)
    proc.log_handle = handle
    return proc, results, log


def _read_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            result = json.loads(line)
            out[result["id"]] = result
    return out


def check_trees(jobs: list[dict], processes: int | None = None, timeout: float = 3600) -> dict[str, dict]:
    """job id -> {"ok", "problems", "seconds"} for every job."""
    if not jobs:
        return {}
    processes = max(1, min(processes or os.cpu_count() or 1, len(jobs)))
    folder = Path(tempfile.mkdtemp(prefix="porter-checks-"))
    shares = [jobs[i::processes] for i in range(processes)]
    running = [_launch(share, folder, f"worker{i}") for i, share in enumerate(shares) if share]
    results: dict[str, dict] = {}
    for proc, path, _log in running:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.log_handle.close()
        results.update(_read_results(path))
    for job_ in jobs:  # retried alone: a crash is then this job's
        if job_["id"] in results:
            continue
        proc, path, log = _launch([job_], folder, f"retry-{len(results)}")
        try:
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.log_handle.close()
        found = _read_results(path).get(job_["id"])
        results[job_["id"]] = found or {
            "id": job_["id"], "ok": False, "seconds": None,
            "problems": [f"the worker died (exit {proc.returncode}):\n{log.read_text()[-3000:]}"],
        }
    shutil.rmtree(folder, ignore_errors=True)
    return results
