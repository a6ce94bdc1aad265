"""Mutation testing: porter on variants of the sample tree either ports them into a model
that passes the model checks, or refuses cleanly with nothing written. Never a silent
broken port. The full run (every variant) is slow; CI runs a few variants of every kind."""

import pytest

from tests.mutation.mutations import all_mutations, ci_subset
from tests.mutation.runner import report, run, summary


def test_the_generator_makes_over_200_distinct_variants():
    mutations = all_mutations()
    assert len(mutations) >= 200
    assert len({m.id for m in mutations}) == len(mutations)
    assert len({m.kind for m in mutations}) >= 10


def _assert_never_broken(outcomes):
    text = report(outcomes)
    print(text)
    figures = summary(outcomes)
    assert figures["broken"] == 0, text
    return figures


def test_mutations_ci_share():
    figures = _assert_never_broken(run(ci_subset()))
    assert figures["ported"] and figures["refused"]  # both outcomes are exercised


@pytest.mark.slow
def test_all_mutations():
    figures = _assert_never_broken(run(all_mutations()))
    assert figures["variants"] >= 200
    assert figures["invalid"] <= figures["variants"] // 20, "too many variants break the tree themselves"
