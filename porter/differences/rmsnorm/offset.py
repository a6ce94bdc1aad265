"""An RMSNorm weight stored as an offset: the scale is (offset + w), formed in fp32 (Gemma: 1 + w).

Spec: `norm.offset` (GPT and LLaMA: 0; Gemma: 1). Gemma normalises x * rsqrt(mean(x^2) + eps)
and scales by (1 + w.float()) before casting back; its stored w is zero for a unit scale.
porter's shared rmsnorm.py takes the offset from the tree's `--rmsnorm-weight-offset` (the
family's entry point sets it; 0 when absent), so several families share one norm module,
and starts the weight at 1 - offset, so a fresh model scales by 1. Conversion copies w as
it is: HF's stored weight is Megatron's. A tree with an RMSNorm of its own (microsoft's
--normalization rmsnorm: apex's, or its rmsnorm.py) keeps it: porter's RMSNorm is written
under a free name (rmsnorm.py, or rmsnorm_porter.py beside the tree's), imported into the model
files as OffsetRMSNorm, and every method that builds the tree's class (each norm site, the
pipe's final `LayerSpec`) builds porter's instead when the offset is on; so does the
generated model's final norm.
HF: none (GemmaRMSNorm is implicit in the modeling code; the family's spec says it).
"""

from __future__ import annotations

import libcst as cst

from porter.cst.nodes import code, expression
from porter.differences.base import Difference
from porter.differences.rmsnorm import (
    FREE_RMSNORM_FILE,
    RMSNORM_FILE,
    create_porter_rmsnorm,
    porter_rmsnorm_file,
)
from porter.differences.rmsnorm import rewrites as R
from porter.differences.rmsnorm.offset_sites import OFFSET_CLASS, NormSite, norm_sites
from porter.edits.imports import InsertImport
from porter.planner import rw, unsupported
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

    def detect(self, parsed):
        return norm_sites(parsed)

    def plan(self, p):
        p.describe_model("RMSNorm scales by (offset + weight) in fp32 (--rmsnorm-weight-offset; Gemma: 1 + w)")
        p.switch(SWITCH, on=p.spec["norm.offset"], field="norm.offset")
        implemented = p.implemented("rmsnorm")
        if not implemented and (RMSNORM_FILE in p.profile.generated or not p.facts("rmsnorm").exported):
            return  # porter's own RMSNorm is built at every norm site: it takes the offset from the switch
        sites = self._sites(p, implemented)
        file = porter_rmsnorm_file(p)
        if file is None:
            raise unsupported(f"the tree's RMSNorm has no weight offset, and both {RMSNORM_FILE} and "
                              f"{FREE_RMSNORM_FILE} (where porter would write its offset RMSNorm) are the tree's own",
                              sites[0].file, f"a free {RMSNORM_FILE} or {FREE_RMSNORM_FILE} for porter's RMSNorm",
                              f"the tree's {RMSNORM_FILE} and {FREE_RMSNORM_FILE}")
        create_porter_rmsnorm(p, file, "RMSNorm with the weight offset the tree's own RMSNorm lacks"
                              + ("" if file == RMSNORM_FILE else f"; {RMSNORM_FILE} is the tree's own"), feature=SWITCH)
        source = f"from {file.removesuffix('.py').replace('/', '.')} import RMSNorm as {OFFSET_CLASS}"
        test = p.tests[SWITCH]
        for path in dict.fromkeys(s.file for s in sites):
            p.edit(path, SWITCH, "imports porter's RMSNorm (it has the weight offset) beside the tree's",
                   rw(InsertImport, source=source, after=next(s.name for s in sites if s.file == path)))
        for site in sites:
            where = f"{site.cls}.{site.func}" if site.cls else site.func
            p.edit(site.file, SWITCH, f"{where} builds porter's RMSNorm instead of the tree's {site.name} when "
                   "the weight offset is on (the tree's scales by w alone)",
                   rw(R.ChooseOffsetNorm, cls=site.cls, func=site.func, tree=site.name, test=test))
        if p.final_norm is not None:  # the generated model's final norm
            norm, imports = p.final_norm
            p.final_norm = (_offset_chosen(norm, test), lambda layernorm: [*imports(layernorm), source])

    def _sites(self, p, implemented) -> list[NormSite]:
        """The methods that build the tree's own RMSNorm, where the tree's switch chooses it."""
        if not implemented:
            raise unsupported("the tree exports an RMSNorm of its own, which has no weight offset, and no switch "
                              "of its own chooses it", TRANSFORMER,
                              "porter's own megatron/model/rmsnorm.py at every norm site, or the tree's "
                              "RMSNorm chosen by its own option (microsoft's --normalization)",
                              "the tree's RMSNorm class (megatron.model exports it), chosen by porter's switch")
        sites = list(p.facts(self.name).sites)
        if not sites:
            raise unsupported("the tree has its own RMSNorm, which has no weight offset, and porter finds no "
                              "method of the model files that builds it", TRANSFORMER,
                              "`RMSNorm(...)` or `LayerSpec(RMSNorm, ...)` (a class imported at top level) "
                              "in the model files' methods", "no method reading an imported RMSNorm class")
        return sites


def _offset_chosen(norm: str, test: str) -> str:
    """The norm class expression with the tree's RMSNorm read as (OffsetRMSNorm if test else RMSNorm)."""

    class Chosen(cst.CSTTransformer):
        def leave_Name(self, original, updated):
            return expression(f"({OFFSET_CLASS} if {test} else RMSNorm)") if original.value == "RMSNorm" else updated

    return code(expression(norm).visit(Chosen()))
