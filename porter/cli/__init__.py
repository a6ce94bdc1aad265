"""porter's command line (typer): thin — parse, call, print.

Each command lives in a module of this package, named for what it does; importing the
module registers its commands on `app`. Shared options, printing (text, --json, --quiet,
--verbose, progress) and error handling are in `porter.cli.common`, whose docstring states
the conventions every command follows.
"""

from __future__ import annotations

from porter.cli import (  # noqa: F401  (each registers its commands; HELP_ORDER orders them)
    convert_command,
    diff_command,
    explain_command,
    inspect_command,
    list_command,
    port_commands,
    revert_command,
    smoke_command,
    spec_command,
    verify_command,
)
from porter.cli.common import app, say_interrupted


def main() -> None:
    try:
        app(prog_name="porter")
    except KeyboardInterrupt:  # Ctrl-C while the command line was being built: nothing ran
        say_interrupted(None)
        raise SystemExit(130) from None


__all__ = ["app", "main"]
