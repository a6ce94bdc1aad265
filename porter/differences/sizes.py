"""A model's own sizes, as numbers: the generated entry point's defaults.

Spec: `[sizes]` num_layers, hidden_size, num_attention_heads, vocab_size,
max_position_embeddings (all optional: a family spec leaves them to the command line; a spec
made from an HF config.json carries the model's). Each becomes a default of
pretrain_<name>.py through the tree's own option (--num-layers, --hidden-size, ...); the
vocabulary is the tokenizer's and is checked, not set.
HF: num_hidden_layers, hidden_size, num_attention_heads, vocab_size, max_position_embeddings.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.schema import number

# spec field -> (the tree's dest, the HF config field)
SIZES = {
    "sizes.num_layers": ("num_layers", "num_hidden_layers"),
    "sizes.hidden_size": ("hidden_size", "hidden_size"),
    "sizes.num_attention_heads": ("num_attention_heads", "num_attention_heads"),
    "sizes.vocab_size": (None, "vocab_size"),
    "sizes.max_position_embeddings": ("max_position_embeddings", "max_position_embeddings"),
}


class Sizes(Difference):
    name = "sizes"
    hf_fields = tuple(hf for _, hf in SIZES.values())
    changes_model = False
    fields = {key: number(None, whole=True, help=f"the model's {key.split('.')[1]} (HF: {hf})")
              for key, (_, hf) in SIZES.items()}

    def wanted(self, spec):
        return any(spec[key] is not None for key in SIZES)

    def plan(self, p):
        for key, (dest, _) in SIZES.items():
            value = p.spec[key]
            if value is None or dest is None:
                continue
            if dest == "max_position_embeddings" and p.profile.arguments.forbids_max_positions \
                    and p.spec["position_embedding.type"] == "rotary":
                continue  # this tree refuses the option with rotary: positions are bounded by --seq-length
            if p.has_dest(dest):
                p.default(dest, value, key)

    def from_hf(self, config):
        return {key: int(config[hf]) for key, (_, hf) in SIZES.items() if config.get(hf) is not None}

    def tiny(self, spec, tiny):
        return {"sizes.num_layers": tiny.num_layers, "sizes.hidden_size": tiny.hidden_size,
                "sizes.num_attention_heads": tiny.num_attention_heads, "sizes.vocab_size": tiny.vocab_size,
                "sizes.max_position_embeddings": tiny.seq_length}

    def to_hf(self, spec, config):
        for key, (_, hf) in SIZES.items():
            if spec[key] is not None:
                config[hf] = spec[key]
