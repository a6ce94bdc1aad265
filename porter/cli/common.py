"""What every command shares: the app, its common options, printing, and how errors end a run.

Conventions for a command module (`porter/cli/<what>_command.py`, imported by
`porter/cli/__init__.py` so that its `@app.command()` registers):

- Docstring: a one-line summary, what the command does, its exit status, then an
  `Examples:` paragraph of real commands, one per line (typer shows them as written).
- Options: reuse the ones below (`Model`, `Target`, `Json`, `Quiet`, `Verbose`, `Debug`);
  every option's help ends with an example (`Example: --steps 10`).
- Printing goes through `Output` (`out = Output(json=json, quiet=quiet, verbose=verbose)`):
    - `out.result(text)`: the command's answer (a diff, a listing), always on stdout;
    - `out.say(text)`: progress and summary lines; dropped by `--quiet`; on stderr under
      `--json` so that stdout holds only the JSON document;
    - `out.detail(text)`: shown only with `--verbose`;
    - `out.emit(doc)`: the `--json` document on stdout, as `{"schema": "porter.<cmd>/<n>",
      "porter": <version>, ...}` (documented in docs/json.md; within one schema number fields
      are only ever added);
    - `with out.progress(total, label) as bar: bar.update(step, "loss 6.93")`: a live bar on
      a terminal (stderr), plain `label step/total  status` lines elsewhere (CI, pipes).
- Errors: `except PorterError as exc: fail(exc, debug, out)`: the message without a traceback
  (unless `--debug`) on stderr, and under `--json` also `{"schema": "porter.error/1", ...}` on
  stdout; exit status 2.
- Exit status, like diff(1): 0 done (or nothing to do), 1 the answer is "no" (`diff` found
  changes, `smoke` or `verify` failed), 2 error (bad input; typer's usage errors are 2 too);
  130 Ctrl-C, after a line saying what state the run left (porter.interrupts).
"""

from __future__ import annotations

import json as json_module
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from porter import __version__
from porter.errors import PorterError

# The order of `porter --help`: the way a port goes. Commands not named here come last.
HELP_ORDER = ["list", "inspect", "diff", "apply", "explain", "revert", "smoke", "verify", "convert", "demo", "version"]


class _Commands(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: (HELP_ORDER.index(n) if n in HELP_ORDER else len(HELP_ORDER), names.index(n)))

    running: str | None = None  # the command being run, for the Ctrl-C message

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _lay_out_help(command)
        return command

    def format_help(self, ctx, formatter) -> None:
        _lay_out_help(self)
        super().format_help(ctx, formatter)

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        self.running = name
        return name, command, rest

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exit:
            if exit.code == 130:  # typer's answer to Ctrl-C (KeyboardInterrupt), wherever it came
                say_interrupted(self.running)
            raise


def _lay_out_help(command) -> None:
    """A command's help (and its subcommands') laid out for this terminal (porter.cli.help_text)."""
    from rich.markup import escape

    from porter.cli.help_text import layout, terminal_width

    if not hasattr(command, "written_help"):  # the first time: keep the docstring, escape the options' help
        command.written_help = command.help or ""
        for param in command.params:
            if getattr(param, "help", None):
                param.help = escape(param.help)
    command.help = layout(command.written_help, terminal_width())
    for sub in getattr(command, "commands", {}).values():
        _lay_out_help(sub)


def say_interrupted(command: str | None) -> None:
    """After Ctrl-C: what state the run left (porter.interrupts); the exit status is 130."""
    from porter.interrupts import interrupted_message

    typer.secho(f"\nporter: {interrupted_message(command)}", fg=typer.colors.YELLOW, err=True)


app = typer.Typer(
    cls=_Commands,
    help="Port new transformer architectures (LLaMA, ...) into your Megatron-DeepSpeed tree.\n\n"
    "Review first (porter diff), write all or nothing (porter apply), prove it trains (porter smoke).\n\n"
    "Examples:\n"
    "porter list\n"
    "porter diff llama --target ./Megatron-DeepSpeed --stat\n"
    "porter apply llama --target ./Megatron-DeepSpeed\n"
    "porter explain ./Megatron-DeepSpeed/megatron/model/transformer.py:318\n"
    "porter demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",  # kept single line breaks, in every typer version (porter.cli.help_text)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Model = Annotated[
    str,
    typer.Argument(
        help="Spec name (see `porter list`), a .toml diff spec, or an HF model folder or its config.json. "
        "Example: llama3, ./my_model.toml or ./Meta-Llama-3.1-8B",
        metavar="MODEL",
        show_default=False,
    ),
]
Target = Annotated[
    Path,
    typer.Option(
        "--target", "-t",
        help="Root of the Megatron-DeepSpeed tree (the folder that holds megatron/). Example: --target ./Megatron-DeepSpeed",
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (schema: docs/json.md). Example: --json > report.json"),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors; the exit status answers. Example: -q")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print more: every step, and the logs of child runs. Example: -v")]
Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports). Example: --debug")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"porter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print porter's version and exit. Example: porter --version"),
    ] = False,
) -> None:
    pass


@app.command()
def version() -> None:
    """Print porter's version.

    Examples:
    porter version
    """
    typer.echo(__version__)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """Steps of a long run: a live bar on a terminal, one plain line per step elsewhere."""

    def __init__(self, out: Output, total: int, label: str) -> None:
        self.out = out
        self.total = total
        self.label = label
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if not self.out.quiet and stderr_is_terminal():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, status="")
        return self

    def update(self, step: int, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, status=status)
            if self.out.verbose:
                self._bar.console.print(f"{self.label} {step}/{self.total}  {status}".rstrip())
        else:
            self.out.say(f"{self.label} {step}/{self.total}  {status}".rstrip())

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class Output:
    """How a command prints: text or JSON, quiet or verbose (see the module docstring)."""

    def __init__(self, json: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        if quiet and verbose:
            raise typer.BadParameter("--quiet and --verbose exclude each other")
        self.json = json
        self.quiet = quiet
        self.verbose = verbose

    def result(self, text: str) -> None:
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        if not self.quiet:
            typer.echo(text, err=self.json)

    def detail(self, text: str) -> None:
        if self.verbose:
            typer.echo(text, err=self.json)

    def warn(self, text: str) -> None:
        typer.secho(f"porter: {text}", fg=typer.colors.YELLOW, err=True)

    def emit(self, schema: str, doc: dict[str, Any]) -> None:
        """The --json document: `schema` ("porter.diff/1"), porter's version, then `doc`."""
        sys.stdout.write(json_module.dumps({"schema": schema, "porter": __version__, **doc}, indent=2) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Progress]:
        with Progress(self, total, label) as bar:
            yield bar


def fail(exc: PorterError, debug: bool, out: Output | None = None) -> NoReturn:
    """End the run on a PorterError: the message (no traceback unless --debug), exit status 2."""
    if debug:
        raise exc
    typer.secho(f"porter: error: {exc}", fg=typer.colors.RED, err=True)
    if out is not None and out.json:
        out.emit("porter.error/1", {"error": exc.as_dict()})
    raise typer.Exit(exc.exit_code)
