"""Before/after testing of single rewrites, in the manner of libcst's assertCodemod."""

import textwrap

import libcst as cst
import pytest

from porter.errors import AnchorError


def run(rewrite, source: str) -> str:
    module = cst.parse_module(textwrap.dedent(source).lstrip("\n"))
    return rewrite.apply(module, "snippet.py").code


@pytest.fixture
def check():
    """check(make_rewrite, before, after): the rewrite gives `after`, and is stable on it."""

    def _check(make, before: str, after: str) -> None:
        expected = textwrap.dedent(after).lstrip("\n")
        got = run(make(), before)
        assert got == expected, "\n--- got ---\n" + got
        assert run(make(), got) == got, "the rewrite is not idempotent"
        compile(got, "snippet.py", "exec")

    return _check


@pytest.fixture
def refuses():
    """refuses(make_rewrite, source) -> the AnchorError it raises."""

    def _refuses(make, source: str) -> AnchorError:
        with pytest.raises(AnchorError) as info:
            run(make(), source)
        return info.value

    return _refuses


class _Chain:
    """Several rewrites applied one after the other, as the plan applies a file's edits."""

    def __init__(self, makers) -> None:
        self.rewrites = [make() for make in makers]

    def apply(self, module, path):
        for rewrite in self.rewrites:
            module = rewrite.apply(module, path)
        return module


@pytest.fixture
def chain():
    """chain(make_a, make_b) -> a factory of both rewrites in order, for check()."""
    return lambda *makers: (lambda: _Chain(makers))
