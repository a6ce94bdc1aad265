"""Help: every command and option has an example, and the examples are valid commands."""

from __future__ import annotations

import shlex

import pytest
import typer

from porter import __version__
from porter.cli import app

ROOT = typer.main.get_command(app)


def _leaves(group, prefix: tuple[str, ...] = ()) -> dict[str, object]:
    """"convert hf-to-megatron" -> its command, for every command under group."""
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.update(_leaves(command, (*prefix, name)))
        else:
            found[" ".join((*prefix, name))] = command
    return found


LEAVES = _leaves(ROOT)
COMMANDS = sorted(LEAVES)
EXPECTED = {"list", "inspect", "diff", "apply", "explain", "smoke", "verify", "convert hf-to-megatron",
            "convert megatron-to-hf", "demo", "version"}


def examples(help_text: str) -> list[str]:
    _, _, tail = help_text.partition("Examples:")
    return [line.strip() for line in tail.strip().splitlines() if line.strip().startswith("porter")]


def test_porter_has_the_commands_people_expect(porter):
    assert EXPECTED <= set(COMMANDS)
    result = porter("--help")
    assert result.exit_code == 0
    for name in ROOT.commands:
        assert f" {name} " in result.stdout
    assert porter().exit_code in (0, 2) and "Usage: porter" in porter().output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_shows_examples_that_parse(name):
    command = LEAVES[name]
    found = examples(command.help or "")
    assert found, f"porter {name} has no Examples: in its help"
    size = len(name.split()) + 1
    for example in found:
        words = shlex.split(example.split("||")[0].split(">")[0])
        assert words[:size] == ["porter", *name.split()], example
        with command.make_context(f"porter {name}", words[size:], resilient_parsing=False) as ctx:
            assert ctx.command is command


@pytest.mark.parametrize("group", [ROOT, ROOT.commands["convert"]], ids=["porter", "convert"])
def test_the_group_help_examples_parse(group):
    found = examples(group.help)
    assert found
    for example in found:
        words = shlex.split(example)
        name = next(n for n in sorted(LEAVES, key=len, reverse=True) if words[1:1 + len(n.split())] == n.split())
        LEAVES[name].make_context(f"porter {name}", words[1 + len(name.split()):])


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_argument_has_an_example(name):
    for param in LEAVES[name].params:
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

