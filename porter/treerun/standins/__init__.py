"""Stand-ins: what a run of a real tree on a CPU machine lacks, supplied in the run only.

Real Megatron-DeepSpeed trees import or call pieces that a CPU machine with upstream
packages does not have: a module DeepSpeed 0.19 removed, Habana's DeepSpeed fork's
options, CUDA-only builders, numpy aliases numpy 2 removed, a torchvision that cannot load
beside CPU torch. None of them concerns the port. `porter smoke` and `porter verify` run on a
scratch copy of the tree (porter.treerun.scratch), and with `--cpu` (automatic without CUDA) each
child process installs the stand-ins below through porter.treerun.standins.runtime: a stand-in
acts only where the real piece is missing or fails, and says so; the parent prints the
ones a run used. The tree's files are never changed.

One module per stand-in, each with NAME, WHAT (the line a user reads), `applies(tree)`
(does the tree's source use the piece at all?) and `install(hooks)` (the child's side).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV_NAMES = "PORTER_STANDINS"  # comma-separated names of the stand-ins a child process installs
ENV_REPORT = "PORTER_STANDINS_REPORT"  # the file each stand-in used is written to, one line each

MODULES = (
    "deepspeed_compression",
    "vision",
    "tutel",
    "moe_gather_gloo",
    "numpy_aliases",
    "torch_six",
    "flash_attn_builder",
    "habana_mark_step",
    "use_hpu",
    "device_rng",
    "current_device",
    "accelerator_device",
    "deepspeed_config_twice",
    "apex_optimizers",
    "apex_multi_tensor",
    "apex_norms",
    "mpi4py_one_process",
    "dataset_helpers",
    "jit_warmup",
)


@dataclass(frozen=True)
class StandIn:
    name: str
    what: str
    module: str  # the module whose install(hooks) puts it in place in a child process


def _load(short: str):
    return importlib.import_module(f"porter.treerun.standins.{short}")


def all_standins() -> list[StandIn]:
    found = []
    for short in MODULES:
        module = _load(short)
        found.append(StandIn(module.NAME, module.WHAT, module.__name__))
    return found


def by_name(name: str) -> StandIn:
    for standin in all_standins():
        if standin.name == name:
            return standin
    raise KeyError(name)


def offered(tree: Path) -> list[StandIn]:
    """The stand-ins a run of this tree may need: those whose piece the tree's source uses."""
    return [s for s in all_standins() if getattr(importlib.import_module(s.module), "applies", lambda _: True)(tree)]


def environment(standins: list[StandIn], report: Path) -> dict[str, str]:
    """What a child process needs to install `standins` (porter.treerun.standins.runtime reads it)."""
    return {ENV_NAMES: ",".join(s.name for s in standins), ENV_REPORT: str(report)}


def read_used(report: Path) -> list[StandIn]:
    """The stand-ins that acted in a run, in the order they first did."""
    if not Path(report).exists():
        return []
    names = list(dict.fromkeys(line.strip() for line in Path(report).read_text().splitlines() if line.strip()))
    return [by_name(n) for n in names]


@lru_cache(maxsize=32)
def tree_sources(tree: str) -> str:
    """The text of the tree's Python files: its top-level scripts and megatron/."""
    root = Path(tree)
    files = [*root.glob("*.py"), *(root / "megatron").rglob("*.py")]
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())


def tree_mentions(tree: Path, *needles: str) -> bool:
    """Does any Python file of the tree (its top-level scripts, megatron/) contain one of needles?"""
    text = tree_sources(str(Path(tree).resolve()))
    return any(n in text for n in needles)
