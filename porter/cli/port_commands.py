"""diff, apply, demo: planning a port and writing it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Model, Target, app, fail
from porter.errors import PorterError


@app.command()
def diff(model: Model, target: Target = Path("."), debug: Debug = False) -> None:
    """Show, as a unified diff, every change `porter apply` would make. Writes nothing.

    Exit status: 0 nothing to do, 1 changes to make, 2 error.

    Example: porter diff llama --target ./Megatron-DeepSpeed
    """
    from porter.port import prepare
    from porter.workspace import patch

    try:
        port = prepare(model, target)
    except PorterError as exc:
        fail(exc, debug)
    text = patch(port.changes)
    sys.stdout.write(text)
    raise typer.Exit(1 if text else 0)


@app.command()
def apply(model: Model, target: Target = Path("."), debug: Debug = False) -> None:
    """Port MODEL into the tree: rewrite its files and add the new ones, all or nothing.

    Example: porter apply llama --target ./Megatron-DeepSpeed
    """
    from porter.port import apply as apply_port

    try:
        port = apply_port(model, target)
    except PorterError as exc:
        fail(exc, debug)
    if not port.changes:
        typer.echo(f"nothing to do: {target} already has the {port.spec.name} port")
        return
    for change in port.changes:
        added, removed = change.counts()
        typer.echo(f"{'created' if change.created else 'changed'} {change.path} (+{added} -{removed})")


@app.command()
def demo(
    model: Annotated[str, typer.Argument(help="Spec to port.")] = "llama",
    folder: Annotated[Path, typer.Option(help="Where to put the copy of the sample tree.")] = Path("porter-demo"),
    steps: Annotated[int, typer.Option(help="Smoke-training steps.")] = 20,
    debug: Debug = False,
) -> None:
    """Port MODEL into a copy of the bundled sample tree, show the change, train it briefly.

    Example: porter demo
    """
    import shutil

    from porter.port import apply as apply_port
    from porter.resources import sample_tree_dir
    from porter.smoke import SmokeConfig, run_smoke

    tree = folder / "Megatron-DeepSpeed"
    try:
        if tree.exists():
            shutil.rmtree(tree)
        shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        typer.echo(f"1. copied the bundled sample tree to {tree}")
        port = apply_port(model, tree)
        typer.echo(f"2. porter apply {model} --target {tree}")
        for change in port.changes:
            added, removed = change.counts()
            typer.echo(f"   {'created' if change.created else 'changed'} {change.path} (+{added} -{removed})")
        typer.echo(f"3. porter smoke {model} --target {tree} --steps {steps}")
        result = run_smoke(
            port.spec, tree, folder / "smoke", SmokeConfig(steps=steps),
            on_loss=lambda step, loss: typer.echo(f"   step {step:>4}  loss {loss:.4f}"),
        )
    except PorterError as exc:
        fail(exc, debug)
    if not result.passed:
        typer.echo(result.log[-4000:], err=True)
    typer.echo(
        f"{'done' if result.passed else 'FAILED'}: the {model} port of the sample tree trains; mean loss "
        f"{result.first:.4f} (first 5 steps) -> {result.last:.4f} (last 5). Review it with "
        f"`git diff --no-index` or `porter diff {model} --target <a fresh copy>`."
    )
    raise typer.Exit(0 if result.passed else 1)
