"""Whether a norm follows the last transformer layer (GPT: yes, and so every LLaMA-family model).

Spec: `norm.final_norm`. The tree's ParallelTransformer always builds one; a spec without it
makes the generated model replace it by an identity (and its pipe model leave the norm spec
out). No HF family porter verifies lacks it.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.schema import flag


class FinalNorm(Difference):
    name = "no_final_norm"
    fields = {"norm.final_norm": flag(True, help="a norm after the last layer")}

    def wanted(self, spec):
        return not spec["norm.final_norm"]

    def plan(self, p):
        p.describe_model("no norm after the last layer")

    def layout(self, profile, spec):
        return {"final_norm_present": spec["norm.final_norm"]}
