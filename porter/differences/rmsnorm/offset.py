"""An RMSNorm weight stored as an offset: the scale is (offset + w), formed in fp32 (Gemma: 1 + w).

Spec: `norm.offset` (GPT and LLaMA: 0; Gemma: 1). Gemma normalises x * rsqrt(mean(x^2) + eps)
and scales by (1 + w.float()) before casting back; its stored w is zero for a unit scale.
porter's shared rmsnorm.py takes the offset from the tree's `--rmsnorm-weight-offset` (the
family's entry point sets it; 0 when absent), so several families share one norm module,
and starts the weight at 1 - offset, so a fresh model scales by 1. Conversion copies w as
it is: HF's stored weight is Megatron's. Only porter's own RMSNorm has the offset: a tree
with its own RMSNorm (microsoft's --normalization) is refused.
HF: none (GemmaRMSNorm is implicit in the modeling code; the family's spec says it).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.rmsnorm import RMSNORM_FILE
from porter.planner import unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "norm_offset"


class NormOffset(Difference):
    name = SWITCH
    model_switches = ('norm_offset',)
    fields = {"norm.offset": number(0.0, low=None, help="RMSNorm scales by (offset + weight): Gemma's 1")}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--rmsnorm-weight-offset", "rmsnorm_weight_offset", 1.0, "args.rmsnorm_weight_offset",
                NETWORK,
                (("type", "float"), ("default", "0.0"),
                 ("help", "'RMSNorm scales by (offset + weight), in fp32: 0 (LLaMA), 1 (Gemma); "
                          "the weight starts at 1 - offset.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec["norm.offset"] != 0.0

    def validate(self, values, given, fail):
        if values["norm.offset"] != 0.0 and values["norm.type"] != "rmsnorm":
            raise fail("norm.offset", f"norm.offset = {values['norm.offset']:g} with norm.type = {values['norm.type']!r}",
                       "set norm.type = 'rmsnorm', or remove norm.offset",
                       message="inconsistent spec: the weight offset is RMSNorm's")

    def plan(self, p):
        p.describe_model("RMSNorm scales by (offset + weight) in fp32 (--rmsnorm-weight-offset; Gemma: 1 + w)")
        if p.implemented("rmsnorm") or not (RMSNORM_FILE in p.profile.generated or not p.facts("rmsnorm").exported):
            raise unsupported("the tree has its own RMSNorm, which has no weight offset", TRANSFORMER,
                              "porter's own megatron/model/rmsnorm.py at every norm site",
                              "the tree's RMSNorm class (megatron.model exports it)")
        p.switch(SWITCH, on=p.spec["norm.offset"], field="norm.offset")
