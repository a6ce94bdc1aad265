"""revert: undo `porter apply` from its journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Target, app, fail
from porter.errors import PorterError


@app.command()
def revert(
    target: Target = Path("."),
    keep_edits: Annotated[
        bool,
        typer.Option(
            "--keep-edits",
            help="Keep your edits made since the apply where they do not overlap porter's lines "
            "(three-way merge); refuse where they do.",
        ),
    ] = False,
    debug: Debug = False,
) -> None:
    """Undo `porter apply`: the tree byte for byte as before, from the journal in .porter/.

    Files porter changed get their old bytes back, files it created are removed, and .porter/
    goes. A file changed since the apply is refused by name (nothing is written), unless
    --keep-edits is given.

    Example: porter revert --target ./Megatron-DeepSpeed
    """
    from porter.revert import revert as revert_tree

    try:
        result = revert_tree(target, keep_edits=keep_edits)
    except PorterError as exc:
        fail(exc, debug)
    for rel in result.restored:
        typer.echo(f"restored {rel}")
    for rel in result.merged:
        typer.echo(f"restored {rel} (your later edits kept)")
    for rel in result.removed:
        typer.echo(f"removed {rel}")
    typer.echo(f"reverted {target}: {len(result.restored) + len(result.merged)} files restored, "
               f"{len(result.removed)} removed")
