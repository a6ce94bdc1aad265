"""A short, real training run of a ported model: does its loss fall?

It makes everything the run needs in a work folder — a corpus (porter.corpus), a
SentencePiece model trained on it, the token dataset written by the tree's own
`MMapIndexedDatasetBuilder`, a DeepSpeed config — then runs the tree's
`pretrain_<name>.py` with a tiny config derived from the spec, on the local device
(CPU here: gloo, DS_ACCELERATOR=cpu), in one process or two (torchrun), and reads the
losses back from the tree's own log lines.

The run happens in a scratch copy of the tree (porter.scratch): the user's tree is never
written. On the CPU, the stand-ins of porter.standins supply what the tree's fork- or
CUDA-only pieces lack there; a run that stops for a package the environment lacks, or
because the tree needs CUDA, is refused with that reason (porter.treefailure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty, Queue

import porter
from porter import standins
from porter.catalog import profile_of
from porter.corpus import train_sentencepiece, train_tokenizer_json, write_corpus
from porter.errors import PorterError
from porter.naming import spec_in_tree
from porter.profile.features import SENTENCEPIECE_CHOICE
from porter.scratch import in_tree_terms, scratch_copy
from porter.source import SourceTree
from porter.spec import Spec
from porter.standins.runtime import ENV_NAMES
from porter.treefailure import TreeFailure, classify

# "iteration 3/20 | ... | lm loss: 6.123456E+00 |", also upstream's right-aligned form; nan/inf parse too.
LOSS_LINE = re.compile(r"iteration\s+(\d+)\s*/\s*\d+.*?lm loss:\s*([-+0-9.eEnaNif]+)")


@dataclass
class SmokeConfig:
    steps: int = 20
    nproc: int = 1
    pipeline_parallel: int = 1
    tensor_parallel: int = 1
    pipe: bool = True  # DeepSpeed's pipeline engine; False: --no-pipeline-parallel
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    seq_length: int = 64
    micro_batch_size: int = 4
    global_batch_size: int = 8
    lr: float = 1e-3
    vocab_size: int = 1000
    seed: int = 1234
    zero_stage: int = 0  # DeepSpeed ZeRO; 2 and 3 need the plain engine (pipe=False)
    extra_args: list[str] = field(default_factory=list)

    def check(self, judge_loss: bool = True) -> None:
        """Refuse options a run cannot honour, before anything runs (PorterError, exit status 2).

        `judge_loss`: the run must also be long enough to judge the loss (porter smoke); a run
        made for its checkpoint may be shorter.
        """
        parallel = self.tensor_parallel * self.pipeline_parallel
        problems = [
            (judge_loss and self.steps < 10, f"--steps {self.steps}",
             "smoke compares the mean loss of the first 5 steps with the last 5: 10 steps at least",
             "--steps 10 (or more)"),
            (self.nproc < 1 or self.tensor_parallel < 1 or self.pipeline_parallel < 1,
             f"--nproc {self.nproc} --tp {self.tensor_parallel} --pp {self.pipeline_parallel}",
             "sizes of 1 or more", "--nproc 1 --tp 1 --pp 1"),
            (self.zero_stage not in (0, 1, 2, 3), f"--zero-stage {self.zero_stage}", "ZeRO stage 0, 1, 2 or 3",
             "--zero-stage 1"),
            (self.zero_stage >= 2 and self.pipe, f"--zero-stage {self.zero_stage} with the pipeline engine",
             "DeepSpeed's pipeline engine takes ZeRO stages 0 and 1 only", "--no-pipe (the plain engine)"),
        ]
        problems += [
            (parallel >= 1 and self.nproc % parallel != 0, f"--nproc {self.nproc} --tp {self.tensor_parallel} --pp "
             f"{self.pipeline_parallel}", "--nproc a multiple of --tp x --pp (the rest is data parallel)",
             f"--nproc {parallel}"),
            (self.pipeline_parallel >= 1 and self.num_layers % self.pipeline_parallel != 0,
             f"--pp {self.pipeline_parallel}", f"a pipeline size that divides the {self.num_layers} layers of the "
             "tiny model", "--pp 1 or --pp 2"),
            (self.tensor_parallel >= 1 and self.num_attention_heads % self.tensor_parallel != 0,
             f"--tp {self.tensor_parallel}", f"a tensor-parallel size that divides the {self.num_attention_heads} "
             "attention heads of the tiny model", "--tp 1, 2 or 4"),
        ]
        if parallel >= 1 and self.nproc >= parallel and self.nproc % parallel == 0:
            data_parallel = self.nproc // parallel
            problems.append((self.global_batch_size % (self.micro_batch_size * data_parallel) != 0,
                             f"--nproc {self.nproc} (data parallel {data_parallel})",
                             f"a data-parallel size that divides the global batch of {self.global_batch_size} "
                             f"sequences in micro-batches of {self.micro_batch_size}", "--nproc 1 or 2"))
        for bad, found, wanted, fix in problems:
            if bad:
                raise PorterError(f"porter smoke cannot run with {found}", construct=wanted, found=found,
                                  fix=f"pass {fix}")

    def for_spec(self, spec: Spec) -> SmokeConfig:
        """The config for this spec's model: a model with a difference the pipeline model cannot
        carry (a mixture of experts) trains on the plain engine, as its entry point does; a
        pipeline size above 1 is refused for it, naming the difference."""
        plain_only = [d.name for d in spec.wanted() if not d.pipeline_engine]
        if not plain_only:
            return self
        if self.pipeline_parallel > 1:
            raise PorterError(f"porter smoke cannot run {spec.name} with --pp {self.pipeline_parallel}",
                              construct="a model the pipeline engine can carry",
                              found=f"{', '.join(plain_only)}: the model trains on DeepSpeed's plain engine only",
                              fix="pass --pp 1 (data or expert parallel processes with --nproc)")
        return replace(self, pipe=False)


@dataclass
class SmokeResult:
    losses: list[float]
    command: list[str]
    log: str
    seconds: float
    returncode: int
    standins: list[standins.StandIn] = field(default_factory=list)  # the stand-ins the run used
    error: TreeFailure | None = None  # why the run stopped, when it did

    @property
    def first(self) -> float:
        return sum(self.losses[:5]) / max(1, len(self.losses[:5]))

    @property
    def last(self) -> float:
        return sum(self.losses[-5:]) / max(1, len(self.losses[-5:]))

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and len(self.losses) >= 10 and self.last < self.first

    @property
    def failure(self) -> str | None:
        """What failed, in one line (None when the run passed)."""
        if self.passed:
            return None
        if self.returncode != 0:
            what = self.error.summary if self.error else "no traceback in its log"
            return f"the training run stopped (exit status {self.returncode}) after {len(self.losses)} steps: {what}"
        if len(self.losses) < 10:
            return f"the training run logged {len(self.losses)} losses; 10 are needed to judge the loss"
        return (f"the loss did not fall: mean of the first 5 steps {self.first:.4f}, of the last 5 "
                f"{self.last:.4f}")

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failure": self.failure,
            "standins": [s.name for s in self.standins],
            "losses": self.losses,
            "first5_mean": self.first,
            "last5_mean": self.last,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 2),
            "command": self.command,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_BUILD_DATASET = textwrap.dedent(
    """
    from porter.standins.runtime import install_from_environment
    install_from_environment()
    import argparse, json, sys
    import numpy as np
    import torch
    from megatron.data import indexed_dataset

    from megatron.tokenizer.tokenizer import build_tokenizer

    class Args(argparse.Namespace):
        # what build_tokenizer reads of the training arguments; any other one is unset
        def __getattr__(self, name):
            return None

    jsonl, model, prefix, tokenizer_type, add_bos = sys.argv[1:6]
    # the port's own tokenizer, as the tree's preprocessing builds it (BOS as the spec says)
    tokenizer = build_tokenizer(Args(tokenizer_type=tokenizer_type, tokenizer_model=model, add_bos_token=add_bos == "1",
                                     rank=0, make_vocab_size_divisible_by=128, tensor_model_parallel_size=1,
                                     vocab_extra_ids=0))
    builder = indexed_dataset.MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    with open(jsonl) as handle:
        for line in handle:
            ids = list(tokenizer.tokenize(json.loads(line)["text"])) + [tokenizer.eod]
            builder.add_item(torch.tensor(ids, dtype=torch.int32))
            builder.end_document()
    builder.finalize(prefix + ".idx")
    """
)


def environment(tree: Path, nproc: int = 1, cpu: bool = True) -> dict[str, str]:
    """The environment of a run of the tree: its folder on PYTHONPATH; DeepSpeed on the CPU
    (CUDA hidden) unless `cpu` is False (then the machine's CUDA devices, as the tree finds them)."""
    env = dict(os.environ)
    path = [str(tree), *_porter_path()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    cache = env.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")
    env.update(
        # the tree's own build steps (e.g. `python3 -m pybind11` in megatron/data/Makefile) must find this Python
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(path),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))),
        PYTHONUNBUFFERED="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        # DeepSpeed's CPU accelerator counts one device per NUMA node unless LOCAL_SIZE says
        # how many there are; trees check local rank == rank % device count.
        LOCAL_SIZE=str(nproc),
        # DeepSpeed JIT-builds a shared-memory op on CPU (~20 s); one- and two-process runs, and
        # runs from different Python environments (their include paths differ), invalidate each
        # other's build in a shared cache, so each has its own.
        TORCH_EXTENSIONS_DIR=str(Path(cache) / f"porter-{_environment_tag()}-np{nproc}"),
    )
    if cpu:
        env.update(DS_ACCELERATOR=env.get("DS_ACCELERATOR", "cpu"), CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    if nproc == 1:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    return env


def _environment_tag() -> str:
    """A short name for this Python environment (its prefix)."""
    import hashlib

    return hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]


def _porter_path() -> list[str]:
    """Where porter's package lies, when the run's Python would not find it by itself (a checkout)."""
    root = Path(porter.__file__).resolve().parent.parent
    return [] if root.name in ("site-packages", "dist-packages") else [str(root)]


def _lines(proc: subprocess.Popen, deadline: float | None):
    """The lines of proc's output as they come; None once the deadline passes (even while it is silent)."""
    assert proc.stdout is not None
    if deadline is None:
        yield from proc.stdout
        return
    queue: Queue = Queue()

    def read() -> None:
        for line in proc.stdout:
            queue.put(line)
        queue.put("")  # end of output

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except Empty:
            yield None
            return
        if line == "":
            return
        yield line


def stop_group(proc: subprocess.Popen) -> None:
    """Kill a run started in a session of its own, with every process it started (torchrun's ranks,
    which torchrun starts in sessions of their own: found by parent, not by group)."""
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _descendants(pid: int) -> list[int]:
    """The processes below pid, from /proc (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def remove_shared_memory(env: dict[str, str]) -> None:
    """Delete the shared-memory buffers DeepSpeed's CPU backend left behind for a finished run.

    Its shm allreduce creates one buffer per rank in /dev/shm, named after the user, MASTER_ADDR
    and MASTER_PORT, and never unlinks it (about 66 MB each): without this, a test session of
    many runs fills the machine's memory.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not hasattr(os, "getuid"):
        return
    for path in shm.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_{env['MASTER_ADDR']}_{env['MASTER_PORT']}_*"):
        path.unlink(missing_ok=True)


@dataclass
class Run:
    """One training run: the losses rank 0 logged (by iteration), its output, how it ended."""

    losses: dict[int, float]
    command: list[str]
    log: str
    seconds: float
    returncode: int


def launch(
    tree: Path,
    script: str,
    args: list[str],
    nproc: int = 1,
    env: dict[str, str] | None = None,
    on_loss: Callable[[int, float], None] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cpu: bool = True,
) -> Run:
    """Run `script` of `tree` on CPU in `nproc` processes (torchrun when > 1), streaming its log:
    `on_loss(step, loss)` hears each step rank 0 logs, `on_line` each line of output."""
    run_env = environment(Path(tree), nproc, cpu)
    run_env.update(env or {})
    # with stand-ins, the script runs under porter.standins.launch, which installs them first
    entry = ["-m", "porter.standins.launch"] if run_env.get(ENV_NAMES) else []
    if nproc == 1:
        cmd = [sys.executable, *entry, script, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", run_env["MASTER_PORT"], *entry, script, *args]
    start = time.monotonic()
    losses: dict[int, float] = {}
    lines: list[str] = []
    # The run is a process group of its own, so that a timeout or Ctrl-C stops every rank of it.
    proc = subprocess.Popen(cmd, cwd=tree, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = None if timeout is None else start + timeout
        for line in _lines(proc, deadline):
            if line is None:  # the deadline passed
                stop_group(proc)
                lines.append(f"porter: killed after {timeout} s\n")
                break
            lines.append(line)
            if on_line:
                on_line(line)
            match = LOSS_LINE.search(line)
            if match:
                step, loss = int(match.group(1)), float(match.group(2))
                if step not in losses:
                    losses[step] = loss
                    if on_loss:
                        on_loss(step, loss)
        returncode = proc.wait()
    except BaseException:
        stop_group(proc)
        raise
    finally:  # a run cut short leaves no buffers either: each holds tens of MB of memory
        remove_shared_memory(run_env)
    return Run(losses=losses, command=cmd, log="".join(lines), seconds=time.monotonic() - start, returncode=returncode)


def prepare_data(tree: Path, workdir: Path, vocab_size: int, env: dict[str, str] | None = None,
                 user_tree: Path | None = None, kind: str = "sentencepiece",
                 tokenizer_type: str = SENTENCEPIECE_CHOICE, add_bos: bool = False) -> tuple[Path, Path]:
    """Corpus, tokenizer and token dataset in workdir; returns (tokenizer file, data prefix).

    The tokenizer is trained here for the spec's kind (a SentencePiece model, or an HF
    tokenizer.json); the dataset is tokenized by the port's own tokenizer (`tokenizer_type`,
    built by the tree's build_tokenizer, with a BOS as the spec says), as the tree's
    preprocessing would. `tree` is where the tree's code runs (its scratch copy); `user_tree`
    the tree it copies, for messages; `env` adds to the run's environment (the stand-ins').
    """
    text, jsonl = write_corpus(workdir / "corpus")
    if kind == "hf":
        model = workdir / "tokenizer.json"
        if not model.exists():
            train_tokenizer_json(text, model, vocab_size)
    else:
        model = workdir / "tokenizer.model"
        if not model.exists():
            train_sentencepiece(text, workdir / "tokenizer", vocab_size)
    prefix = workdir / "data" / f"{kind}_{tokenizer_type}_{'bos' if add_bos else 'plain'}_text_document"
    if not prefix.with_suffix(".idx").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_DATASET, str(jsonl), str(model), str(prefix), tokenizer_type,
             "1" if add_bos else "0"],
            cwd=tree, env={**environment(tree), **(env or {})}, capture_output=True, text=True,
        )
        if done.returncode != 0:
            failure = classify(done.stderr, [Path(tree), Path(user_tree or tree)])
            if failure is not None and failure.is_environment:
                raise failure.error("building the token dataset with the tree's megatron.data.indexed_dataset")
            raise PorterError(
                "cannot build the token dataset with the tree's megatron.data.indexed_dataset",
                file="megatron/data/indexed_dataset.py",
                construct="MMapIndexedDatasetBuilder(out_file, dtype=...) with add_item / end_document / finalize",
                found=failure.summary if failure else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1],
                fix="check that the tree imports on this machine (python -c 'import megatron' in the tree)",
            )
    return model, prefix


def deepspeed_config(workdir: Path, config: SmokeConfig) -> Path:
    path = workdir / "ds_config.json"
    data_parallel = config.nproc // (config.pipeline_parallel * config.tensor_parallel)
    path.write_text(
        json.dumps(
            {
                "train_batch_size": config.global_batch_size,
                "train_micro_batch_size_per_gpu": config.micro_batch_size,
                "gradient_accumulation_steps": config.global_batch_size // (config.micro_batch_size * data_parallel),
                "zero_optimization": {"stage": config.zero_stage},
                "fp16": {"enabled": False},
                "bf16": {"enabled": False},
                "steps_per_print": 10**9,
                "wall_clock_breakdown": False,
            },
            indent=1,
        )
    )
    return path


def tokenizer_choice(spec: Spec, tree: SourceTree) -> str:
    """The --tokenizer-type the port's entry point sets (porter's choice, or the tree's it reuses)."""
    from porter.plan import make_plan

    return make_plan(spec, profile_of(tree)).defaults.get("tokenizer_type", SENTENCEPIECE_CHOICE)


def training_arguments(spec: Spec, tree: SourceTree, workdir: Path, config: SmokeConfig, model: Path, prefix: Path,
                       cpu: bool = True, tokenizer_type: str | None = None) -> list[str]:
    """The tiny-config command line of a smoke run of the ported script."""
    profile = profile_of(tree)
    options = profile.arguments.options
    args = [
        "--num-layers", str(config.num_layers),
        "--hidden-size", str(config.hidden_size),
        "--num-attention-heads", str(config.num_attention_heads),
        "--seq-length", str(config.seq_length),
        "--micro-batch-size", str(config.micro_batch_size),
        "--global-batch-size", str(config.global_batch_size),
        "--train-iters", str(config.steps),
        "--lr", str(config.lr),
        "--min-lr", str(config.lr / 10),
        "--lr-decay-style", "constant",
        "--log-interval", "1",
        "--eval-iters", "0",
        "--eval-interval", str(10**6),
        "--data-path", str(prefix),
        "--split", "100,0,0",
        "--tokenizer-type", tokenizer_type or tokenizer_choice(spec, tree),
        "--tokenizer-model", str(model),
        "--seed", str(config.seed),
        "--tensor-model-parallel-size", str(config.tensor_parallel),
        "--pipeline-model-parallel-size", str(config.pipeline_parallel),
        "--deepspeed",
        "--deepspeed_config", str(deepspeed_config(workdir, config)),
        "--zero-stage", str(config.zero_stage),
    ]
    # Rotary needs no position table: some trees forbid the size then, some require it anyway.
    if spec["position_embedding.type"] != "rotary" or not profile.arguments.forbids_max_positions:
        args += ["--max-position-embeddings", str(config.seq_length)]
    if "--distributed-backend" in options:
        args += ["--distributed-backend", "gloo" if cpu else "nccl"]
    # Every fused kernel the tree can turn off is CUDA-only (apex, jit fusers, ...).
    args += sorted(o for o in options if o.startswith("--no-") and o.endswith("-fusion"))
    if not config.pipe:
        args.append("--no-pipeline-parallel")
    args += smoke_numbers(spec, tree, config)
    args += config.extra_args
    return args


def smoke_numbers(spec: Spec, tree: SourceTree, config: SmokeConfig) -> list[str]:
    """The spec's numbers at the smoke size, as verify's tiny model takes them: key/value heads
    that divide the smoke run's heads (Mistral's 8 do not divide 4), a sliding window shorter
    than its sequence, an MLP width for its hidden size. The entry point's defaults are a real
    model's."""
    from porter.convert import Port
    from porter.verify.reference import TinyConfig, tiny_spec

    tiny = TinyConfig(num_layers=config.num_layers, hidden_size=config.hidden_size,
                      num_attention_heads=config.num_attention_heads, vocab_size=config.vocab_size,
                      seq_length=config.seq_length, batch_size=config.micro_batch_size, seed=config.seed)
    return Port(spec, tree.root).run_argv(tiny_spec(spec, tiny))


def runs_on_cpu(cpu: bool | None) -> bool:
    """--cpu / --no-cpu, or (None) on the CPU when this machine has no CUDA device."""
    if cpu is True:
        return True
    import torch

    if cpu is False and not torch.cuda.is_available():
        raise PorterError("--no-cpu runs the tree on this machine's CUDA device, and it has none",
                          construct="a CUDA device torch can see", found="torch.cuda.is_available() is False",
                          fix="leave out --no-cpu (the run then uses the CPU, with porter's stand-ins)")
    return cpu is None and not torch.cuda.is_available()


def run_smoke(
    spec: Spec,
    target: Path,
    workdir: Path,
    config: SmokeConfig,
    on_loss: Callable[[int, float], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    cpu: bool | None = True,
) -> SmokeResult:
    """Train the ported model in a scratch copy of the tree (workdir/tree); `on_loss(step, loss)`
    hears each step, `on_line` each log line. `cpu`: with the stand-ins (None: when no CUDA).

    Raises PorterError when the run cannot start for a reason outside the port: a package the
    environment lacks, a tree that needs CUDA (porter.treefailure).
    """
    config.check(judge_loss=False)
    tree = SourceTree.open(Path(target).resolve())
    spec = spec_in_tree(spec, tree)
    workdir = Path(workdir).resolve()  # the run's cwd is the tree: every path it gets is absolute
    if not tree.exists(spec.script):
        raise PorterError(
            f"{spec.script} is missing: the tree is not ported",
            file=spec.script,
            fix=f"run `porter apply {spec.name} --target {target}` first",
        )
    if spec["tokenizer.type"] not in ("sentencepiece", "hf"):
        raise PorterError(
            f"smoke trains its own tokenizer, a SentencePiece model or a tokenizer.json; spec {spec.name} "
            f"uses {spec['tokenizer.type']}",
            file=spec.path, construct="tokenizer.type = 'sentencepiece' or 'hf'",
            fix="smoke a spec with one of those tokenizers",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    copy = scratch_copy(tree.root, workdir / "tree")
    report = workdir / "standins.txt"
    report.unlink(missing_ok=True)
    cpu = runs_on_cpu(cpu)
    env = standins.environment(standins.offered(copy), report) if cpu else {}
    tokenizer_type = tokenizer_choice(spec, tree)
    model, prefix = prepare_data(copy, workdir, config.vocab_size, env=env, user_tree=tree.root,
                                 kind=spec["tokenizer.type"], tokenizer_type=tokenizer_type,
                                 add_bos=spec["tokenizer.add_bos"])
    args = training_arguments(spec, tree, workdir, config, model, prefix, cpu=cpu, tokenizer_type=tokenizer_type)
    run = launch(copy, spec.script, args, nproc=config.nproc, env=env, on_loss=on_loss, on_line=on_line, cpu=cpu)
    log = in_tree_terms(run.log, copy, tree.root)
    (workdir / "train.log").write_text(" ".join(run.command) + "\n\n" + run.log)
    error = classify(run.log, [copy, tree.root]) if run.returncode != 0 else None
    if error is not None and error.is_environment:
        raise error.error("the training run", workdir / "train.log")
    result = SmokeResult(losses=[run.losses[k] for k in sorted(run.losses)], command=run.command, log=log,
                         seconds=run.seconds, returncode=run.returncode, standins=standins.read_used(report),
                         error=error)
    if result.passed:
        shutil.rmtree(copy, ignore_errors=True)  # the data stays for the next run; the copy is made afresh
    return result
