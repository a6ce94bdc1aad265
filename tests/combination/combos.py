"""Every combination of the spec's independent switches, as specs made by parse_spec.

Seven switches, each with GPT's value and the other one: activation, position embedding,
norm, final norm, tied embeddings, MLP width rule, bias — 2^7 = 128 specs. Values that
only matter with a switch on are set away from their defaults (rope_theta 50000, multiple_of
8, eps 1e-6 with RMSNorm) so the checks see that they reach the model. The tokenizer is
SentencePiece in all of them (the model checks train none, but build one).

`pairwise()` picks a few combinations that hold every pair of values of every two
switches at least once (a covering array of 6 rows): the fast share for CI.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from porter.catalog import parse
from porter.errors import PorterError
from porter.port import apply
from porter.spec import Spec
from tests.helpers.port_check import check_trees, job
from tests.helpers.trees import copy_sample

SWITCHES = ("swiglu", "rotary", "rmsnorm", "no_final_norm", "untied", "ffn_rule", "no_bias")


def spec_for(on: dict[str, bool]) -> Spec:
    label = "".join("1" if on[s] else "0" for s in SWITCHES)
    data = {
        "model": {"name": "combo", "class_prefix": "Combo", "description": f"switches {label}"},
        "activation": {"type": "swiglu" if on["swiglu"] else "gelu"},
        "position_embedding": {"type": "rotary", "rope_theta": 50000.0} if on["rotary"] else {"type": "learned"},
        "norm": {"type": "rmsnorm" if on["rmsnorm"] else "layernorm", "final_norm": not on["no_final_norm"],
                 "eps": 1e-6 if on["rmsnorm"] else 1e-5},
        "embeddings": {"tied": not on["untied"]},
        "mlp": {"ffn_hidden_size": "2/3*4h", "multiple_of": 8} if on["ffn_rule"] else {"ffn_hidden_size": "4h"},
        "linear": {"bias": not on["no_bias"]},
        "tokenizer": {"type": "sentencepiece"},
    }
    return parse(data, f"<combination {label}>")


def label(on: dict[str, bool]) -> str:
    return ",".join(s for s in SWITCHES if on[s]) or "gpt-switches"


def all_combinations() -> list[dict[str, bool]]:
    return [dict(zip(SWITCHES, values, strict=True)) for values in itertools.product((False, True), repeat=len(SWITCHES))]


def pairwise() -> list[dict[str, bool]]:
    """A covering array of strength 2 over the switches in 6 rows, the fewest that cover every
    pair of 5 to 10 boolean switches: switch j is on in the j-th 3-subset of rows 1..5 (row 0,
    every switch off, is GPT's own switches). Two distinct 3-subsets of 5 rows share one or two
    rows, so any two switches are on together, off together and each on without the other."""
    subsets = list(itertools.combinations(range(1, 6), 3))
    assert len(SWITCHES) <= len(subsets)
    return [{s: row in subsets[j] for j, s in enumerate(SWITCHES)} for row in range(6)]


@dataclass
class Result:
    label: str
    ok: bool
    detail: str


def _port(args) -> tuple[str, str | None, dict | None]:
    folder, index, on = args
    tree = copy_sample(Path(folder) / f"c{index:03d}")
    spec = spec_for(on)
    try:
        apply(spec, tree)
    except PorterError as exc:
        return label(on), f"porter refused: {exc}", None
    except Exception:
        return label(on), "porter crashed:\n" + traceback.format_exc()[-3000:], None
    return label(on), None, job(label(on), spec, tree)


def run(combinations: list[dict[str, bool]], processes: int | None = None) -> list[Result]:
    import multiprocessing

    processes = processes or os.cpu_count() or 1
    folder = tempfile.mkdtemp(prefix="porter-combinations-")
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            ported = pool.map(_port, [(folder, i, on) for i, on in enumerate(combinations)], chunksize=1)
        checked = check_trees([j for _, _, j in ported if j is not None], processes=processes)
        results = []
        for name, refused, job_ in ported:
            if job_ is None:
                results.append(Result(name, False, refused))
            else:
                outcome = checked[job_["id"]]
                results.append(Result(name, outcome["ok"], "\n".join(outcome["problems"])))
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)
