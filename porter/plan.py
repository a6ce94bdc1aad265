"""From a Spec and a TreeProfile to an ordered list of Edits: a loop over the differences.

Each difference the spec wants (porter/differences/) plans its own switches, edits and template
values; the argument checks they collect are inserted once, where the tree checks its
arguments; then the family's model module and entry point (porter.generated_model). A tree
whose GPT model already implements every model difference behind switches (microsoft HEAD)
gets a model module and an entry point wired to those switches, and no rewrite of its model
code. A spec equal to GPT plans nothing.
"""

from __future__ import annotations

from porter.edits import arguments as A
from porter.generated_model import model_values, plan_model
from porter.planner import Edit, Plan, Planner, rw
from porter.profile import ARGUMENTS, TreeProfile
from porter.spec import Spec

__all__ = ["Edit", "Plan", "make_plan"]


def make_plan(spec: Spec, profile: TreeProfile) -> Plan:
    p = Planner(spec, profile)
    differences = spec.wanted()
    if not any(d.changes_model for d in differences):
        return p.plan(style="none")
    checks_func = p.checks_function
    for difference in differences:
        difference.plan(p)
    for difference in spec.differences:
        if difference not in differences:
            difference.kept(p)
    if p.checks:
        p.edit(ARGUMENTS, "checks", f"validates the new switches where the tree checks its arguments ({checks_func})",
               rw(A.InsertChecks, func=checks_func, checks=p.checks))
    p.values["model"] = model_values(p, {d.name: d in differences for d in spec.differences})
    model_switches = [s for d in differences for s in d.model_switches]
    return p.plan(style=plan_model(p, model_switches))
