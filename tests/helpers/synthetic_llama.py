"""Synthetic LLaMA-3-shaped HF checkpoints of real size, for bench/convert.py and the slow tests.

A model is written tensor by tensor, each a deterministic function of its name (random bits:
any bf16 pattern, NaNs included, so that a comparison must be of bits), into safetensors
shards of about `shard_bytes` by the safetensors library itself (one shard in memory at a
time) with model.safetensors.index.json, as save_pretrained writes them. `same_bits` compares
two HF folders tensor by tensor (one pair in memory at a time), bit for bit.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

# name -> (hidden, layers, heads, key/value heads, ffn, vocabulary): LLaMA-3's shape, scaled
SHAPES = {
    "tiny": (64, 2, 4, 2, 192, 256),  # a few MB: what a conversion costs whatever the model
    "0.5GB": (1024, 12, 16, 4, 4096, 32000),
    "1.5GB": (2048, 4, 32, 8, 8192, 128256),
    "3GB": (2048, 16, 32, 8, 8192, 128256),  # 1.5B parameters: the model
    "8B": (4096, 32, 32, 8, 14336, 128256),  # Llama-3.1-8B's shape, 16 GB
}


def config(name: str) -> dict:
    """The HF config of a synthetic model: the llama3 spec's architecture at that shape, bf16."""
    from porter.catalog import load_spec
    from porter.hf_config import hf_config_of, installed_rope_spelling

    hidden, layers, heads, groups, ffn, vocab = SHAPES[name]
    spec = load_spec("llama3")
    sizes = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=groups,
                 intermediate_size=ffn, vocab_size=vocab)
    return installed_rope_spelling({**hf_config_of(spec, sizes), **sizes, "torch_dtype": "bfloat16",
                                    "tie_word_embeddings": False})


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF name -> shape, in the order save_pretrained writes them."""
    h, ffn, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head
    shapes = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                       p + "mlp.down_proj.weight": (h, ffn), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (vocab, h)
    return shapes


def synthetic(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A bf16 tensor of random bits, the same every time for the same name."""
    count = 1
    for n in shape:
        count *= n
    bits = torch.empty((count + 1) // 2, dtype=torch.int32)
    bits.random_(generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    return bits.view(torch.bfloat16)[:count].view(shape)


def write_model(folder: Path, name: str, shard_bytes: int = 10**9) -> Path:
    """An HF folder (config.json, shards, index) of the synthetic model `name` (SHAPES)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config(name)
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["LlamaForCausalLM"]}, indent=2))
    groups: list[list[str]] = [[]]
    size = 0
    shapes = tensor_shapes(cfg)
    for tensor, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += nbytes
    weight_map = {}
    for number, names in enumerate(groups, 1):
        file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: synthetic(n, shapes[n]) for n in names}, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    total = sum(2 * torch.Size(s).numel() for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder


def _where(folder: Path) -> dict[str, Path]:
    """tensor name -> its file in an HF folder (the index's weight_map, or model.safetensors)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {n: folder / f for n, f in json.loads(index.read_text())["weight_map"].items()}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return dict.fromkeys(f.keys(), folder / "model.safetensors")


def differs_from_synthetic(folder: Path, name: str) -> list[str]:
    """The tensors of an HF folder that are not the synthetic model `name`'s, bit for bit (each
    made again from its name: the model written by write_model need not be kept)."""
    from safetensors import safe_open

    shapes = tensor_shapes(config(name))
    where = _where(Path(folder))
    differ = sorted(set(shapes) ^ set(where))
    for tensor in sorted(set(shapes) & set(where)):
        with safe_open(str(where[tensor]), framework="pt") as f:
            x = f.get_tensor(tensor)
            y = synthetic(tensor, shapes[tensor])
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(
                    x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                differ.append(tensor)
    return differ


def same_bits(a: Path, b: Path) -> list[str]:
    """The tensors that differ between two HF folders (by name, dtype, shape or any bit), read
    with safetensors itself, one pair in memory at a time."""
    from safetensors import safe_open

    first, second = _where(Path(a)), _where(Path(b))
    differ = sorted(set(first) ^ set(second))
    for tensor in sorted(set(first) & set(second)):
        with safe_open(str(first[tensor]), framework="pt") as f, safe_open(str(second[tensor]), framework="pt") as g:
            x, y = f.get_tensor(tensor), g.get_tensor(tensor)
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(
                    x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                differ.append(tensor)
    return differ
