"""The battery as a table: each published config.json -> exact / refused by feature, and the
verify figures of its tiny model (issue 17's closing note).

    python -m tests.families.battery_table              # reading of all, the 12 default tiny models
    python -m tests.families.battery_table --slow       # and every other ported config's tiny model
    python -m tests.families.battery_table --no-models  # the reading only (seconds)
    python -m tests.families.battery_table --json FILE  # also the figures as JSON

"exact": `porter spec <folder> --as hf` is, field for field, what transformers' config class
makes of the published file (the check of test_battery_reading.py). "refused": porter's refusal,
the features it names and the closest family. A tiny model's figures come from the check the
default tests run (battery_models.check_config: apply, verify, convert both ways), so a failure
here is a failure there, printed instead of raised.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from porter.cli import app
from tests.families.battery import BATTERY, TINY, TINY_SLOW, Refused, model_folder, published


def reading_row(root: Path, stem: str) -> dict:
    """How porter reads one published config: exact (the family), different (the fields), or refused."""
    from tests.families.test_battery_reading import transformers_reads

    expected = BATTERY[stem]
    result = CliRunner().invoke(app, ["spec", str(model_folder(root, stem)), "--as", "hf"])
    if result.exit_code != 0:
        found = next((line.split(":", 1)[1].strip() for line in result.output.splitlines()
                      if line.strip().startswith("found:")), result.output.strip().splitlines()[0])
        closest = next((line.split("is ", 1)[1].split(" (")[0] for line in result.output.splitlines()
                        if "the closest family porter has is" in line), "?")
        verdict = "refused" if isinstance(expected, Refused) else "REFUSED (expected a port)"
        return {"config": stem, "verdict": verdict, "family": None, "detail": f"{found}; closest: {closest}"}
    theirs, ours = transformers_reads(published(stem)), transformers_reads(json.loads(result.stdout))
    differing = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    family = None if isinstance(expected, Refused) else expected[0]
    if isinstance(expected, Refused):
        verdict = "PORTED (expected a refusal)"
    else:
        verdict = "exact" if not differing else "DIFFERS"
    detail = expected[1] if not differing and not isinstance(expected, Refused) else "fields: " + ", ".join(differing)
    return {"config": stem, "verdict": verdict, "family": family, "detail": detail}


def model_rows(root: Path, groups: dict[str, list[str]]) -> list[dict]:
    """Each tiny model through apply, verify and convert both ways, one sample tree per group."""
    from tests.families.battery_models import check_config, ported_tree

    rows = []
    for group, stems in groups.items():
        tree, folders = ported_tree(root / group, stems)
        for stem in stems:
            started = time.monotonic()
            try:
                figures = check_config(tree, folders[stem], root / group / "verify" / stem)
                rows.append({"config": stem, "passed": True, **figures})
            except AssertionError as failed:
                rows.append({"config": stem, "passed": False, "error": str(failed).splitlines()[0][:300]})
            print(f"  {stem}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return rows


def print_tables(reading: list[dict], models: list[dict]) -> None:
    print("| config | porter's reading | family | what it shows / refusal |")
    print("|---|---|---|---|")
    for row in reading:
        print(f"| {row['config']} | {row['verdict']} | {row['family'] or '-'} | {row['detail']} |")
    if not models:
        return
    print()
    print("| tiny model of | verify | max abs logit diff | argmax | abs loss diff | max abs token-loss diff "
          "| worst probe | round trip max abs logit diff | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in models:
        if not row["passed"]:
            print(f"| {row['config']} | FAILED: {row['error']} | | | | | | | |")
            continue
        print(f"| {row['config']} | passed | {row['max_abs_logit_diff']:.3g} | "
              f"{'identical' if row['argmax_equal'] else 'DIFFERS'} | {row['loss_diff']:.3g} | "
              f"{row['max_abs_token_loss_diff']:.3g} | {row['worst_probe']} | {row['round_trip_logit_diff']:.3g} | "
              f"{row['seconds']} |")
    print()
    for row in models:
        if row["passed"]:
            print(f"{row['config']}:\n  {row['shrunk']}\n  {row['kept']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also every other ported config's tiny model")
    parser.add_argument("--no-models", action="store_true", help="the reading only")
    parser.add_argument("--only", nargs="*", help="tiny models of these configs only")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON too")
    args = parser.parse_args(argv)
    groups = {} if args.no_models else dict(TINY, **({"slow": TINY_SLOW} if args.slow else {}))
    if args.only:
        groups = {g: [s for s in stems if s in args.only] for g, stems in groups.items()}
        groups = {g: stems for g, stems in groups.items() if stems}
    with tempfile.TemporaryDirectory(prefix="battery-") as tmp:
        root = Path(tmp)
        reading = [reading_row(root / "read", stem) for stem in BATTERY]
        models = model_rows(root / "models", groups)
    print_tables(reading, models)
    if args.json:
        args.json.write_text(json.dumps({"reading": reading, "models": models}, indent=2, default=str))
    bad = [r for r in reading if r["verdict"] not in ("exact", "refused")] + [m for m in models if not m["passed"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
