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
    as_: Annotated[str, typer.Option(
        "--as", help="Print the spec as a diff spec ('toml') or as the HF config.json of the model porter ports "
                     "('hf'), to diff against your own. Example: --as hf")] = "toml",
    debug: Debug = False,
) -> None:
    """Print the diff spec porter uses for MODEL, as TOML (or, with --as hf, as a config.json).

    Given an HF config.json (or the model folder that holds it), porter reads it as
    transformers does (a field left out or null is what transformers' config class makes of
    it); the family of its model_type gives only what the modeling code fixes, and every
    number is the config's. A field porter cannot honour is refused by name. Keep the output
    as a .toml file to review it, change it, and port with it; `--as hf` prints the model
    porter will port as a config.json, to diff against your own file.

    Exit status: 0 printed, 2 the config or spec is invalid.

    Examples:
    porter spec ./Meta-Llama-3.1-8B
    porter spec ./Meta-Llama-3.1-8B/config.json > llama31_8b.toml
    porter spec ./Meta-Llama-3.1-8B --as hf > as-ported.json
    porter spec llama3
    """
    import json

    from porter.catalog import load_spec
    from porter.hf_config import hf_file_of
    from porter.spec import spec_toml

    out = Output()
    try:
        if as_ not in ("toml", "hf"):
            raise PorterError(f"unknown --as {as_!r}", construct="--as toml or --as hf", found=as_,
                              fix="pass --as toml (a diff spec) or --as hf (a config.json)")
        spec = load_spec(model)
        text = spec_toml(spec).rstrip() if as_ == "toml" else json.dumps(hf_file_of(spec), indent=2, sort_keys=True)
    except PorterError as exc:
        fail(exc, debug, out)
    out.result(text)


common.HELP_ORDER.insert(common.HELP_ORDER.index("list") + 1, "spec")
