"""Every combination of the spec's switches ports the sample tree into a model that builds,
computes what the spec says (against a reference model) and trains a step (forward and
backward), plain and pipelined; GPT keeps working. The full 2^7 sweep is slow; CI runs a
pairwise-covering share."""

import pytest

from tests.combination.combos import SWITCHES, all_combinations, pairwise, run


def _assert_all_pass(results):
    failed = [r for r in results if not r.ok]
    print(f"{len(results)} combinations: {len(results) - len(failed)} pass, {len(failed)} fail")
    assert not failed, "\n\n".join(f"{r.label}:\n{r.detail}" for r in failed)


def test_pairwise_share_covers_every_pair_of_switch_values():
    chosen = pairwise()
    assert len(chosen) <= 10
    for i, a in enumerate(SWITCHES):
        for b in SWITCHES[i + 1:]:
            assert {(c[a], c[b]) for c in chosen} == {(False, False), (False, True), (True, False), (True, True)}


def test_combinations_pairwise_share():
    _assert_all_pass(run(pairwise()))


@pytest.mark.slow
def test_all_128_combinations():
    combinations = all_combinations()
    assert len(combinations) == 128
    _assert_all_pass(run(combinations))
