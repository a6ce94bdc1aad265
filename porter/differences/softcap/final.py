"""Soft-capped logits (Gemma-2): cap * tanh(logits / cap) on the output projection's logits.

Spec: `logits.softcap` (GPT: unset; Gemma-2: 30). HF's Gemma-2 caps the lm_head's logits before
the loss (and before generation reads them); Gemma-3's config has the field too (null).
porter's switch: `--final-logit-softcap` (float, default None: no cap). It changes the
generated model only: its code goes into model.py.j2's `logits` slot (model_logits.py.j2
here), where both the plain <Prefix>Model and the pipeline's last layer hold the logits of
their vocabulary slice [b, s, vocab/p] (the cap is per element, so each tensor-parallel rank
caps its own slice), before the cross entropy. Where the tree's own GPT classes carry the port
(the flags port, microsoft HEAD: no model template), the cap goes into the tree's
megatron/model/gpt_model.py instead (logit_rewrites.py here): where its plain model computes the
logits, and as a layer after its pipeline model's head. The weights are unchanged.
HF: `final_logit_softcapping` (Gemma2Config: 30 when left out; null: none).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.softcap import check_class, read_cap
from porter.differences.softcap import logit_rewrites as L
from porter.planner import rw
from porter.profile import GPT_MODEL
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "final_logit_softcap"
FIELD = "logits.softcap"
HF_FIELD = "final_logit_softcapping"


class FinalLogitSoftcap(Difference):
    name = SWITCH
    fields = {FIELD: number(None, low=0, help="logits soft-capped: cap * tanh(logits / cap) (Gemma-2: 30)")}
    hf_fields = (HF_FIELD,)
    switchable = (FIELD,)
    model_slots = {"logits": "model_logits.py.j2"}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--final-logit-softcap", "final_logit_softcap", None, "args.final_logit_softcap", NETWORK,
                (("type", "float"), ("default", "None"),
                 ("help", "'Soft-capped logits, cap * tanh(logits / cap), before the loss (Gemma-2: 30); unset: none.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def plan(self, p):
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.describe_model(f"logits soft-capped, cap * tanh(logits / cap) ({spelling.option}), before the loss")
        p.values[SWITCH] = {"cap": f"get_args().{spelling.dest}"}

    def tree_logits(self, p):
        """The cap in the tree's own GPT model: its post-processing's logits, and a layer after its pipe's head."""
        if not p.model.gpt_post_processing:
            return False
        spelling = p.switches[SWITCH]
        p.create("megatron/model/logit_softcap.py", SWITCH, "the soft-cap of the logits", "logit_softcap.py.j2",
                 option=spelling.option, dest=spelling.dest)
        p.import_into(GPT_MODEL, SWITCH, "from megatron.model.logit_softcap import softcap_logits",
                      "imports the soft-cap of the logits")
        p.edit(GPT_MODEL, SWITCH, f"post_language_model_processing caps the logits it computes ({spelling.option}), "
               "before the loss and when it hands them back", rw(L.CapPlainLogits, func="post_language_model_processing",
                                                                  switch=spelling.dest))
        p.edit(GPT_MODEL, SWITCH, f"GPTModelPipe caps the logits in a layer after its output head ({spelling.option}), "
               "before the loss", rw(L.CapPipeLogits, cls="GPTModelPipe", switch=spelling.dest))
        return True

    def from_hf(self, config):
        return read_cap(config, FIELD, HF_FIELD)

    def to_hf(self, spec, config):
        check_class(spec, config, FIELD, HF_FIELD, spec[FIELD])

    def tiny(self, spec, tiny):
        """A cap the tiny model's logits reach (they are about one unit; tanh(x/30) * 30 is x to 1e-4)."""
        return {FIELD: min(spec[FIELD], 2.0)} if self.wanted(spec) else {}
