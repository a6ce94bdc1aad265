"""Help reads well at 80 and at 120 columns: prose wrapped evenly to the width, every example
a whole command (broken with ` \\` when too long, so it still pastes), nothing cut or lost."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from porter.cli import app
from porter.cli.help_text import layout, wrap_command
from tests.cli.test_help import COMMANDS, LEAVES, ROOT

WIDTHS = [80, 120]
HELPS = {"porter": ([], ROOT), "porter convert": (["convert"], ROOT.commands["convert"]),
         **{f"porter {name}": (name.split(), LEAVES[name]) for name in COMMANDS}}


def _help(args: list[str], width: int) -> list[str]:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def _description(lines: list[str]) -> list[list[str]]:
    """The paragraphs between the usage line and the first panel, each a list of its lines."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(HELPS))
def test_help_is_laid_out_for_the_width(name, width):
    args, command = HELPS[name]
    lines = _help(args, width)
    assert all(len(line.rstrip()) <= width for line in lines), name
    written = inspect.cleandoc(getattr(command, "written_help", command.help))
    shown = _description(lines)
    examples = next((p for p in shown if p[0] == "Examples:"), [])
    prose = [p for p in shown if p[0] != "Examples:"]
    usable = width - 2  # typer pads the description by one column each side
    for paragraph in prose:
        for line, following in zip(paragraph, paragraph[1:], strict=False):
            assert len(line) + 1 + len(following.split()[0]) > usable, f"ragged at {width}: {line!r} / {following!r}"
    assert " ".join(" ".join(p) for p in prose) == " ".join(written.partition("Examples:")[0].split())
    commands = " ".join(examples[1:]).replace(" \\ ", " ").split(" porter ")
    expected = [line.strip() for line in written.partition("Examples:")[2].strip().splitlines()]
    assert [c if c.startswith("porter ") else "porter " + c for c in commands] == expected


def test_brackets_in_a_help_are_shown_not_taken_for_markup():
    lines = _help(["convert", "hf-to-megatron"], 100)
    assert any("[gate; up] halves" in line for line in lines)


def test_a_long_example_breaks_between_arguments_and_keeps_an_option_with_its_value():
    command = "porter convert megatron-to-hf --load ./checkpoints --out ./llama-hf --target ./Megatron-DeepSpeed"
    assert wrap_command(command, 78).splitlines() == [
        "porter convert megatron-to-hf --load ./checkpoints --out ./llama-hf \\",
        "    --target ./Megatron-DeepSpeed",
    ]
    assert wrap_command('porter diff llama -q || echo "stale, re-port"', 30).splitlines() == [
        "porter diff llama -q || echo \\", '    "stale, re-port"']
    assert layout("One.\n\nTwo\nlines.\n\nExamples:\nporter list", 80) == "One.\n\nTwo lines.\n\nExamples:\nporter list"
