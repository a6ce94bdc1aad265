"""apply, demo: writing a port into a tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, Verbose, app, fail
from porter.errors import PorterError


@app.command()
def apply(model: Model, target: Target = Path("."), json: Json = False, quiet: Quiet = False, debug: Debug = False) -> None:
    """Write the port into the tree, all or nothing.

    Rewrites the files MODEL changes and adds the new ones. Review the change first with `porter diff`. Applying twice changes nothing the second
    time. A journal in DIR/.porter/ keeps what was written, for `porter explain` and
    `porter revert`.

    Exit status: 0 written (or nothing to do), 2 error (nothing written).

    Examples:
    porter apply llama --target ./Megatron-DeepSpeed
    porter apply ./my_model.toml --target ./Megatron-DeepSpeed --json
    """
    from porter.patch import file_stat
    from porter.port import apply as apply_port
    from porter.port import no_cyclic_gc

    out = Output(json=json, quiet=quiet)
    try:
        with no_cyclic_gc(freeze=True):  # this process ends after the port
            port = apply_port(model, target)
    except PorterError as exc:
        fail(exc, debug, out)
    stats = [file_stat(change) for change in port.changes]
    if json:
        out.emit("porter.apply/1", {
            "model": port.spec.name,
            "target": str(port.root),
            "written": bool(stats),
            "files": [{"path": s.path, "created": s.created, "added": s.added, "removed": s.removed,
                       "repaired": s.path in port.repaired} for s in stats],
        })
        return
    if not stats:
        out.say(f"nothing to do: {target} already has the {port.spec.name} port")
    for s in stats:
        if s.path in port.repaired:
            out.say(f"re-created {s.path} (+{s.added} -{s.removed}): deleted since porter created it")
        else:
            out.say(f"{'created' if s.created else 'changed'} {s.path} (+{s.added} -{s.removed})")
    for edited in port.state.edited if port.state else []:
        out.say(f"kept your edits of {edited.path}: {edited.describe()}")


@app.command()
def demo(
    model: Annotated[str, typer.Argument(help="Spec to port. Example: llama")] = "llama",
    folder: Annotated[
        Path, typer.Option(help="Where to put the copy of the sample tree (replaced if it exists). Example: --folder /tmp/demo")
    ] = Path("porter-demo"),
    steps: Annotated[int, typer.Option(help="Smoke-training steps (10 at least). Example: --steps 30")] = 20,
    quiet: Quiet = False,
    verbose: Verbose = False,
    debug: Debug = False,
) -> None:
    """Port and train a copy of the bundled sample tree: porter in a minute.

    Copies the sample tree (a compact GPT-only Megatron-DeepSpeed) to FOLDER/Megatron-DeepSpeed,
    applies the port, then trains it with DeepSpeed on this machine's CPU. Takes about a minute.
    A FOLDER the demo makes holds a .gitignore of `*`: git ignores it, in any checkout.

    Exit status: 0 the port trains (the loss falls), 1 it does not, 2 error.

    Examples:
    porter demo
    porter demo llama --folder /tmp/porter-demo --steps 30
    """
    import shutil

    from porter.patch import file_stat
    from porter.port import apply as apply_port
    from porter.resources import sample_tree_dir
    from porter.smoke import SmokeConfig, run_smoke

    out = Output(quiet=quiet, verbose=verbose)
    tree = folder / "Megatron-DeepSpeed"
    try:
        ignored = _make_demo_folder(folder)
        if tree.exists():
            shutil.rmtree(tree)
        shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        out.say(f"1. copied the bundled sample tree to {tree}"
                + (f" ({folder}/ ignores itself for git: delete it when done)" if ignored else ""))
        port = apply_port(model, tree)
        out.say(f"2. porter apply {model} --target {tree}")
        for change in port.changes:
            s = file_stat(change)
            out.say(f"   {'created' if s.created else 'changed'} {s.path} (+{s.added} -{s.removed})")
        out.say(f"3. porter smoke {model} --target {tree} --steps {steps}")
        with out.progress(steps, "   step") as bar:
            result = run_smoke(
                port.spec, tree, folder / "smoke", SmokeConfig(steps=steps),
                on_loss=lambda step, loss: bar.update(step, f"loss {loss:.4f}"),
                on_line=(lambda line: out.detail("   | " + line.rstrip())) if verbose else None,
            )
    except PorterError as exc:
        fail(exc, debug, out)
    if not result.passed:
        typer.echo(result.log[-4000:], err=True)
    verdict = "done" if result.passed else "FAILED"
    typer.echo(
        f"{verdict}: the {model} port of the sample tree {'trains' if result.passed else 'does not train'}; "
        f"mean loss {result.first:.4f} (first 5 steps) -> {result.last:.4f} (last 5)."
    )
    example = _a_ported_line(port.changes)
    if example:
        out.say(f"Which spec key wrote a line? porter explain {tree}/{example}")
    raise typer.Exit(0 if result.passed else 1)


def _make_demo_folder(folder: Path) -> bool:
    """Make the demo's folder, which git then ignores (a `.gitignore` of `*` inside: a demo run
    in a checkout leaves nothing untracked). A folder that was there before is the user's: it
    is left as it is. Returns whether git ignores the folder."""
    ignore = folder / ".gitignore"
    if not folder.exists():
        folder.mkdir(parents=True)
        ignore.write_text(DEMO_IGNORE)
    return ignore.is_file() and ignore.read_text() == DEMO_IGNORE


DEMO_IGNORE = "# made by porter demo: git ignores this folder and all it holds\n*\n"


def _a_ported_line(changes) -> str | None:
    """FILE:LINE of the first line of code (not blank, not a comment) that porter wrote in an
    existing file for a spec key, for the demo's `porter explain` hint."""
    from porter.catalog import switch_fields

    for change in changes:
        if change.created:
            continue
        for number, (text, tag) in enumerate(zip(change.text.splitlines(), change.provenance, strict=False), 1):
            code = text.strip()
            if tag and tag.split(":", 1)[0] in switch_fields() and code and not code.startswith("#"):
                return f"{change.path}:{number}"
    return None
