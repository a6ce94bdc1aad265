"""spec: the diff spec porter reads from an HF config.json (or a spec), as TOML to review and keep."""

from __future__ import annotations

from typing import Annotated

import typer

from porter.cli import common
from porter.cli.common import Debug, Output, app, fail
from porter.errors import PorterError


@app.command(name="spec")
def spec_command(
    model: Annotated[str, typer.Argument(
        help="An HF model folder, its config.json, a spec name or a .toml spec. Example: ./Meta-Llama-3.1-8B",
        metavar="MODEL", show_default=False)],
    debug: Debug = False,
) -> None:
    """Print the diff spec porter uses for MODEL, as TOML.

    Given an HF config.json (or the model folder that holds it), porter takes the closest
    bundled family for what the config leaves implicit and the config's own numbers for the
    rest; a field it cannot honour is refused by name. Keep the output as a .toml file to
    review it, change it, and port with it.

    Exit status: 0 printed, 2 the config or spec is invalid.

    Examples:
    porter spec ./Meta-Llama-3.1-8B
    porter spec ./Meta-Llama-3.1-8B/config.json > llama31_8b.toml
    porter spec llama3
    """
    from porter.catalog import load_spec
    from porter.spec import spec_toml

    out = Output()
    try:
        spec = load_spec(model)
    except PorterError as exc:
        fail(exc, debug, out)
    out.result(spec_toml(spec).rstrip())


common.HELP_ORDER.insert(common.HELP_ORDER.index("list") + 1, "spec")
