"""Run porter over variants of the sample tree and sort each into one outcome.

For each variant: porter apply (in-process, on a fresh copy). Then

- refused: a PorterError naming file, construct and fix, and the tree byte-identical;
- ported: the port was written, `revert` gives the variant back byte for byte, and the
  ported copy passes the model checks (tests/helpers/model_check.py: GPT still GPT; the
  ported model, plain and pipe, built, shaped and computing as the spec says, forward and
  backward, checkpoint round trip);
- broken: anything else — a crash, a refusal that wrote something or does not say what to
  do, a revert that is not byte-identical, or a port that fails the model checks (a silent
  broken port);
- invalid: the port failed the model checks, but so does the variant itself before porting
  (its GPT does not run): the mutation broke the tree, not porter. Reported, not counted.

`run(mutations)` returns the outcomes; `summary(outcomes)` the figures.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from porter.catalog import load_spec
from porter.errors import PorterError
from porter.port import apply
from porter.revert import revert
from tests.helpers.port_check import check_trees, job
from tests.helpers.trees import copy_sample, diff_snapshots, snapshot
from tests.mutation.mutations import Mutation


@dataclass
class Outcome:
    id: str
    kind: str
    description: str
    status: str  # ported | refused | broken | invalid
    detail: str = ""


_MUTATIONS: list[Mutation] = []  # the list the forked workers index into
_FOLDER = Path()


def _port(index: int) -> tuple[Outcome, dict | None]:
    mutation = _MUTATIONS[index]
    folder = _FOLDER / f"v{index:03d}"
    tree = copy_sample(folder / "tree")

    def outcome(status: str, detail: str = "") -> Outcome:
        return Outcome(mutation.id, mutation.kind, mutation.description, status, detail)

    try:
        renames = mutation.apply(tree)
    except Exception:
        return outcome("invalid", "the mutation does not apply:\n" + traceback.format_exc()[-1500:]), None
    before = snapshot(tree)
    try:
        port = apply(load_spec("llama"), tree)
    except PorterError as exc:
        written = diff_snapshots(before, snapshot(tree))
        if written:
            return outcome("broken", "refused but changed the tree: " + "; ".join(written[:5])), None
        if not (exc.file and exc.construct and exc.fix):
            return outcome("broken", f"a refusal that does not name file, construct and fix: {exc}"), None
        return outcome("refused", f"{exc.file}: {exc.message}"), None
    except Exception:
        return outcome("broken", "crash:\n" + traceback.format_exc()[-3000:]), None
    if not port.changes:
        return outcome("broken", "porter found nothing to do in an un-ported tree"), None
    ported = folder / "ported"
    shutil.copytree(tree, ported, symlinks=True)
    try:
        revert(tree)
    except PorterError as exc:
        return outcome("broken", f"revert refused: {exc}"), None
    undone = diff_snapshots(before, snapshot(tree))
    if undone:
        return outcome("broken", "revert is not byte-identical: " + "; ".join(undone[:5])), None
    return outcome("ported"), job(mutation.id, load_spec("llama"), ported, renames)


def _baseline(index: int) -> dict:
    """A check job for the un-ported variant: does its GPT run at all?"""
    tree = copy_sample(_FOLDER / f"baseline{index:03d}")
    renames = _MUTATIONS[index].apply(tree)
    return job(_MUTATIONS[index].id, load_spec("llama"), tree, renames, gpt_only=True)


def run(mutations: list[Mutation], processes: int | None = None, keep: bool = False) -> list[Outcome]:
    global _MUTATIONS, _FOLDER
    processes = processes or os.cpu_count() or 1
    _MUTATIONS = list(mutations)
    _FOLDER = Path(tempfile.mkdtemp(prefix="porter-mutations-"))
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes) as pool:
            ported = pool.map(_port, range(len(_MUTATIONS)), chunksize=1)
        outcomes = [o for o, _ in ported]
        jobs = [j for _, j in ported if j is not None]
        checked = check_trees(jobs, processes=processes)
        failed = [i for i, (o, j) in enumerate(ported) if j is not None and not checked[j["id"]]["ok"]]
        baselines = check_trees([_baseline(i) for i in failed], processes=processes) if failed else {}
        for o, j in ported:
            if j is None:
                continue
            result = checked[j["id"]]
            if result["ok"]:
                continue
            problems = "\n".join(result["problems"])
            if not baselines[o.id]["ok"]:
                o.status, o.detail = "invalid", "the variant's own GPT fails too:\n" + "\n".join(baselines[o.id]["problems"])
            else:
                o.status, o.detail = "broken", "the port fails the model checks (a silent broken port):\n" + problems
        return outcomes
    finally:
        if not keep:
            shutil.rmtree(_FOLDER, ignore_errors=True)


def summary(outcomes: list[Outcome]) -> dict:
    counts = Counter(o.status for o in outcomes)
    by_kind: dict[str, Counter] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, Counter())[o.status] += 1
    return {
        "variants": len(outcomes),
        "ported": counts["ported"],
        "refused": counts["refused"],
        "broken": counts["broken"],
        "invalid": counts["invalid"],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
    }


def report(outcomes: list[Outcome], path: str | None = None) -> str:
    """A readable report; also written as JSON to `path` (or $PORTER_MUTATION_REPORT) when given."""
    figures = summary(outcomes)
    lines = [f"{figures['variants']} variants: {figures['ported']} ported OK, {figures['refused']} refused cleanly, "
             f"{figures['broken']} broken, {figures['invalid']} invalid (the mutation broke the tree itself)"]
    for kind, counts in figures["by_kind"].items():
        lines.append(f"  {kind:20s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for o in outcomes:
        if o.status in ("broken", "invalid"):
            lines.append(f"{o.status.upper()} {o.id}: {o.description}\n    " + o.detail.replace("\n", "\n    ")[:3000])
    path = path or os.environ.get("PORTER_MUTATION_REPORT")
    if path:
        Path(path).write_text(json.dumps({"summary": figures, "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    return "\n".join(lines)
