"""The ported tree as a smoke run sees it, made once per run: the spec at the smoke size, the
tree's profile, and that spec's plan for the tree."""

from __future__ import annotations

from dataclasses import dataclass

from porter.catalog import profile_of
from porter.plan import make_plan
from porter.planner import Plan
from porter.profile import TreeProfile
from porter.profile.features import SENTENCEPIECE_CHOICE
from porter.source import SourceTree
from porter.spec import Spec
from porter.treerun.shape import RunShape, tiny_spec


@dataclass(frozen=True)
class SmokePort:
    spec: Spec  # at the smoke size (porter.treerun.shape.tiny_spec): the entry point's defaults are a real model's
    profile: TreeProfile
    plan: Plan

    @classmethod
    def of(cls, spec: Spec, tree: SourceTree, shape: RunShape) -> SmokePort:
        """`spec` (its names in this tree: porter.naming.spec_in_tree) at `shape`'s size."""
        profile = profile_of(tree)
        sized = tiny_spec(spec, shape)
        return cls(sized, profile, make_plan(sized, profile))

    @property
    def tokenizer_type(self) -> str:
        """The --tokenizer-type the port's entry point sets (porter's choice, or the tree's it reuses)."""
        return self.plan.defaults.get("tokenizer_type", SENTENCEPIECE_CHOICE)
