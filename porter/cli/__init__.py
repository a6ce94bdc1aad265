"""porter's command line (typer): thin — parse, call, print.

Each command lives in a module of this package, named for what it does; importing the
module registers its commands on `app`.
"""

from __future__ import annotations

from porter.cli import inspect_command, port_commands, smoke_command  # noqa: F401  (registers the commands)
from porter.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
