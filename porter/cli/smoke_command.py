"""smoke: a short real training run of a ported tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Model, Target, app, fail
from porter.errors import PorterError


@app.command()
def smoke(
    model: Model,
    target: Target = Path("."),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 20,
    nproc: Annotated[int, typer.Option(help="Processes (torchrun when > 1).")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size.")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size.")] = 1,
    no_pipe: Annotated[bool, typer.Option("--no-pipe", help="Train without DeepSpeed's pipeline engine.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="Folder for corpus, tokenizer, data, logs.")] = None,
    debug: Debug = False,
) -> None:
    """Train the ported model for a few steps on this machine; fail unless the loss falls.

    Example: porter smoke llama --target ./Megatron-DeepSpeed --nproc 2 --pp 2
    """
    import tempfile

    from porter.smoke import SmokeConfig, run_smoke
    from porter.spec import load_spec

    try:
        spec = load_spec(model)
        config = SmokeConfig(steps=steps, nproc=nproc, pipeline_parallel=pp, tensor_parallel=tp, pipe=not no_pipe)
        folder = workdir or Path(tempfile.mkdtemp(prefix="porter-smoke-"))
        result = run_smoke(spec, target, folder, config, on_loss=lambda step, loss: typer.echo(f"step {step:>4}  loss {loss:.4f}"))
    except PorterError as exc:
        fail(exc, debug)
    if not result.passed:
        typer.echo(result.log[-4000:], err=True)
    verdict = "passed" if result.passed else "FAILED"
    typer.echo(
        f"smoke {verdict}: mean loss of the first 5 steps {result.first:.4f} -> last 5 {result.last:.4f} "
        f"({len(result.losses)} steps, {result.seconds:.1f} s; work folder {folder})"
    )
    raise typer.Exit(0 if result.passed else 1)
