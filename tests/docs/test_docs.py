"""Every command shown in the docs runs, and prints what the docs say it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.runner import REPO, Block, blocks, commands, how_checked, matches, run_page

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def setup_commands() -> list[str]:
    """The README's set-up commands: they make venvs and install, so the doc run skips them
    (CI runs the second one through .ci/run; tests/docs/test_ci_run.py checks that)."""
    return [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("python3 -m venv ")]


# Installing porter in a CI workflow (docs/ci.md): machine set-up, not run here.
CI_INSTALL = 'pip install torch==2.13.0 "${PORTER_SOURCE}[parity]"'

# The extra of pyproject.toml each command needs beyond porter's core (verify and convert
# build HF models with transformers; smoke and demo train with torch and DeepSpeed).
NEEDS = {"smoke": "train", "demo": "train", "verify": "parity", "convert": "parity"}
INSTALLED = re.compile(r"pip install .*?\[([a-z,]+)\]")


def test_the_readme_has_its_two_setup_commands():
    first, second = setup_commands()
    assert first.endswith(".venv/bin/porter demo")
    assert second.endswith(".venv/bin/python -m pytest")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_on_the_page_runs_as_shown(page: Path, tmp_path: Path):
    ran, failures = run_page(page, tmp_path, excluded={*setup_commands(), CI_INSTALL})
    assert ran > 0, f"{page.name} shows no command"
    assert not failures, "\n\n".join(failures)


def test_nothing_but_the_setup_commands_is_skipped():
    shown = [c.command for page in PAGES for b in blocks(page) if "file" not in b.attrs for c in commands(b)]
    skipped = [c for c in shown if c in {*setup_commands(), CI_INSTALL}]
    assert sorted(skipped) == sorted([*setup_commands(), CI_INSTALL])


def test_transcripts_match_decimals_to_the_tolerance_and_elisions_but_nothing_else():
    assert matches("loss 6.9551\n...\ndone", "loss 6.9558\nstep 2\nstep 3\ndone\n")  # within 1e-3
    assert not matches("loss 6.9551\n...\ndone", "loss 7.1\nstep 2\ndone\n")  # a figure the docs state wrong
    assert not matches("loss 6.9551", "loss 6.9563")
    assert matches("loss 6.9551", "loss 6.9563", tolerance=1e-2)
    assert matches("a\n...\nb", "a\nb")
    assert not matches("loss 6.9551", "loss 6")
    assert not matches("+50 -2", "+51 -2")
    assert not matches("a\nb", "a\nb\nc")


def test_every_block_is_run_or_says_why_not():
    """Each block of the docs is run, written for the commands after it, or marked: not-run="why",
    or checked-by=TEST (a test that reads the block with checked_block() and checks it)."""
    excluded = {*setup_commands(), CI_INSTALL}
    unexplained = [f"{p.name}:{b.line}" for p in PAGES for b in blocks(p) if how_checked(b, excluded) is None]
    assert not unexplained, f"blocks neither run nor marked not-run=\"why\" or checked-by=TEST: {unexplained}"
    for block in (b for p in PAGES for b in blocks(p) if "checked-by" in b.attrs):
        file, _, test = block.attrs["checked-by"].partition("::")
        assert f'checked_block("{test}")' in (REPO / file).read_text(), f"{block.page}:{block.line}: {file} does not check it"
    readme = {b.line: how_checked(b, excluded) for b in blocks(REPO / "README.md")}
    assert "checked by tests/verify/test_verify_breaks.py" in " ".join(v for v in readme.values() if v)


def _extras(name: str) -> set[str]:
    """An extra of pyproject.toml and the extras it brings (porter[train] in parity's list)."""
    import tomllib

    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    found = {name}
    for requirement in table[name]:
        inner = re.fullmatch(r"porter\[([a-z]+)\]", requirement)
        if inner:
            found |= _extras(inner.group(1))
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_install_shown_brings_what_the_commands_after_it_need(page: Path):
    installed: set[str] | None = None  # None: the page installs nothing (the reader has porter[all])
    for block in blocks(page):
        for command in commands(block):
            for extras in INSTALLED.findall(command.command):
                installed = (installed or set()).union(*(_extras(e) for e in extras.split(",")))
            words = command.command.split()
            if installed is not None and words[:1] == ["porter"] and words[1] in NEEDS:
                assert NEEDS[words[1]] in installed, (
                    f"{page.name}:{command.line}: `porter {words[1]}` needs porter[{NEEDS[words[1]]}], "
                    f"the page installs {sorted(installed)}")


def test_runner_reads_blocks_commands_statuses_and_files(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "```toml file=x.toml\n[model]\n```\n"
        "```sh\nporter list   # the specs\nporter diff llama \\\n  --stat   # exit status 1\n```\n"
        "```console\n$ echo hi; echo \"exit status 1\"\nhi\nexit status 1\n```\n"
        "```yaml\nsteps:\n  - run: |\n      porter list\n      porter diff llama  # exit status 1\n```\n"
    )
    found = blocks(page)
    assert [b.lang for b in found] == ["toml", "sh", "console", "yaml"]
    assert found[0].attrs == {"file": "x.toml"}
    assert [(c.command, c.expected_status) for c in commands(found[1])] == [
        ("porter list", 0), ("porter diff llama --stat", 1)]
    (transcript,) = commands(found[2])
    assert transcript.expected_output == "hi\nexit status 1"
    assert [(c.command, c.expected_status) for c in commands(found[3])] == [("porter list", 0), ("porter diff llama", 1)]
    assert isinstance(found[0], Block)


def test_the_spec_page_documents_every_field_of_the_schema():
    from porter.catalog import fields

    text = (REPO / "docs" / "writing-a-spec.md").read_text()
    rows = {name: gpt for name, _, gpt in re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \| (.*?) \| (.*?) \|", text, flags=re.M)}
    schema = fields()
    assert set(rows) == set(schema)
    for name, field in schema.items():
        shown = rows[name].split(" ")[0]  # `None` (2): the value, then what unset means
        assert shown in (f"`{field.base!r}`", f"`{str(field.base).lower()}`"), (
            f"{name}: GPT's value is {field.base!r}, the page says {rows[name]}")
