"""porter's command line (typer): thin — parse, call, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from porter import __version__
from porter.errors import PorterError

app = typer.Typer(
    help="Port new transformer architectures (LLaMA, ...) into your Megatron-DeepSpeed tree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Model = Annotated[str, typer.Argument(help="Spec name (see `porter list`) or path to a .toml diff spec.")]
Target = Annotated[
    Path, typer.Option("--target", "-t", help="Root of the Megatron-DeepSpeed tree (holds megatron/).")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def _fail(exc: PorterError, debug: bool) -> None:
    if debug:
        raise exc
    typer.secho(f"porter: error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(exc.exit_code)


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
        _fail(exc, debug)
    text = patch(port.changes)
    sys.stdout.write(text)
    raise typer.Exit(1 if text else 0)


@app.command()
def apply(model: Model, target: Target = Path("."), debug: Debug = False) -> None:
    """Port MODEL into the tree: rewrite its files and add the new ones, all or nothing.

    Example: porter apply llama --target ./Megatron-DeepSpeed
    """
    from porter.port import prepare
    from porter.writer import journal_entry, tree_lock, write_changes

    try:
        port = prepare(model, target)
        if not port.changes:
            typer.echo(f"nothing to do: {target} already has the {port.spec.name} port")
            return
        with tree_lock(port.root):
            write_changes(port.root, port.changes, journal_entry(port.spec.name, port.spec.path, port.changes))
    except PorterError as exc:
        _fail(exc, debug)
    for change in port.changes:
        added, removed = change.counts()
        typer.echo(f"{'created' if change.created else 'changed'} {change.path} (+{added} -{removed})")


@app.command()
def smoke(
    model: Model,
    target: Target = Path("."),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 20,
    nproc: Annotated[int, typer.Option(help="Processes (torchrun when > 1).")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size.")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size.")] = 1,
    no_pipe: Annotated[bool, typer.Option("--no-pipe", help="Train without DeepSpeed's pipeline engine.")] = False,
    workdir: Annotated[Optional[Path], typer.Option(help="Folder for corpus, tokenizer, data, logs.")] = None,
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
        result = run_smoke(spec, target, folder, config, on_loss=lambda s, l: typer.echo(f"step {s:>4}  loss {l:.4f}"))
    except PorterError as exc:
        _fail(exc, debug)
    if not result.passed:
        typer.echo(result.log[-4000:], err=True)
    verdict = "passed" if result.passed else "FAILED"
    typer.echo(
        f"smoke {verdict}: mean loss of the first 5 steps {result.first:.4f} -> last 5 {result.last:.4f} "
        f"({len(result.losses)} steps, {result.seconds:.1f} s; work folder {folder})"
    )
    raise typer.Exit(0 if result.passed else 1)


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

    from porter.port import prepare
    from porter.resources import sample_tree_dir
    from porter.smoke import SmokeConfig, run_smoke
    from porter.writer import journal_entry, tree_lock, write_changes

    tree = folder / "Megatron-DeepSpeed"
    try:
        if tree.exists():
            shutil.rmtree(tree)
        shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        typer.echo(f"1. copied the bundled sample tree to {tree}")
        port = prepare(model, tree)
        with tree_lock(port.root):
            write_changes(port.root, port.changes, journal_entry(port.spec.name, port.spec.path, port.changes))
        typer.echo(f"2. porter apply {model} --target {tree}")
        for change in port.changes:
            added, removed = change.counts()
            typer.echo(f"   {'created' if change.created else 'changed'} {change.path} (+{added} -{removed})")
        typer.echo(f"3. porter smoke {model} --target {tree} --steps {steps}")
        result = run_smoke(
            port.spec, tree, folder / "smoke", SmokeConfig(steps=steps),
            on_loss=lambda s, l: typer.echo(f"   step {s:>4}  loss {l:.4f}"),
        )
    except PorterError as exc:
        _fail(exc, debug)
    if not result.passed:
        typer.echo(result.log[-4000:], err=True)
    typer.echo(
        f"{'done' if result.passed else 'FAILED'}: the {model} port of the sample tree trains; mean loss "
        f"{result.first:.4f} (first 5 steps) -> {result.last:.4f} (last 5). Review it with "
        f"`git diff --no-index` or `porter diff {model} --target <a fresh copy>`."
    )
    raise typer.Exit(0 if result.passed else 1)


@app.command()
def version() -> None:
    """Print porter's version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
