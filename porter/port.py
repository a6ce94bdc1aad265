"""The port as one pipeline: spec + tree -> profile -> plan -> changes (in memory).

`porter diff` shows the changes; `porter apply` checks them and writes them. Both call
`prepare()` and nothing else, so a diff is exactly what apply would write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from porter.plan import Plan, make_plan
from porter.profile import TreeProfile, build_profile
from porter.source import SourceTree
from porter.spec import Spec, load_spec
from porter.workspace import FileChange, Workspace


@dataclass
class Port:
    spec: Spec
    tree: SourceTree
    profile: TreeProfile
    plan: Plan
    changes: list[FileChange]

    @property
    def root(self) -> Path:
        return self.tree.root


def prepare(model: str | Spec, target: str | Path) -> Port:
    spec = model if isinstance(model, Spec) else load_spec(model)
    tree = SourceTree.open(target)
    profile = build_profile(tree)
    plan = make_plan(spec, profile)
    changes = Workspace(tree).render(plan)
    return Port(spec=spec, tree=tree, profile=profile, plan=plan, changes=changes)
