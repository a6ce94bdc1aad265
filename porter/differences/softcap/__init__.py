"""Soft-capped attention scores (Gemma-2): cap * tanh(scores / cap) before the mask and softmax.

Spec: `attention.softcap` (GPT: unset; Gemma-2: 50). HF's Gemma-2 scales q k^T, caps it with
tanh, then adds the mask and takes the softmax; Gemma-3's config has the field too (null).
porter's switch: `--attention-softcap` (float, default None: no cap). When porter adds it
(rewrites.py here): the core attention keeps the cap (`__init__`) and caps its scores right
before its masked softmax, in the tree's own unfused attention. torch's
scaled_dot_product_attention (and Gaudi's FusedSDPA) take no function of the scores, so
porter's fused path stands aside while a cap is set (its test gains `self.attention_softcap
is None and ...`) and the tree's attention runs; with no cap (Gemma-3, or the switch off)
the fused kernel runs as before. A kernel of the tree's own that its attention runs instead of
the core attention (microsoft's flash kernels, Habana's FusedSDPA: porter.profile.kernels) is turned off in the
same way while a cap is set. The softmax of Megatron's trees multiplies the scores by its
own scale first (apply_query_key_layer_scaling); the cap is taken of the scores as that
scale leaves them (softcap.py.j2 here).
HF: `attn_logit_softcapping` (Gemma2Config: 50 when left out; null: none).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.softcap import rewrites as R
from porter.edits.kernels import plan_off as kernels_off
from porter.errors import PorterError
from porter.hf_reading import class_defines
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER, kernels
from porter.profile.features import NETWORK, Spelling
from porter.schema import number

SWITCH = "attention_softcap"
FIELD = "attention.softcap"
HF_FIELD = "attn_logit_softcapping"


def check_class(spec, config, field, hf_field, value) -> None:
    """Write a cap into an HF config: the class's own field (None included, where its default is
    a cap: Gemma2Config's 50), or a refusal where the class has no such cap."""
    model_type = config.get("model_type")
    if class_defines(model_type, hf_field, unknown=False):
        config[hf_field] = value
    elif value is not None:
        raise PorterError(
            f"{spec.hf_class} has no soft-capping", file=spec.path, construct=field,
            found=f"{field} = {value} for {model_type or 'no model type'}",
            fix=f"remove it from the spec, or name an HF class with {hf_field} (Gemma2ForCausalLM)")


def read_cap(config, field, hf_field) -> dict:
    """A cap from an HF config: the class's own field (null: none), or a refusal where the config
    class has no such field (LlamaConfig keeps an attn_logit_softcapping it is given, and its model
    never reads it: porter would cap what HF does not)."""
    if hf_field not in config:
        return {}
    cap = config[hf_field]
    model_type = config.get("model_type")
    if cap and not class_defines(model_type, hf_field, unknown=True):
        raise PorterError(
            f"config.json soft-caps with a field its class does not read: {hf_field}", file=config.path,
            construct=f"{hf_field} (a field of Gemma2Config)", found=f"{hf_field} = {cap!r} for {model_type}",
            fix=f"remove {hf_field} from config.json (transformers' {model_type} model ignores it), or port a "
                "family whose class reads it (gemma2)")
    return {field: float(cap) if cap else None}


class AttentionSoftcap(Difference):
    name = SWITCH
    model_switches = (SWITCH,)
    fields = {FIELD: number(None, low=0, help="attention scores soft-capped: cap * tanh(scores / cap) (Gemma-2: 50)")}
    hf_fields = (HF_FIELD,)
    switchable = (FIELD,)
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--attention-softcap", "attention_softcap", None, "args.attention_softcap", NETWORK,
                (("type", "float"), ("default", "None"),
                 ("help", "'Soft-capped attention scores, cap * tanh(scores / cap), before the mask and softmax "
                          "(Gemma-2: 50); unset: none.'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec[FIELD] is not None

    def detect(self, parsed):
        return kernels.detect(parsed)

    def plan(self, p):
        site = p.profile.attention
        if site is None:
            raise unsupported("cannot find the core attention whose scores to cap", TRANSFORMER,
                              "a core attention porter recognises (a class building FusedScaleMaskSoftmax, "
                              "one of its methods calling it on the scores and mask)",
                              "none: porter keeps this tree's attention as it is and cannot cap its scores")
        spelling = p.switch(SWITCH, on=p.spec[FIELD], field=FIELD)
        p.describe_model(f"attention scores soft-capped, cap * tanh(scores / cap) ({spelling.option}), in the\n"
                         "    tree's own attention: torch's fused kernel takes no function of the scores")
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.softcap import softcap_scores",
                      "imports the soft-cap of the attention scores")
        p.edit(TRANSFORMER, SWITCH, f"{site.cls} keeps the cap of {spelling.option}",
               rw(R.SoftcapAttribute, cls=site.cls, value=f"args.{spelling.dest}"))
        p.edit(TRANSFORMER, SWITCH, f"{site.cls}.{site.func} caps its scores before the masked softmax; porter's "
               "fused kernel stands aside while a cap is set (it takes no function of the scores)",
               rw(R.SoftcapScores, cls=site.cls, func=site.func, softmax=site.softmax))
        kernels_off(p, SWITCH, p.facts(self.name), site.cls, spelling.option, f"args.{spelling.dest} is not None",
                    "take no function of the scores", "caps them",
                    "Soft-capped attention scores (Gemma-2): those kernels take no function of the scores; the core "
                    "attention runs while a cap is set.")
        p.create("megatron/model/softcap.py", SWITCH, "the soft-cap of the attention scores", "softcap.py.j2")

    def from_hf(self, config):
        return read_cap(config, FIELD, HF_FIELD)

    def to_hf(self, spec, config):
        check_class(spec, config, FIELD, HF_FIELD, spec[FIELD])

    def tiny(self, spec, tiny):
        """A cap the tiny model's scores reach (they are a few units; tanh(x/50) * 50 is x to 1e-3)."""
        return {FIELD: min(spec[FIELD], 4.0)} if self.wanted(spec) else {}
