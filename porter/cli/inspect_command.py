"""inspect: what porter reads in a tree and what it would do there, with reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Target, app, fail
from porter.errors import PorterError


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Spec name (see `porter list`) or path to a .toml diff spec.")] = "llama",
    target: Target = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (schema version in 'schema').")] = False,
    debug: Debug = False,
) -> None:
    """Print the tree's profile and the plan: every planned change with its reason, and what is reused.

    Reads the tree and plans; renders and writes nothing. Exit status: 0 a plan, 2 porter
    refuses the tree (the reason is printed after the profile).

    Example: porter inspect llama --target ./Megatron-DeepSpeed
    """
    from porter.inspection import inspect_data, render_text

    try:
        data = inspect_data(model, target)
    except PorterError as exc:
        fail(exc, debug)
    typer.echo(json.dumps(data, indent=1, sort_keys=False, default=repr) if as_json else render_text(data), nl=as_json)
    raise typer.Exit(0 if data["error"] is None else 2)
