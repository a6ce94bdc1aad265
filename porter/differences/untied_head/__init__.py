"""An untied output projection: the head has its own [vocab/p, h] weight, saved in checkpoints.

Spec: `embeddings.tied` (GPT: true). porter unties in the generated model class itself (its
own column-parallel head, in the plain and the pipe model); a tree's
`--untie-embeddings-and-output-weights` (microsoft) is reused where the tree implements it.
HF: `tie_word_embeddings`.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.profile import GPT_MODEL
from porter.profile.features import tree_spelling
from porter.schema import flag


class UntiedHead(Difference):
    name = "untied"
    model_switches = ('untied',)
    hf_fields = ("tie_word_embeddings",)
    fields = {"embeddings.tied": flag(True, help="output projection shares the input embedding")}
    spellings = {
        "untied": (
            # porter unties in the generated model class itself; only a tree has a switch
            tree_spelling("untied", "--untie-embeddings-and-output-weights", "untie_embeddings_and_output_weights",
                          True, "args.untie_embeddings_and_output_weights",
                          ((GPT_MODEL, "untie_embeddings_and_output_weights"),)),
        ),
    }

    def wanted(self, spec):
        return not spec["embeddings.tied"]

    def plan(self, p):
        p.describe_model("an untied output projection: its own [vocab/p, h] weight, saved in checkpoints")
        found = p.profile.spellings.get("untied")
        if p.implemented("untied"):
            p.switch("untied")
        elif found is not None:
            p.reuse("untied", f"the tree's {found.option} is left alone: the generated model unties itself")

    def from_hf(self, config):
        return {"embeddings.tied": bool(config.get("tie_word_embeddings", True))}

    def to_hf(self, spec, config):
        config["tie_word_embeddings"] = spec["embeddings.tied"]

    def layout(self, profile, spec):
        return {"tied": spec["embeddings.tied"]}
