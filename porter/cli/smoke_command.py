"""smoke: a short real training run of a ported tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, Verbose, app, fail
from porter.errors import PorterError

Cpu = Annotated[
    bool | None,
    typer.Option("--cpu/--no-cpu", show_default=False,
                 help="Run on the CPU with porter's stand-ins for the tree's fork- and CUDA-only pieces "
                      "(default: when this machine has no CUDA device); --no-cpu: the machine's CUDA device, "
                      "the tree as it is. Example: --cpu"),
]


def say_standins(out: Output, used) -> None:
    """The stand-ins a run used, one line each (they were in the scratch copy's run only)."""
    if used:
        out.say("stand-ins used on the CPU (in the scratch copy's run only; the tree is unchanged):")
        for standin in used:
            out.say(f"  {standin.name}: {standin.what}")


@app.command()
def smoke(
    model: Model,
    target: Target = Path("."),
    steps: Annotated[int, typer.Option(help="Training steps (10 at least to judge the loss). Example: --steps 30")] = 20,
    nproc: Annotated[int, typer.Option(help="Processes (torchrun when > 1). Example: --nproc 2")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size. Example: --nproc 2 --pp 2")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size. Example: --nproc 2 --tp 2")] = 1,
    zero_stage: Annotated[int, typer.Option("--zero-stage", help="DeepSpeed ZeRO stage (2 and 3 with --no-pipe). "
                                            "Example: --nproc 2 --zero-stage 3 --no-pipe")] = 0,
    no_pipe: Annotated[
        bool, typer.Option("--no-pipe", help="Train without DeepSpeed's pipeline engine. Example: --no-pipe")
    ] = False,
    cpu: Cpu = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Folder for corpus, tokenizer, data, train.log and the scratch copy of the tree; kept, "
                          "and reused when run again (default: a temporary folder, removed when the run "
                          "passes). Example: --workdir ./smoke"),
    ] = None,
    json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Train the ported model briefly; fail unless the loss falls.

    Trains it for a few steps on this machine, in a scratch copy of the tree (your tree is
    never written). Makes a small corpus, trains a SentencePiece tokenizer on it, tokenizes it
    with the tree's own dataset builder, and runs the tree's pretrain script with DeepSpeed on
    the CPU. Each step's loss shows as it comes: a progress bar on a terminal, one line per
    step elsewhere. On the CPU, porter stands in for what the tree's fork- or CUDA-only pieces
    lack there (Habana's use_hpu, a DeepSpeed module removed in 0.19, ...) and says which.

    Exit status: 0 the loss fell (mean of the last 5 steps below the first 5), 1 it did not or
    the run failed, 2 error (bad options, a package the environment lacks, a tree that needs
    CUDA on a machine without it).

    Examples:
    porter smoke llama --target ./Megatron-DeepSpeed
    porter smoke llama --target ./Megatron-DeepSpeed --nproc 2 --pp 2 --steps 10
    porter smoke llama --target ./Megatron-DeepSpeed --json > smoke.json
    """
    from porter.catalog import load_spec
    from porter.requirements import require
    from porter.smoke import SmokeConfig, run_smoke
    from porter.treerun.device import runs_on_cpu
    from porter.workfolder import WorkFolder

    out = Output(json=json, quiet=quiet, verbose=verbose)
    config = SmokeConfig(steps=steps, nproc=nproc, pipeline_parallel=pp, tensor_parallel=tp, pipe=not no_pipe,
                         zero_stage=zero_stage)
    folder = None
    try:
        spec = load_spec(model)
        config = config.for_spec(spec)
        config.check()
        require("train", "porter smoke")
        cpu = runs_on_cpu(cpu)
        folder = WorkFolder.open(workdir, "smoke", target)
        out.detail(f"work folder {folder.path}")
        with out.progress(steps, "step") as bar:
            result = run_smoke(
                spec, target, folder.path, config,
                on_loss=lambda step, loss: bar.update(step, f"loss {loss:.4f}"),
                on_line=(lambda line: out.detail("| " + line.rstrip())) if verbose else None,
                cpu=cpu,
            )
    except PorterError as exc:
        if folder is not None:
            out.warn(folder.close(passed=False))
        fail(exc, debug, out)
    say_standins(out, result.standins)
    if result.exit_warning:
        out.warn(f"warning: {result.exit_warning}")
    kept = folder.close(result.passed)
    if json:
        document = {"model": spec.name, "target": str(target), "workdir": str(folder.path),
                    "config": {"steps": steps, "nproc": nproc, "pp": pp, "tp": tp, "pipe": config.pipe,
                               "zero_stage": zero_stage}}
        document.update(result.as_dict())
        out.emit("porter.smoke/1", document)
    elif result.passed:
        if not quiet:
            typer.echo(f"smoke passed: mean loss of the first 5 steps {result.first:.4f} -> last 5 {result.last:.4f} "
                       f"({len(result.losses)} steps, {result.seconds:.1f} s)")
    else:
        if result.error is not None and result.error.where is not None and not verbose:
            typer.echo(_traceback_tail(result.log), err=True)
        typer.echo(f"smoke FAILED: {result.failure}", err=quiet)
        typer.echo(f"  log: {folder.path / 'train.log'}", err=quiet)
        typer.echo(f"  {kept}", err=quiet)
    raise typer.Exit(0 if result.passed else 1)


def _traceback_tail(log: str, lines: int = 20) -> str:
    """The last traceback of a log, its last `lines` lines."""
    start = log.rfind("Traceback (most recent call last):")
    return "\n".join(log[start:].rstrip().splitlines()[-lines:]) if start >= 0 else ""
