"""The three-way merge behind `porter revert --keep-edits`."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from porter.merge import MergeConflict, merge3

BASE = [f"line {i}\n" for i in range(10)]


def edited(lines, at, new, remove=0):
    return lines[:at] + new + lines[at + remove:]


def test_changes_far_apart_combine():
    ours = edited(BASE, 1, ["mine\n"], remove=1)
    theirs = edited(BASE, 7, [], remove=2)
    assert merge3(BASE, ours, theirs) == edited(edited(BASE, 7, [], remove=2), 1, ["mine\n"], remove=1)


def test_overlapping_changes_conflict():
    ours = edited(BASE, 3, ["mine\n"], remove=2)
    theirs = edited(BASE, 4, ["theirs\n"], remove=2)
    with pytest.raises(MergeConflict) as info:
        merge3(BASE, ours, theirs)
    assert info.value.spans == [(4, 6)]


def test_the_same_change_on_both_sides_is_taken_once():
    both = edited(BASE, 2, ["same\n"], remove=1)
    assert merge3(BASE, both, both) == both


def test_insertions_at_one_place_conflict_unless_equal():
    with pytest.raises(MergeConflict):
        merge3(BASE, edited(BASE, 5, ["a\n"]), edited(BASE, 5, ["b\n"]))


def test_an_insertion_at_the_edge_of_a_deletion_is_kept():
    """porter's block removed (theirs), the user's line right after it kept (ours)."""
    theirs = edited(BASE, 3, [], remove=3)
    ours = edited(BASE, 6, ["mine\n"])
    assert merge3(BASE, ours, theirs) == ["line 0\n", "line 1\n", "line 2\n", "mine\n"] + BASE[6:]


lines = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(base=lines, other=lines)
def test_one_sided_merges_take_that_side(base, other):
    assert merge3(base, other, base) == other
    assert merge3(base, base, other) == other


@settings(max_examples=200, deadline=None)
@given(base=st.lists(st.text("xyz", min_size=1).map(lambda s: s + "\n"), min_size=4, max_size=12),
       data=st.data())
def test_disjoint_edits_commute(base, data):
    """An edit in the first half and one in the second half merge to both edits applied."""
    base = [f"{i}:{line}" for i, line in enumerate(base)]
    half = len(base) // 2
    a = data.draw(st.integers(0, half - 1))
    b = data.draw(st.integers(half + 1, len(base) - 1))
    ours = edited(base, a, ["ours\n"], remove=1)
    theirs = edited(base, b, ["theirs 1\n", "theirs 2\n"], remove=1)
    assert merge3(base, ours, theirs) == edited(edited(base, b, ["theirs 1\n", "theirs 2\n"], remove=1), a,
                                                ["ours\n"], remove=1)
