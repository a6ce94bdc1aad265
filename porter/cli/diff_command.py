"""diff: the whole port as a patch, or its statistics, before anything is written."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, app, fail
from porter.errors import PorterError


class Color(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


@app.command()
def diff(
    model: Model,
    target: Target = Path("."),
    stat: Annotated[
        bool,
        typer.Option("--stat", help="Summarise instead: lines added and removed per file and per spec key. Example: --stat"),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o",
            help="Also write the patch to FILE, for `git apply FILE` in the tree. Example: --output llama.patch",
            metavar="FILE",
        ),
    ] = None,
    color: Annotated[
        Color,
        typer.Option(help="Colour the patch: auto (on a terminal), always, never. Example: --color never"),
    ] = Color.auto,
    json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Show the port as a patch (or --stat) before anything is written.

    Every change `porter apply` would make, as a unified diff; nothing in the tree is
    written. On a terminal the patch is coloured and each hunk says which spec key and rewrite wrote
    it; piped or redirected, it is a plain patch that `git apply` takes. --json prints the
    --stat figures as JSON.

    Exit status, like diff(1): 0 nothing to do (the tree has the port), 1 changes to make,
    2 error.

    Examples:
    porter diff llama --target ./Megatron-DeepSpeed
    porter diff llama --target ./Megatron-DeepSpeed --stat
    porter diff llama --target ./Megatron-DeepSpeed --output llama.patch
    porter diff llama --target ./Megatron-DeepSpeed --quiet || echo "the port is missing or stale"
    """
    from porter.patch import file_stat, patch
    from porter.port import no_cyclic_gc, prepare

    out = Output(json=json, quiet=quiet)
    try:
        with no_cyclic_gc(freeze=True):  # this process ends after the patch
            port = prepare(model, target)
    except PorterError as exc:
        fail(exc, debug, out)
    text = patch(port.changes)
    if output is not None:
        try:
            output.write_bytes(text.encode("utf-8"))
        except OSError as exc:
            fail(PorterError(f"cannot write {output}: {exc.strerror}", file=str(output),
                             fix="choose a writable path for --output"), debug, out)
    stats = [file_stat(change) for change in port.changes]
    if not quiet and not json:  # on stderr: stdout holds the patch
        for note in port.state.notes() if port.state else []:
            typer.echo(f"porter: note: {note['path']} was {note['what']}: {note['action']}", err=True)
    if json:
        out.emit("porter.diff/1", stat_document(port, stats))
    elif not quiet:
        if stat:
            out.result(stat_text(port, stats))
        elif output is None:
            show_patch(port.changes, text, color)
        elif text:
            added, removed = sum(s.added for s in stats), sum(s.removed for s in stats)
            out.say(f"wrote {output}: {len(stats)} files, +{added} -{removed}")
        else:
            out.say(f"wrote {output}: empty, nothing to do: {target} already has the {port.spec.name} port")
    if output is not None and text:
        _say_how_to_apply(out, port.root, output)
    raise typer.Exit(1 if text else 0)


def _say_how_to_apply(out: Output, root: Path, output: Path) -> None:
    """git applies a patch relative to the top of its repository, and silently skips paths
    outside the current folder: for a tree in a subfolder of a repository, say how."""
    root = root.resolve()
    if (root / ".git").exists():
        return
    for folder in root.parents:
        if (folder / ".git").exists():
            inner = root.relative_to(folder).as_posix()
            out.say(f"note: the tree is the folder {inner} of the git repository {folder}; apply the patch "
                    f"from there: git -C {folder} apply --directory={inner} {output.resolve()}")
            return


def show_patch(changes, text: str, color: Color) -> None:
    """The patch on stdout: plain, or coloured and annotated when stdout is a terminal."""
    if not text:
        return
    from rich.console import Console

    console = Console(
        force_terminal=True if color is Color.always else None,
        no_color=color is Color.never,
        highlight=False,
        soft_wrap=True,
    )
    if color is Color.never or not console.is_terminal:
        sys.stdout.write(text)
        return
    from rich.text import Text

    from porter.patch import file_header, hunks

    for change in changes:
        parts = list(hunks(change))
        if not parts:
            continue
        for line in file_header(change).splitlines():
            console.print(Text(line, style="bold"))
        for hunk in parts:
            tags = dict.fromkeys(change.provenance[j] for j in hunk.added if j < len(change.provenance))
            tags.pop(None, None)
            header = Text(hunk.header, style="cyan")
            if tags:
                header.append("  " + "; ".join(tags), style="dim")
            console.print(header)
            for line in hunk.lines:
                body = line.rstrip("\n").rstrip("\r")
                style = {"+": "green", "-": "red", "\\": "dim"}.get(body[:1], "")
                console.print(Text(body, style=style))


def stat_text(port, stats) -> str:
    from porter.catalog import switch_fields
    from porter.patch import feature_stats

    if not stats:
        return f"nothing to do: {port.root} already has the {port.spec.name} port\n"
    width = max(len(s.path) + (6 if s.created else 0) for s in stats)
    lines = []
    for s in stats:
        name = s.path + (" (new)" if s.created else "")
        lines.append(f" {name:<{width}}  +{s.added:<4} -{s.removed}".rstrip())
    added, removed = sum(s.added for s in stats), sum(s.removed for s in stats)
    created = sum(s.created for s in stats)
    lines.append(f" {len(stats)} files changed ({created} new), +{added} -{removed}")
    lines.append("")
    lines.append(f"by spec key ({port.spec.name}):")
    features = feature_stats(stats, [e.feature for e in port.plan.edits])
    key_width = max(len(f.feature) for f in features) + 1
    figures = [f"{len(f.files)} file{'s' if len(f.files) != 1 else ''}, +{f.added} -{f.removed}" for f in features]
    figure_width = max(len(text) for text in figures)
    for f, text in zip(features, figures, strict=True):
        field = switch_fields().get(f.feature, "")
        lines.append(f"  {f.feature + ':':<{key_width}} {text:<{figure_width}}  {field}".rstrip())
    for d in converts_only(port.spec):
        lines.append(f"  {d.name}: no line in the tree ({d.converts_only})  {', '.join(given_fields(port.spec, d))}")
    for feature, what in reused_only(port, features).items():
        lines.append(f"  {feature}: no line in the tree ({what})  {switch_fields().get(feature, '')}".rstrip())
    return "\n".join(lines) + "\n"


def reused_only(port, features) -> dict[str, str]:
    """The switches the port takes from the tree as they are (the tree's own --rotary-percent,
    say), writing no line for them: feature -> what the plan says it reuses."""
    written = {f.feature for f in features}
    out: dict[str, str] = {}
    for entry in port.plan.reused:
        feature, _, what = entry.partition(": ")
        if feature not in written:
            out.setdefault(feature, what)
    return out


def converts_only(spec) -> list:
    """The wanted differences that change only what porter converts (no line in the tree)."""
    return [d for d in spec.wanted() if d.converts_only]


def given_fields(spec, difference) -> list[str]:
    """The difference's fields the spec sets away from GPT."""
    return [name for name, field in difference.fields.items() if spec[name] != field.base]


def stat_document(port, stats) -> dict:
    from porter.catalog import switch_fields
    from porter.patch import feature_stats
    from porter.render import spec_label

    return {
        "model": port.spec.name,
        "spec": spec_label(port.spec),
        "target": str(port.root),
        "changes": bool(stats),
        "files": [
            {
                "path": s.path,
                "created": s.created,
                "added": s.added,
                "removed": s.removed,
                "features": {k: {"added": a, "removed": r} for k, (a, r) in s.by_feature.items()},
            }
            for s in stats
        ],
        "features": [
            {"feature": f.feature, "spec_field": switch_fields().get(f.feature), "files": f.files,
             "added": f.added, "removed": f.removed}
            for f in feature_stats(stats, [e.feature for e in port.plan.edits])
        ],
        "converts_only": [{"feature": d.name, "spec_fields": given_fields(port.spec, d), "what": d.converts_only}
                          for d in converts_only(port.spec)],
        "reused_only": [{"feature": feature, "spec_field": switch_fields().get(feature), "what": what}
                        for feature, what in reused_only(
                            port, feature_stats(stats, [e.feature for e in port.plan.edits])).items()]
        if stats else [],  # nothing to do: the earlier port's own switches are all that is reused
        "total": {
            "files": len(stats),
            "created": sum(s.created for s in stats),
            "added": sum(s.added for s in stats),
            "removed": sum(s.removed for s in stats),
        },
    }
