"""Running porter's modules inside the target tree, from the parent process.

The tree's `megatron` keeps global state and must come first on sys.path, so everything
that imports it runs in a process of its own: `python -m <porter module> JOB.json` in a
scratch copy of the tree (porter.scratch: the user's tree is never written), with the
copy's folder on PYTHONPATH (smoke's environment otherwise), through
porter.standins.launch on the CPU, under torch.distributed.run when it needs several ranks. This module also says what such a
process passes to the tree: its entry script and extra-args provider, and a command line
its parser accepts (only the options the tree has).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from porter import standins
from porter.cst import match as m
from porter.cst.find import findall
from porter.errors import PorterError
from porter.profile import TreeProfile
from porter.scratch import in_tree_terms, scratch_copy
from porter.smoke import environment, remove_shared_memory, stop_group
from porter.source import SourceTree
from porter.spec import Spec
from porter.treefailure import classify


@dataclass(frozen=True)
class RunShape:
    """The numbers the tree's command line needs."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int
    batch_size: int = 1
    seed: int = 1234


def entry_points(tree: SourceTree, spec: Spec) -> tuple[str, str | None]:
    """(script module, its extra-args provider) from the `pretrain(...)` call of spec.script."""
    import libcst as cst

    if not tree.exists(spec.script):
        raise PorterError(
            f"{spec.script} is missing: the tree is not ported",
            file=spec.script, construct=f"the entry point the {spec.name} port writes",
            fix=f"run `porter apply {spec.name} --target {tree.root}` first",
        )
    module = tree.file(spec.script).module
    provider = None
    for call in findall(module, m.Call(func=m.Name("pretrain"))):
        for arg in call.args:
            if arg.keyword and arg.keyword.value == "extra_args_provider" and isinstance(arg.value, cst.Name):
                provider = arg.value.value
    return spec.script.removesuffix(".py"), provider


def max_positions_allowed(spec: Spec, profile: TreeProfile) -> bool:
    """May porter pass --max-position-embeddings? Not with rotary to a tree that refuses it (Habana's)."""
    return spec["position_embedding.type"] != "rotary" or not profile.arguments.forbids_max_positions


def tree_argv(spec: Spec, profile: TreeProfile, shape: RunShape, tp: int, pp: int, dp: int = 1) -> list[str]:
    """A command line the tree's parser accepts for this model (only the options it has); `dp`
    data-parallel replicas each run the batch."""
    options = profile.arguments.options
    positions = ["--max-position-embeddings", str(shape.seq_length)] if max_positions_allowed(spec, profile) else []
    argv = [
        "--num-layers", str(shape.num_layers), "--hidden-size", str(shape.hidden_size),
        "--num-attention-heads", str(shape.num_attention_heads),
        "--seq-length", str(shape.seq_length), *positions,
        "--micro-batch-size", str(shape.batch_size), "--global-batch-size", str(shape.batch_size * dp),
        "--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp),
        "--seed", str(shape.seed), "--deepspeed",
    ]
    for option, value in (("--distributed-backend", "gloo"), ("--train-iters", "1"), ("--lr", "1e-4"),
                          ("--hidden-dropout", "0.0"), ("--attention-dropout", "0.0")):
        if option in options:
            argv += [option, value]
    # every fused kernel the tree can switch off (CUDA-only: apex, custom extensions)
    argv += sorted(o for o in options if o.startswith("--no-") and o.endswith("-fusion"))
    # Weights only: a converted checkpoint has no optimizer, scheduler or RNG states.
    weights_only = ["--finetune"] if "--finetune" in options else \
        ["--no-load-optim", "--no-load-rng", "--no-load-lr-state"]
    return argv + [flag for flag in weights_only if flag in options]


def tokenizer_argv(spec: Spec, profile: TreeProfile, folder: Path) -> list[str]:
    """`--tokenizer-model <a tiny SentencePiece model>`: some trees build a tokenizer at start-up.

    The model is trained here on porter's own corpus (cached in folder). It only lets the tree
    start: the model's vocabulary is the job's (see harness.TreeSession.start).
    """
    if spec["tokenizer.type"] != "sentencepiece" or "--tokenizer-model" not in profile.arguments.options:
        return []
    from porter.corpus import train_sentencepiece, write_corpus

    model = Path(folder) / "tokenizer" / "spm.model"
    if not model.exists():
        text, _ = write_corpus(model.parent, max_bytes=50_000)
        train_sentencepiece(text, model.with_suffix(""), vocab_size=256)
    return ["--tokenizer-model", str(model)]


def tree_job(spec: Spec, tree: SourceTree, profile: TreeProfile, shape: RunShape, vocab_size: int,
             tp: int = 1, pp: int = 1, argv_extra: list[str] | None = None, dp: int = 1) -> dict:
    """What harness.TreeJob needs to start the tree's megatron for a model (a plain dict)."""
    script, provider = entry_points(tree, spec)
    return {"script_module": script, "extra_args_provider": provider,
            "argv": tree_argv(spec, profile, shape, tp, pp, dp) + list(argv_extra or []), "vocab_size": vocab_size,
            "micro_batch_size": shape.batch_size}


def run_in_tree(tree: Path, module: str, job_path: Path, nproc: int, log: Path, timeout: float,
                what: str, env: dict[str, str] | None = None, cpu: bool = True) -> list[standins.StandIn]:
    """`python -m module job_path` in a scratch copy of the tree (<job folder>/tree): one process,
    or nproc under torch.distributed.run; on the CPU (`cpu`) with porter's stand-ins.

    Returns the stand-ins the run used. Raises a PorterError when it fails: an environment
    one (a missing package, a tree that needs CUDA: porter.treefailure) or the error of the
    module itself, quoting the traceback that the first failing rank wrote to
    <job folder>/out/*.error (the module's own, not the launcher's summary).
    """
    job_path = Path(job_path).resolve()
    folder = job_path.parent
    copy = scratch_copy(Path(tree), folder / "tree")
    report = folder / "standins.txt"
    report.unlink(missing_ok=True)
    run_env = environment(copy, nproc, cpu)
    if cpu:
        run_env.update(standins.environment(standins.offered(copy), report))
    run_env.update(env or {})
    entry = ["-m", "porter.standins.launch", "-m", module] if cpu else ["-m", module]
    if nproc == 1:
        cmd = [sys.executable, *entry, str(job_path)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", run_env["MASTER_PORT"], *entry, str(job_path)]
    for stale in folder.glob("out/*.error"):
        stale.unlink()
    # a process group of its own: a timeout or Ctrl-C stops every rank
    proc = subprocess.Popen(cmd, cwd=copy, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired as exc:
        stop_group(proc)
        raise PorterError(f"{module} ran past {timeout:.0f} s in the tree", construct=" ".join(cmd),
                          fix="see the log; a distributed run may be waiting on a rank that failed") from exc
    except BaseException:
        stop_group(proc)
        raise
    finally:
        remove_shared_memory(run_env)
    Path(log).write_text(" ".join(cmd) + "\n\n" + done.stdout + "\n" + done.stderr)
    if done.returncode != 0:
        raise _failure(done, folder, copy, Path(tree), Path(log), module, what)
    shutil.rmtree(copy, ignore_errors=True)
    return standins.read_used(report)


def _failure(done, folder: Path, copy: Path, tree: Path, log: Path, module: str, what: str) -> PorterError:
    """The PorterError of a failed run in the tree: its first failing rank's own error."""
    errors = sorted(folder.glob("out/*.error"), key=lambda p: p.stat().st_mtime)
    text = errors[0].read_text() if errors else without_launcher_summary(done.stderr + "\n" + done.stdout)
    failure = classify(text, [copy, tree]) or classify(done.stderr + "\n" + done.stdout, [copy, tree])
    if failure is not None and failure.is_environment:
        return failure.error(what, log)
    tail = in_tree_terms(text, copy, tree).strip().splitlines()
    where = f"{failure.where.file}:{failure.where.line}" if failure and failure.where else str(log)
    return PorterError(
        f"{what} failed inside the tree" + (f": {failure.exception}" if failure else ""),
        file=where, construct=f"python -m {module} in a scratch copy of {tree}",
        found="\n    ".join(tail[-12:]),
        fix=f"read the traceback above (the whole log: {log}); the line named is the tree's own code "
            "or the port's: fix it there, then run porter again",
    )


LAUNCHER_FAILED = re.compile(r"torch/distributed/elastic/.*failed \(exitcode|ChildFailedError")


def without_launcher_summary(log: str) -> str:
    """The output of the ranks, without torch.distributed.run's own report of their failure."""
    lines = log.splitlines()
    cut = next((i for i, line in enumerate(lines) if LAUNCHER_FAILED.search(line)), len(lines))
    return "\n".join(lines[:cut])
