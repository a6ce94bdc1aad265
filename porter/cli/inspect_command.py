"""inspect: what porter reads in a tree and what it would do there, with reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Output, Target, app, fail
from porter.errors import PorterError


@app.command()
def inspect(
    model: Annotated[
        str,
        typer.Argument(help="Spec name (see `porter list`) or path to a .toml diff spec. Example: llama", metavar="MODEL"),
    ] = "llama",
    target: Target = Path("."),
    json: Json = False,
    debug: Debug = False,
) -> None:
    """What porter reads in the tree, and each change it plans with its reason.

    Prints the tree's profile and the plan: every planned change with its reason, and what
    is reused. Reads the tree and plans; renders and writes nothing.

    Exit status: 0 a plan, 2 porter refuses the tree (the reason is printed after the profile).

    Examples:
    porter inspect llama --target ./Megatron-DeepSpeed
    porter inspect llama --target ./Megatron-DeepSpeed --json > inspect.json
    """
    from porter.inspection import SCHEMA_VERSION, inspect_data, render_text

    out = Output(json=json)
    try:
        data = inspect_data(model, target)
    except PorterError as exc:
        fail(exc, debug, out)
    if json:
        out.emit(f"porter.inspect/{SCHEMA_VERSION}", {k: v for k, v in data.items() if k != "schema"})
    else:
        typer.echo(render_text(data), nl=False)
    raise typer.Exit(0 if data["error"] is None else 2)
