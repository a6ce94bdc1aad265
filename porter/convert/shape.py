"""The numbers that fix every tensor's shape, read from an HF config (HF names in comments).

Everything else a model's config says (norm epsilon, rotary base and scaling, token ids...)
is not a shape: it rides along as the HF config itself and as the checkpoint's args.
"""

from __future__ import annotations

from dataclasses import dataclass

from porter.errors import PorterError


@dataclass
class ModelShape:
    num_layers: int  # num_hidden_layers
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int  # intermediate_size
    vocab_size: int  # the real vocabulary; Megatron pads it
    num_query_groups: int = 0  # num_key_value_heads; 0: one per attention head
    head_dim: int = 0  # head_dim; 0: hidden_size / num_attention_heads
    num_experts: int = 0  # num_local_experts: experts per layer; 0: a dense MLP

    def __post_init__(self) -> None:
        self.num_query_groups = self.num_query_groups or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, config: dict, path: str = "config.json") -> ModelShape:
        missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
                   if not isinstance(config.get(k), int)]
        if missing:
            raise PorterError(
                "the HF config lacks the model's sizes", file=path, construct=", ".join(missing),
                found="missing or not whole numbers: " + ", ".join(missing),
                fix="pass the config.json of a causal LM saved by transformers (save_pretrained)",
            )
        heads = config["num_attention_heads"]
        groups = config.get("num_key_value_heads") or heads
        if heads % groups:
            raise PorterError(
                f"{heads} attention heads do not share {groups} key/value heads evenly", file=path,
                construct="num_attention_heads a multiple of num_key_value_heads",
                found=f"num_attention_heads = {heads}, num_key_value_heads = {groups}",
                fix="check the config: grouped-query attention needs equal groups",
            )
        return cls(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"], num_attention_heads=heads,
                   ffn_hidden_size=config["intermediate_size"], vocab_size=config["vocab_size"],
                   num_query_groups=groups, head_dim=config.get("head_dim") or 0,
                   num_experts=config.get("num_local_experts") or 0)

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    def hf_sizes(self) -> dict:
        sizes = dict(num_hidden_layers=self.num_layers, hidden_size=self.hidden_size,
                     num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_query_groups,
                     intermediate_size=self.ffn_hidden_size, vocab_size=self.vocab_size)
        if self.head_dim != self.hidden_size // self.num_attention_heads:
            sizes["head_dim"] = self.head_dim
        return sizes
