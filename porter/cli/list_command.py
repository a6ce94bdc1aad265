"""list: the diff specs porter knows, each with how it differs from GPT."""

from __future__ import annotations

from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Output, app, fail
from porter.errors import PorterError


@app.command(name="list")
def list_specs(
    specs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Spec files to check and show instead of the bundled ones. Example: ./my_model.toml",
            show_default=False,
        ),
    ] = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """The diff specs porter knows, and how each differs from GPT.

    Given .toml files, validates them and shows them the same way: a quick check of a spec
    you are writing.

    Exit status: 0 listed, 2 a spec is invalid.

    Examples:
    porter list
    porter list ./my_model.toml
    porter list --json
    """
    from porter.catalog import available_specs, load_spec
    from porter.render import spec_label

    out = Output(json=json)
    try:
        loaded = [load_spec(str(path)) for path in (specs or available_specs().values())]
    except PorterError as exc:
        fail(exc, debug, out)
    if json:
        out.emit("porter.list/1", {"specs": [
            {
                "name": spec.name,
                "path": spec_label(spec),
                "description": spec.description,
                "class": spec.model_class,
                "script": spec.script,
                "differences": [
                    {"field": name, "value": spec.value_of(name)[0], "gpt": spec.value_of(name)[1]}
                    for name in spec.summary()
                ],
                "training_defaults": spec.training_defaults,
            }
            for spec in loaded
        ]})
        return
    blocks = []
    for spec in loaded:
        lines = [f"{spec.name}  ({spec_label(spec)}): {spec.model_class}, {spec.script}"]
        if spec.description:
            lines.append(f"  {spec.description}")
        summary = spec.summary()
        if not summary:
            lines.append("  no differences from GPT: porter plans no change for it")
        else:
            width = max(len(name) for name in summary)
            lines.append("  differs from GPT in:")
            lines.extend(f"    {name:<{width}}  {value}" for name, value in summary.items())
        if spec.training_defaults:
            defaults = ", ".join(f"{k}={v!r}" for k, v in spec.training_defaults.items())
            lines.append(f"  training defaults: {defaults}")
        blocks.append("\n".join(lines))
    out.result("\n\n".join(blocks))
