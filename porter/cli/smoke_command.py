"""smoke: a short real training run of a ported tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, Verbose, app, fail
from porter.errors import PorterError


@app.command()
def smoke(
    model: Model,
    target: Target = Path("."),
    steps: Annotated[int, typer.Option(help="Training steps (10 at least to judge the loss). Example: --steps 30")] = 20,
    nproc: Annotated[int, typer.Option(help="Processes (torchrun when > 1). Example: --nproc 2")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size. Example: --nproc 2 --pp 2")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size. Example: --nproc 2 --tp 2")] = 1,
    no_pipe: Annotated[
        bool, typer.Option("--no-pipe", help="Train without DeepSpeed's pipeline engine. Example: --no-pipe")
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Folder for corpus, tokenizer, data and train.log; reused when run again. Example: --workdir ./smoke"),
    ] = None,
    json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Train the ported model briefly; fail unless the loss falls.

    Trains it for a few steps on this machine. Makes a small corpus, trains a SentencePiece tokenizer on it, tokenizes it with the tree's
    own dataset builder, and runs the tree's pretrain script with DeepSpeed on the CPU. Each
    step's loss shows as it comes: a progress bar on a terminal, one line per step elsewhere.

    Exit status: 0 the loss fell (mean of the last 5 steps below the first 5), 1 it did not or
    the run failed, 2 error.

    Examples:
    porter smoke llama --target ./Megatron-DeepSpeed
    porter smoke llama --target ./Megatron-DeepSpeed --nproc 2 --pp 2 --steps 10
    porter smoke llama --target ./Megatron-DeepSpeed --json > smoke.json
    """
    import tempfile

    from porter.smoke import SmokeConfig, run_smoke
    from porter.spec import load_spec

    out = Output(json=json, quiet=quiet, verbose=verbose)
    config = SmokeConfig(steps=steps, nproc=nproc, pipeline_parallel=pp, tensor_parallel=tp, pipe=not no_pipe)
    try:
        spec = load_spec(model)
        folder = workdir or Path(tempfile.mkdtemp(prefix="porter-smoke-"))
        out.detail(f"work folder {folder}")
        with out.progress(steps, "step") as bar:
            result = run_smoke(
                spec, target, folder, config,
                on_loss=lambda step, loss: bar.update(step, f"loss {loss:.4f}"),
                on_line=(lambda line: out.detail("| " + line.rstrip())) if verbose else None,
            )
    except PorterError as exc:
        fail(exc, debug, out)
    if not result.passed and not verbose:
        typer.echo(result.log[-4000:], err=True)
    if json:
        document = {"model": spec.name, "target": str(target), "workdir": str(folder),
                    "config": {"steps": steps, "nproc": nproc, "pp": pp, "tp": tp, "pipe": not no_pipe}}
        document.update(result.as_dict())
        out.emit("porter.smoke/1", document)
    else:
        verdict = "passed" if result.passed else "FAILED"
        summary = (
            f"smoke {verdict}: mean loss of the first 5 steps {result.first:.4f} -> last 5 {result.last:.4f} "
            f"({len(result.losses)} steps, {result.seconds:.1f} s; log: {folder / 'train.log'})"
        )
        if quiet and result.passed:
            pass
        else:
            typer.echo(summary, err=quiet)
    raise typer.Exit(0 if result.passed else 1)
