"""RMSNorm at every norm site, the final norm included; no weight decay on its weights.

Spec: `norm.type` (GPT: layernorm). Trees spell the switch as porter's
`--layernorm-type rmsnorm` or microsoft's `--normalization rmsnorm` (implemented, with its own
RMSNorm class). When porter adds it: an RMSNorm module exported from megatron.model right
after LayerNorm (before gpt_model: the circular import), every norm site of the transformer
and the GPT pipe's final norm chosen by the switch, and the optimizer's no-weight-decay group
widened to RMSNorm.
HF: every LLaMA-family config (RMSNorm is implicit in the modeling code).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.rmsnorm import detect
from porter.differences.rmsnorm import rewrites as R
from porter.edits.imports import FallbackImport, ImportNameAlongside, InsertImport
from porter.planner import rw, unsupported
from porter.profile import GPT_MODEL, MODEL_INIT, OPTIMIZER, TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import choice

RMSNORM_FILE = "megatron/model/rmsnorm.py"
FREE_RMSNORM_FILE = "megatron/model/rmsnorm_porter.py"  # porter's, where the tree has an rmsnorm.py of its own
# What porter's RMSNorm takes: the hidden size, eps, and the keywords trees pass their LayerNorm
# (rmsnorm.py.j2 here says what each does).
RMSNORM_KEYWORDS = ("hidden_size", "eps", "sequence_parallel", "no_persist_layer_norm", "apply_layernorm_1p")


def porter_rmsnorm_file(p) -> str | None:
    """Where porter's RMSNorm module goes in this tree: megatron/model/rmsnorm.py unless the tree
    has an rmsnorm.py of its own, then rmsnorm_porter.py; None when both are the tree's own."""
    generated = p.profile.generated
    if not p.facts("rmsnorm").own_file or RMSNORM_FILE in generated:
        return RMSNORM_FILE
    if p.profile.tree.exists(FREE_RMSNORM_FILE) and FREE_RMSNORM_FILE not in generated:
        return None
    return FREE_RMSNORM_FILE


def create_porter_rmsnorm(p, file: str, reason: str, feature: str = "rmsnorm") -> None:
    """Plan porter's RMSNorm module at `file` once (a second difference needing it reuses the first's)."""
    if not any(e.file == file and e.template == "rmsnorm.py.j2" for e in p.edits):
        p.create(file, feature, reason, "rmsnorm.py.j2")


class RMSNormDifference(Difference):
    name = "rmsnorm"
    model_switches = ('rmsnorm',)
    fields = {"norm.type": choice("layernorm", "layernorm", "rmsnorm", help="norm class")}
    spellings = {
        "rmsnorm": (
            Spelling(
                "rmsnorm", "--layernorm-type", "layernorm_type", "rmsnorm",
                "args.layernorm_type == 'rmsnorm'", NETWORK,
                (("type", "str"), ("default", "'layernorm'"), ("choices", "['layernorm', 'rmsnorm']"),
                 ("help", "'Norm at every transformer norm site, the final norm included.'")),
            ),
            tree_spelling("rmsnorm", "--normalization", "normalization", "rmsnorm", "args.normalization == 'rmsnorm'",
                          ((TRANSFORMER, "normalization"),)),
            # Habana's hand port (7086aadb): the option porter also adds, registered its own way.
            tree_spelling("rmsnorm", "--layernorm-type", "layernorm_type", "rmsnorm", "args.layernorm_type == 'rmsnorm'",
                          ((TRANSFORMER, "RMSNorm"),)),
        ),
    }

    def detect(self, parsed):
        return detect.detect(parsed)

    def wanted(self, spec):
        return spec["norm.type"] == "rmsnorm"

    def plan(self, p):
        p.describe_model("RMSNorm at every norm site, the final norm included")
        p.switch("rmsnorm")
        test = p.tests["rmsnorm"]
        p.final_norm = (f"RMSNorm if {test} else LayerNorm", self._model_norm_imports(p))
        repaired = self.repair_unavailable(p)
        if p.implemented("rmsnorm"):
            return
        model = p.model
        own = RMSNORM_FILE in p.profile.generated or not p.facts(self.name).exported
        if own:
            p.edit(MODEL_INIT, "rmsnorm", "exports RMSNorm right after LayerNorm, before gpt_model (circular import)",
                   rw(InsertImport, source="from .rmsnorm import RMSNorm", after="LayerNorm"))
        else:
            p.reuse("rmsnorm", "the tree's own RMSNorm class (megatron.model exports it)")
        for file in (TRANSFORMER, GPT_MODEL, OPTIMIZER):
            source = model.layernorm_imports.get(file)
            if source is None:
                continue
            if source.startswith("from megatron.model import"):
                p.edit(file, "rmsnorm", "imports RMSNorm beside LayerNorm",
                       rw(ImportNameAlongside, module="megatron.model", anchor="LayerNorm", name="RMSNorm"))
            else:  # e.g. `from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm`
                p.edit(file, "rmsnorm", "imports RMSNorm from its module, after LayerNorm's import (the file's style)",
                       rw(InsertImport, source="from megatron.model.rmsnorm import RMSNorm", after="LayerNorm"))
        p.names_for(TRANSFORMER, "rmsnorm")
        for cls in ("ParallelTransformerLayer", "ParallelTransformer"):
            p.edit(TRANSFORMER, "rmsnorm", f"{cls}'s norm sites follow the norm switch",
                   rw(R.ChooseNormClass, cls=cls, test=test, accepts=RMSNORM_KEYWORDS))
        p.names_for(GPT_MODEL, "rmsnorm")
        p.edit(GPT_MODEL, "rmsnorm", "the GPT pipe's final norm follows the norm switch",
               rw(R.PipeNormChoice, cls="GPTModelPipe", test=test))
        if model.layernorm_imports.get(OPTIMIZER) is not None:
            p.edit(OPTIMIZER, "rmsnorm", "RMSNorm weights get no weight decay, like LayerNorm's",
                   rw(R.NoWeightDecayFor, func="_get_params_for_weight_decay_optimization"))
        if own and not repaired:
            p.create(RMSNORM_FILE, "rmsnorm", "RMSNorm", "rmsnorm.py.j2")

    def _model_norm_imports(self, p):
        """The imports the generated model's final norm needs next to the tree's LayerNorm: the
        tree's own RMSNorm class where megatron.model exports none (the one its model files guard
        with an import fallback: apex's MixedFusedRMSNorm, porter's RMSNorm without apex),
        megatron.model's, or porter's rmsnorm.py."""
        tree_class = None
        if p.implemented("rmsnorm") and not p.facts(self.name).exported:
            tree_class = next((f"from {site.file.removesuffix('.py').replace('/', '.')} import {site.name} as RMSNorm"
                               for file in (GPT_MODEL, TRANSFORMER) for site in p.facts(self.name).unavailable
                               if site.file == file), None)

        def imports(layernorm: list[str]) -> list[str]:
            if tree_class is not None:
                return [*layernorm, tree_class]
            if layernorm[0].startswith("from megatron.model import"):
                return ["from megatron.model import LayerNorm, RMSNorm"]
            return [*layernorm, "from megatron.model.rmsnorm import RMSNorm"]
        return imports

    def repair_unavailable(self, p) -> bool:
        """The tree's RMSNorm class is None where its (CUDA-only) import fails: that fallback
        becomes porter's RMSNorm, so the port builds and trains anywhere (issue 13 item 3).
        Returns whether porter's rmsnorm.py is planned."""
        found = p.facts(self.name).unavailable
        if not found:
            return False
        file = porter_rmsnorm_file(p)
        if file is None:
            first = found[0]
            raise unsupported(f"{first.name} is None when its import fails, and both {RMSNORM_FILE} and "
                              f"{FREE_RMSNORM_FILE} (where porter would write its RMSNorm) are the tree's own",
                              first.file, f"a free {RMSNORM_FILE} or {FREE_RMSNORM_FILE} for porter's RMSNorm",
                              f"the tree's {RMSNORM_FILE} and {FREE_RMSNORM_FILE}")
        for site in found:
            extra = [k for k in site.keywords if k not in RMSNORM_KEYWORDS]
            if extra or site.positional > 2:
                raise unsupported(f"{site.name} is None when its import fails, and porter's RMSNorm cannot "
                                  "stand in for it: its calls pass "
                                  + (", ".join(f"{k}=" for k in extra) or f"{site.positional} positional arguments"),
                                  site.file, f"calls {site.name}(hidden_size, eps, keywords of "
                                  f"{', '.join(RMSNORM_KEYWORDS)})", f"keywords {', '.join(site.keywords) or 'none'}")
            p.edit(site.file, "rmsnorm",
                   f"the tree binds {site.name} to None when its import fails (apex is CUDA-only), so without it "
                   "the model cannot be built; that fallback becomes porter's RMSNorm (same (hidden_size, eps) "
                   "call; where the import works the tree's own class is still used)",
                   rw(FallbackImport, name=site.name, source=file.removesuffix(".py").replace("/", "."),
                      cls="RMSNorm"))
        create_porter_rmsnorm(p, file, "RMSNorm (the fallback of the tree's CUDA-only RMSNorm)"
                              + ("" if file == RMSNORM_FILE else f"; {RMSNORM_FILE} is the tree's own"))
        return True

    def from_hf(self, config):
        return {"norm.type": "rmsnorm"} if "rms_norm_eps" in config else {}
