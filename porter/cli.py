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
def version() -> None:
    """Print porter's version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
