"""What every command shares: the app, common options, and how errors are printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def fail(exc: PorterError, debug: bool) -> None:
    """Print a PorterError (no traceback unless --debug) and exit with its code."""
    if debug:
        raise exc
    typer.secho(f"porter: error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(exc.exit_code)


@app.command()
def version() -> None:
    """Print porter's version."""
    typer.echo(__version__)
