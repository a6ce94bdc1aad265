"""Help: every command and option has an example, and the examples are valid commands."""

from __future__ import annotations

import shlex

import pytest
import typer

from porter import __version__
from porter.cli import app

ROOT = typer.main.get_command(app)
COMMANDS = sorted(ROOT.commands)
EXPECTED = {"list", "diff", "apply", "explain", "smoke", "demo", "version"}


def examples(help_text: str) -> list[str]:
    _, _, tail = help_text.partition("Examples:")
    return [line.strip() for line in tail.strip().splitlines() if line.strip().startswith("porter")]


def test_porter_has_the_commands_people_expect(porter):
    assert EXPECTED <= set(COMMANDS)
    result = porter("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout
    assert porter().exit_code in (0, 2) and "Usage: porter" in porter().output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_shows_examples_that_parse(name):
    command = ROOT.commands[name]
    found = examples(command.help or "")
    assert found, f"porter {name} has no Examples: in its help"
    for example in found:
        words = shlex.split(example.split("||")[0].split(">")[0])
        assert words[:2] == ["porter", name], example
        with command.make_context(f"porter {name}", words[2:], resilient_parsing=False) as ctx:
            assert ctx.command is command


def test_the_root_help_examples_parse():
    for example in examples(ROOT.help):
        words = shlex.split(example)
        command = ROOT.commands[words[1]]
        command.make_context(f"porter {words[1]}", words[2:])


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_argument_has_an_example(name):
    for param in ROOT.commands[name].params:
        if param.name == "help":
            continue
        assert "Example" in (param.help or ""), f"porter {name} {param.name}: no example in its help"


def test_version(porter):
    assert porter("--version").stdout == f"porter {__version__}\n"
    assert porter("version").stdout == f"{__version__}\n"


def test_quiet_and_verbose_exclude_each_other(porter):
    result = porter("demo", "--quiet", "--verbose")
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_help_option_short_form(porter):
    assert porter("diff", "-h").exit_code == 0

