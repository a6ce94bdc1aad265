"""revert: undo `porter apply` from its journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Output, Quiet, Target, app, fail
from porter.errors import PorterError


@app.command()
def revert(
    target: Target = Path("."),
    keep_edits: Annotated[
        bool,
        typer.Option(
            "--keep-edits",
            help="Keep your edits made since the apply where they do not overlap porter's lines "
            "(three-way merge); refuse where they do. Example: --keep-edits",
        ),
    ] = False,
    json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Undo `porter apply`: the tree byte for byte as before, from the journal in .porter/.

    Files porter changed get their old bytes back, files it created are removed, and .porter/
    goes. A file changed since the apply is refused by name (nothing is written), unless
    --keep-edits is given.

    Exit status: 0 reverted, 2 error (nothing written).

    Examples:
    porter revert --target ./Megatron-DeepSpeed
    porter revert --target ./Megatron-DeepSpeed --keep-edits
    """
    from porter.revert import revert as revert_tree

    out = Output(json=json, quiet=quiet)
    try:
        result = revert_tree(target, keep_edits=keep_edits)
    except PorterError as exc:
        fail(exc, debug, out)
    if json:
        out.emit("porter.revert/1", {
            "target": str(target), "restored": result.restored, "merged": result.merged, "removed": result.removed,
        })
        return
    for rel in result.restored:
        out.say(f"restored {rel}")
    for rel in result.merged:
        out.say(f"restored {rel} (your later edits kept)")
    for rel in result.removed:
        out.say(f"removed {rel}")
    out.say(f"reverted {target}: {len(result.restored) + len(result.merged)} files restored, "
               f"{len(result.removed)} removed")
