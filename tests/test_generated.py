"""generated/ is porter's output on the sample tree; it must match what porter makes now."""

from pathlib import Path

from porter.golden import drift


def test_generated_has_no_drift():
    diff = drift(Path(__file__).resolve().parent.parent / "generated")
    assert not diff, "generated/ is stale; run `python -m porter.golden --write` and review:\n" + diff
