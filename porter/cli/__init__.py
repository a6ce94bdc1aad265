"""porter's command line (typer): thin — parse, call, print.

Each command lives in a module of this package, named for what it does; importing the
module registers its commands on `app`.
"""

from __future__ import annotations

from porter.cli import (  # noqa: F401  (registers the commands)
    convert_command,
    inspect_command,
    port_commands,
    revert_command,
    smoke_command,
    verify_command,
)
from porter.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
