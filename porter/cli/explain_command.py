"""explain: which spec key, rewrite or template wrote a line of a ported tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Output, app, fail
from porter.errors import PorterError

LOCATION = re.compile(r"^(?P<path>.+?)(?::(?P<start>\d+)(?:-(?P<end>\d+))?)?$")


@app.command()
def explain(
    location: Annotated[
        str,
        typer.Argument(
            help="FILE:LINE, FILE:START-END, or FILE (every line porter wrote in it). "
            "Example: megatron/model/transformer.py:318",
            metavar="FILE[:LINE[-END]]",
            show_default=False,
        ),
    ],
    target: Annotated[
        Path | None,
        typer.Option(
            "--target", "-t",
            help="The ported tree; FILE is relative to it. Without it porter looks for the tree above FILE. "
            "Example: --target ./Megatron-DeepSpeed",
        ),
    ] = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Which spec key, rewrite or template wrote a line, and why.

    Reads the journal `porter apply` keeps in the tree (.porter/journal.json). Lines that
    moved since (your own edits above them) are still found; a line you added or changed
    after the port is reported as yours.

    Exit status: 0 explained, 2 error (no journal, no such file or line).

    Examples:
    porter explain ./Megatron-DeepSpeed/megatron/model/transformer.py:318
    porter explain megatron/model/transformer.py:310-330 --target ./Megatron-DeepSpeed
    porter explain megatron/model/gpt_model.py --target ./Megatron-DeepSpeed
    """
    from porter.provenance import trace

    out = Output(json=json)
    try:
        root, path, start, end = _locate(location, target)
        origins = trace(root, path)
        if start is not None:
            last = end if end is not None else start
            if not 1 <= start <= last <= len(origins):
                raise PorterError(
                    f"{path} has {len(origins)} lines: no line {location.rsplit(':', 1)[1]}",
                    file=path, fix=f"give a line between 1 and {len(origins)}",
                )
            origins = origins[start - 1 : last]
    except PorterError as exc:
        fail(exc, debug, out)
    if json:
        out.emit("porter.explain/1", {"target": str(root), "path": path, "lines": [_as_dict(o) for o in origins]})
    elif start is not None and end is None:
        out.result(_one(path, origins[0]))
    else:
        out.result(_runs(path, origins, whole=start is None))


def _locate(location: str, target: Path | None) -> tuple[Path, str, int | None, int | None]:
    """(tree root, path relative to it, first line, last line) from FILE[:LINE[-END]]."""
    from porter.provenance import find_root

    match = LOCATION.match(location)
    raw, start, end = match["path"], match["start"], match["end"]
    start_n = int(start) if start else None
    end_n = int(end) if end else None
    given = Path(raw)
    if target is not None:
        root = target.resolve()
        file = given if given.is_absolute() else root / given
        if not file.is_file() and (Path.cwd() / given).is_file():
            file = Path.cwd() / given
    else:
        file = given.resolve()
        found = find_root(file.parent)
        if found is None:
            raise PorterError(
                f"no ported tree above {raw}",
                file=raw, construct="a .porter/journal.json in a folder above the file",
                fix="pass --target with the ported tree, or a FILE inside it",
            )
        root = found
    file = file.resolve()
    if not file.is_file():
        raise PorterError(f"no such file: {raw}", file=raw, fix="give a file of the ported tree, e.g. megatron/model/transformer.py")
    try:
        relative = file.relative_to(root).as_posix()
    except ValueError:
        raise PorterError(f"{raw} is outside the tree {root}", file=raw, fix="give a file inside --target") from None
    return root, relative, start_n, end_n


def _spec_line(origin) -> str | None:
    """"rmsnorm  (norm.type = 'rmsnorm'; GPT: 'layernorm')" from the spec the apply used."""
    from porter.catalog import load_spec, switch_fields

    field = switch_fields().get(origin.feature or "")
    if not field:
        return origin.feature
    try:
        spec = load_spec(origin.spec if origin.spec and Path(origin.spec).is_file() else origin.model)
        value, base = spec.value_of(field)
    except (PorterError, KeyError):
        return f"{origin.feature}  ({field})"
    gpt = "" if base is None else f"; GPT: {base!r}"
    return f"{origin.feature}  ({field} = {value!r}{gpt})"


def _one(path: str, origin) -> str:
    from porter.provenance import describe_edit

    lines = [f"{path}:{origin.line}: {origin.text.strip()}"]
    where = f"apply {origin.apply} of {origin.model}" if origin.apply else ""
    if origin.origin == "tree":
        if origin.written_line is not None and origin.written_line != origin.line:
            lines.append(f"  not porter's: it was in the tree before the port, at line {origin.written_line}")
        else:
            lines.append("  not porter's: it was in the tree before the port")
        return "\n".join(lines) + "\n"
    if origin.origin == "edited":
        lines.append(f"  not porter's: added or changed after porter wrote this file ({where})")
        if origin.replaced:
            lines.append("  porter had written lines here for: " + "; ".join(origin.replaced))
        return "\n".join(lines) + "\n"
    moved = "" if origin.written_line == origin.line else f", at line {origin.written_line} (the file changed since)"
    lines.append(f"  written by porter: {where}{moved}")
    if not origin.tag:
        return "\n".join(lines) + "\n"
    lines.append(f"  spec key: {_spec_line(origin)}")
    info = describe_edit(origin.edit or "")
    lines.append(f"  {info.kind}: {info.name}  ({info.source})")
    if info.doc:
        first = info.doc.split("\n\n", 1)[0].replace("\n", " ")
        lines.append(f"    {first}")
    for reason in origin.reasons:
        lines.append(f"  why: {reason}")
    return "\n".join(lines) + "\n"


def _runs(path: str, origins, whole: bool) -> str:
    """Runs of lines with one origin: `12-20  rmsnorm: ChooseNormClass  <why>`."""
    runs: list[list] = []
    for origin in origins:
        key = (origin.origin, origin.tag, tuple(origin.replaced))
        if runs and runs[-1][0] == key and runs[-1][2] + 1 == origin.line:
            runs[-1][2] = origin.line
        else:
            runs.append([key, origin.line, origin.line, origin])
    porter_lines = sum(o.origin == "porter" for o in origins)
    head = f"{path}: porter wrote {porter_lines} of {len(origins)} lines"
    applies = sorted({f"apply {o.apply} of {o.model}" for o in origins if o.apply})
    if applies:
        head += f" ({', '.join(applies)})"
    out = [head]
    for (kind, tag, _), first, last, origin in runs:
        span = f"{first}" if first == last else f"{first}-{last}"
        if kind == "tree":
            if not whole:
                out.append(f"  {span:>9}  (the tree's own)")
            continue
        if kind == "edited":
            out.append(f"  {span:>9}  edited after the port" + (f" (over {'; '.join(origin.replaced)})" if origin.replaced else ""))
            continue
        why = f"  {origin.reasons[0]}" if origin.reasons else ""
        out.append(f"  {span:>9}  {tag or 'porter'}{why}")
    return "\n".join(out) + "\n"


def _as_dict(origin) -> dict:
    from porter.provenance import describe_edit

    doc = None
    if origin.tag:
        info = describe_edit(origin.edit or "")
        doc = {"kind": info.kind, "name": info.name, "source": info.source}
    from porter.catalog import switch_fields

    return {
        "line": origin.line,
        "text": origin.text,
        "origin": origin.origin,
        "apply": origin.apply,
        "model": origin.model,
        "feature": origin.feature,
        "spec_field": switch_fields().get(origin.feature or ""),
        "edit": doc,
        "written_line": origin.written_line,
        "reasons": origin.reasons,
        "replaced": origin.replaced,
    }
