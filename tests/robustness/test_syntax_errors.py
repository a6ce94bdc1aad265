"""A file porter cannot parse is named with the line and column of the mistake and that line's text.

libcst's own `raw_line` says line 1 for every tokenizer error and can be a line off for a parser
error (porter once reported both); these cases put each kind of mistake at a known line of the
sample tree's transformer.py and run the real CLI.
"""

from __future__ import annotations

import libcst as cst
import pytest

from porter.syntax_error import syntax_error
from tests.helpers.trees import diff_snapshots, snapshot

TRANSFORMER = "megatron/model/transformer.py"


def _break_line(tree, number: int, change) -> str:
    path = tree / TRANSFORMER
    lines = path.read_text().split("\n")
    lines[number - 1] = change(lines[number - 1])
    path.write_text("\n".join(lines))
    return lines[number - 1]


CASES = {
    # kind: (line to break, how, the column Python names, what it says)
    "parser: a bracket never closed": (101, lambda line: line + " (((", 67, "was never closed"),
    "parser: an operator without its operand": (99, lambda line: line.replace("* args", "* * args"), 46,
                                                "invalid syntax"),
    "tokenizer: a character Python has no use for": (101, lambda line: line + " $", 65, "invalid syntax"),
    "tokenizer: an unterminated string": (101, lambda line: line + ' "abc', 65, "unterminated string"),
    "tokenizer: a tab among spaces": (101, lambda line: "\t" + line.strip(), 1, "inconsistent use of tabs"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_syntax_error_is_named_by_its_own_line_and_column(kind, tree, cli):
    number, change, column, says = CASES[kind]
    text = _break_line(tree, number, change)
    before = snapshot(tree)
    result = cli("diff", "llama", "--target", tree)
    assert result.exit_code == 2, result.output
    first, shown, caret, *rest = result.output.splitlines()
    assert first.startswith(f"porter: error: cannot parse {TRANSFORMER}: a syntax error at line {number}, "
                            f"column {column}: "), result.output
    assert says in first
    assert shown == f"  {number} | {text}"  # the line itself
    assert caret.index("^") == len(f"  {number} | ") + min(column - 1, len(text))  # under the column
    assert f"  file:       {TRANSFORMER}:{number}" in rest
    assert any(line.startswith("  fix:        fix line") for line in rest)
    assert not diff_snapshots(before, snapshot(tree))


def test_libcst_own_position_is_read_from_its_message(tree, cli):
    """libcst's parser gives up a token later than the mistake; porter shows where, from its message."""
    _break_line(tree, 101, lambda line: line + " (((")
    result = cli("apply", "llama", "--target", tree)
    assert result.exit_code == 2
    assert "(libcst gives up at line 102, column 42: expected one of" in result.output


def test_when_only_libcst_rejects_the_file_its_position_is_the_one_reported():
    """Syntax newer than libcst knows compiles under Python: then libcst's position is all there is."""
    valid = "a = 1\nb = 2\nc = 3\n"
    with pytest.raises(cst.ParserSyntaxError) as info:
        cst.parse_module("a = 1\nb = = 2\nc = 3\n")
    error = syntax_error("x.py", valid, info.value)
    assert error.message.startswith("cannot parse x.py: a syntax error at line 2, column 7: parser error: error at 2:6")
    assert error.file == "x.py:2"
    assert "  2 | b = 2\n" in error.message
