"""HF LLaMA weights <-> the ported tree's Megatron-DeepSpeed checkpoints, both ways, bit-exact.

Three representations, converted by pure tensor copies (no arithmetic, so HF -> Megatron
-> HF gives back the very same bits):

- HF: `LlamaForCausalLM`'s state dict and config, in a directory `from_pretrained` reads;
- `MegatronWeights`: one full (unsharded) copy in the tree's layout (`WeightLayout`):
  the fused per-head QKV, the fused [gate; up] projection, the padded vocabulary;
- shards: what one tensor-parallel rank holds, written as the DeepSpeed checkpoint files the
  tree's `load_checkpoint` reads (through `engine.load_checkpoint`):
    pipeline engine:  <dir>/<tag>/layer_XX-model_TT-model_states.pt (one per layer spec and
                      TP rank) and mp_rank_MM_model_states.pt (client state, one per
                      model-parallel rank, MM = pp_rank * TP + tp_rank);
    plain engine:     <dir>/<tag>/mp_rank_TT_model_states.pt with 'module' holding the
                      nested dict of the model's state_dict_for_save_checkpoint.
  plus <dir>/latest (DeepSpeed's tag file) and latest_checkpointed_iteration.txt.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from porter.errors import PorterError
from porter.hf_config import installed_rope_spelling
from porter.verify.layout import PIPE_EMBEDDING, PIPE_FIRST_LAYER, WeightLayout

TAG = "release"
CHECKPOINT_VERSION = 3.0


@dataclass
class ModelShape:
    """The numbers that fix every tensor's shape (HF config names in comments)."""

    num_layers: int  # num_hidden_layers
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int  # intermediate_size
    vocab_size: int  # the real vocabulary; Megatron pads it
    norm_eps: float = 1e-6  # rms_norm_eps
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class MegatronWeights:
    """One full copy of the model in the tree's layout. Layer keys are relative to a layer."""

    shape: ModelShape
    embedding: torch.Tensor  # [padded vocab, h]
    layers: list[dict[str, torch.Tensor]]
    final_norm: torch.Tensor | None
    output: torch.Tensor | None  # [padded vocab, h]; None when tied
    extra: dict = field(default_factory=dict)


# -- HF <-> full Megatron ------------------------------------------------------------------


def shape_from_hf_config(config: dict) -> ModelShape:
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    if kv_heads != heads:
        raise PorterError(
            f"the HF model uses grouped-query attention ({kv_heads} key/value heads for {heads} heads)",
            construct="num_key_value_heads == num_attention_heads",
            found=f"num_key_value_heads = {kv_heads}",
            fix="porter's LLaMA port has multi-head attention only (LLaMA 1 and LLaMA 2 7B/13B)",
        )
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim * heads != config["hidden_size"]:
        raise PorterError(
            "the HF model's head_dim x heads differs from hidden_size",
            found=f"head_dim {head_dim}, heads {heads}, hidden_size {config['hidden_size']}",
            fix="porter's port derives the head size as hidden_size / heads",
        )
    theta = config.get("rope_theta")
    if theta is None:
        theta = (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return ModelShape(
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        num_attention_heads=heads,
        ffn_hidden_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        max_position_embeddings=config.get("max_position_embeddings", 2048),
    )


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t.clone()
    out = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype)
    out[: t.shape[0]] = t
    return out


def _layer_names(layout: WeightLayout) -> dict[str, str]:
    """role -> key inside one transformer layer."""
    a, p = layout.attention, layout.mlp
    return {
        "input_norm": f"{layout.input_norm}.weight",
        "qkv": f"{a}.{layout.qkv}.weight",
        "qkv_bias": f"{a}.{layout.qkv}.bias",
        "dense": f"{a}.{layout.dense}.weight",
        "dense_bias": f"{a}.{layout.dense}.bias",
        "post_norm": f"{layout.post_attention_norm}.weight",
        "fc1": f"{p}.{layout.fc1}.weight",
        "fc1_bias": f"{p}.{layout.fc1}.bias",
        "fc2": f"{p}.{layout.fc2}.weight",
        "fc2_bias": f"{p}.{layout.fc2}.bias",
    }


def _fuse_qkv(q, k, v, heads):
    """HF q, k, v ([n*hn, ...] each) -> per-head fused [n*3*hn, ...]."""
    parts = [t.reshape(heads, -1, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(-1, *q.shape[1:]).clone()


def _split_qkv(qkv, heads):
    per_head = qkv.reshape(heads, 3, -1, *qkv.shape[1:])
    return [per_head[:, i].reshape(-1, *qkv.shape[1:]).clone() for i in range(3)]


def hf_to_megatron(state: dict[str, torch.Tensor], config: dict, layout: WeightLayout,
                   tensor_parallel: int = 1) -> MegatronWeights:
    """HF LlamaForCausalLM state dict + config -> one full copy in the tree's layout."""
    shape = shape_from_hf_config(config)
    names = _layer_names(layout)
    padded = layout.padded_vocab(shape.vocab_size, tensor_parallel)
    n = shape.num_attention_heads

    def take(key):
        if key not in state:
            raise PorterError(f"the HF checkpoint has no tensor {key}", construct=key,
                              found=f"{len(state)} tensors, e.g. {sorted(state)[:3]}",
                              fix="pass the directory of a LlamaForCausalLM (save_pretrained)")
        return state[key]

    layers = []
    for i in range(shape.num_layers):
        pre = f"model.layers.{i}."
        attn, mlp = pre + "self_attn.", pre + "mlp."
        gate, up = take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")
        layer = {
            names["input_norm"]: take(pre + "input_layernorm.weight").clone(),
            names["qkv"]: _fuse_qkv(take(attn + "q_proj.weight"), take(attn + "k_proj.weight"),
                                    take(attn + "v_proj.weight"), n),
            names["dense"]: take(attn + "o_proj.weight").clone(),
            names["post_norm"]: take(pre + "post_attention_layernorm.weight").clone(),
            names["fc1"]: torch.cat((gate, up) if layout.gate_first else (up, gate), dim=0),
            names["fc2"]: take(mlp + "down_proj.weight").clone(),
        }
        if layout.bias:
            layer[names["qkv_bias"]] = _fuse_qkv(take(attn + "q_proj.bias"), take(attn + "k_proj.bias"),
                                                 take(attn + "v_proj.bias"), n)
            layer[names["dense_bias"]] = take(attn + "o_proj.bias").clone()
            g, u = take(mlp + "gate_proj.bias"), take(mlp + "up_proj.bias")
            layer[names["fc1_bias"]] = torch.cat((g, u) if layout.gate_first else (u, g), dim=0)
            layer[names["fc2_bias"]] = take(mlp + "down_proj.bias").clone()
        layers.append(layer)
    embedding = _pad_rows(take("model.embed_tokens.weight"), padded)
    output = None
    if not layout.tied:
        head = state.get("lm_head.weight")
        if head is None and config.get("tie_word_embeddings"):
            head = state["model.embed_tokens.weight"]
        output = _pad_rows(head if head is not None else take("lm_head.weight"), padded)
    return MegatronWeights(shape=shape, embedding=embedding, layers=layers,
                           final_norm=take("model.norm.weight").clone(), output=output)


def megatron_to_hf(weights: MegatronWeights, layout: WeightLayout) -> dict[str, torch.Tensor]:
    """One full copy in the tree's layout -> HF LlamaForCausalLM state dict."""
    shape = weights.shape
    names = _layer_names(layout)
    n, v, f = shape.num_attention_heads, shape.vocab_size, shape.ffn_hidden_size
    state = {"model.embed_tokens.weight": weights.embedding[:v].clone()}
    for i, layer in enumerate(weights.layers):
        pre = f"model.layers.{i}."
        attn, mlp = pre + "self_attn.", pre + "mlp."
        q, k, vv = _split_qkv(layer[names["qkv"]], n)
        first, second = layer[names["fc1"]][:f].clone(), layer[names["fc1"]][f:].clone()
        gate, up = (first, second) if layout.gate_first else (second, first)
        state.update({
            pre + "input_layernorm.weight": layer[names["input_norm"]].clone(),
            attn + "q_proj.weight": q, attn + "k_proj.weight": k, attn + "v_proj.weight": vv,
            attn + "o_proj.weight": layer[names["dense"]].clone(),
            pre + "post_attention_layernorm.weight": layer[names["post_norm"]].clone(),
            mlp + "gate_proj.weight": gate, mlp + "up_proj.weight": up,
            mlp + "down_proj.weight": layer[names["fc2"]].clone(),
        })
        if names["qkv_bias"] in layer:
            qb, kb, vb = _split_qkv(layer[names["qkv_bias"]], n)
            b1, b2 = layer[names["fc1_bias"]][:f].clone(), layer[names["fc1_bias"]][f:].clone()
            gb, ub = (b1, b2) if layout.gate_first else (b2, b1)
            state.update({
                attn + "q_proj.bias": qb, attn + "k_proj.bias": kb, attn + "v_proj.bias": vb,
                attn + "o_proj.bias": layer[names["dense_bias"]].clone(),
                mlp + "gate_proj.bias": gb, mlp + "up_proj.bias": ub,
                mlp + "down_proj.bias": layer[names["fc2_bias"]].clone(),
            })
    state["model.norm.weight"] = weights.final_norm.clone()
    if weights.output is not None:
        state["lm_head.weight"] = weights.output[:v].clone()
    return state


def hf_config(shape: ModelShape, layout: WeightLayout, dtype: torch.dtype, base: dict | None = None) -> dict:
    """The config.json fields of an HF LLaMA of `shape` (other fields of `base` are kept)."""
    config = {k: v for k, v in (base or {}).items() if k not in ("transformers_version",)}
    config.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        hidden_size=shape.hidden_size,
        intermediate_size=shape.ffn_hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        vocab_size=shape.vocab_size,
        rms_norm_eps=shape.norm_eps,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=layout.tied,
        attention_bias=layout.bias,
        mlp_bias=layout.bias,
        hidden_act="silu",
    )
    config = installed_rope_spelling({**config, "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta}})
    config["torch_dtype" if "torch_dtype" in config else "dtype"] = str(dtype).removeprefix("torch.")
    return config


# -- full <-> tensor-parallel shards -----------------------------------------------------------


def _roles(layout: WeightLayout) -> dict[str, str]:
    """layer key -> how it is split over tensor-parallel ranks."""
    names = _layer_names(layout)
    return {
        names["input_norm"]: "replicated", names["post_norm"]: "replicated",
        names["qkv"]: "rows", names["qkv_bias"]: "rows",
        names["dense"]: "columns", names["dense_bias"]: "replicated",
        names["fc1"]: "gate_up", names["fc1_bias"]: "gate_up",
        names["fc2"]: "columns", names["fc2_bias"]: "replicated",
    }


def _shard(t: torch.Tensor, how: str, tp: int, rank: int) -> torch.Tensor:
    if how == "replicated" or tp == 1:
        return t.clone()
    if how == "rows":
        return t.chunk(tp, dim=0)[rank].clone()
    if how == "columns":
        return t.chunk(tp, dim=1)[rank].clone()
    if how == "gate_up":  # full [A; B] -> rank r holds [A_r; B_r]
        first, second = t.chunk(2, dim=0)
        return torch.cat((first.chunk(tp, dim=0)[rank], second.chunk(tp, dim=0)[rank]), dim=0)
    raise ValueError(how)


def _unshard(parts: list[torch.Tensor], how: str) -> torch.Tensor:
    if how == "replicated" or len(parts) == 1:
        return parts[0].clone()
    if how == "rows":
        return torch.cat(parts, dim=0)
    if how == "columns":
        return torch.cat(parts, dim=1)
    if how == "gate_up":
        halves = [p.chunk(2, dim=0) for p in parts]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    raise ValueError(how)


def _check_divisible(weights: MegatronWeights, tp: int) -> None:
    shape = weights.shape
    for what, value in (("attention heads", shape.num_attention_heads), ("ffn hidden size", shape.ffn_hidden_size),
                        ("padded vocabulary", weights.embedding.shape[0])):
        if value % tp:
            raise PorterError(
                f"{what} ({value}) do not split over {tp} tensor-parallel ranks",
                construct=f"{what} divisible by the tensor-parallel size", found=str(value),
                fix="choose a tensor-parallel size that divides it",
            )


def shard(weights: MegatronWeights, layout: WeightLayout, tp: int, rank: int) -> MegatronWeights:
    """What tensor-parallel rank `rank` of `tp` holds."""
    _check_divisible(weights, tp)
    roles = _roles(layout)
    return MegatronWeights(
        shape=weights.shape,
        embedding=_shard(weights.embedding, "rows", tp, rank),
        layers=[{k: _shard(v, roles[k], tp, rank) for k, v in layer.items()} for layer in weights.layers],
        final_norm=None if weights.final_norm is None else weights.final_norm.clone(),
        output=None if weights.output is None else _shard(weights.output, "rows", tp, rank),
    )


def unshard(parts: list[MegatronWeights], layout: WeightLayout) -> MegatronWeights:
    """The full copy from the shards of every tensor-parallel rank, in rank order."""
    roles = _roles(layout)
    first = parts[0]
    return MegatronWeights(
        shape=first.shape,
        embedding=_unshard([p.embedding for p in parts], "rows"),
        layers=[{k: _unshard([p.layers[i][k] for p in parts], roles[k]) for k in layer}
                for i, layer in enumerate(first.layers)],
        final_norm=None if first.final_norm is None else first.final_norm.clone(),
        output=None if first.output is None else _unshard([p.output for p in parts], "rows"),
    )


# -- DeepSpeed checkpoint files -----------------------------------------------------------------


def _nested_module(local: MegatronWeights, layout: WeightLayout) -> dict:
    """The dict LLaMAModel.state_dict_for_save_checkpoint writes (non-pipe engine)."""
    encoder = {}
    for i, layer in enumerate(local.layers):
        for key, value in layer.items():
            encoder[f"{layout.layers}.{i}.{key}"] = value
    if local.final_norm is not None:
        encoder[f"{layout.final_norm}.weight"] = local.final_norm
    module = {
        layout.language_model_key: {
            layout.embedding_key: {layout.word_embeddings_key: {"weight": local.embedding}},
            layout.encoder_key: encoder,
        }
    }
    if local.output is not None:
        holder = module
        for key in layout.head_keys[:-1]:
            holder = holder.setdefault(key, {})
        holder[layout.head_keys[-1]] = local.output
    return module


def _pipe_layer_files(local: MegatronWeights, layout: WeightLayout) -> dict[int, dict]:
    """layer spec index -> that layer's state_dict (pipeline engine)."""
    files = {PIPE_EMBEDDING: {f"{layout.word_embeddings}.weight": local.embedding}}
    for i, layer in enumerate(local.layers):
        files[PIPE_FIRST_LAYER + i] = dict(layer)
    count = len(local.layers)
    if local.final_norm is not None:
        files[layout.pipe_final_norm(count)] = {"weight": local.final_norm}
    if local.output is not None:
        files[layout.pipe_output_layer(count)] = {layout.head_pipe_key: local.output}
    return files


def checkpoint_args(weights: MegatronWeights, layout: WeightLayout, tp: int, pp: int,
                    feature_args: dict | None = None) -> argparse.Namespace:
    """The `args` a Megatron checkpoint carries (what load_checkpoint compares)."""
    shape = weights.shape
    values = dict(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, kv_channels=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings, seq_length=shape.max_position_embeddings,
        make_vocab_size_divisible_by=layout.make_vocab_size_divisible_by,
        padded_vocab_size=weights.embedding.shape[0], layernorm_epsilon=shape.norm_eps,
        rope_theta=shape.rope_theta, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        consumed_train_samples=0, consumed_valid_samples=0, iteration=0,
    )
    values.update(feature_args or {})
    return argparse.Namespace(**values)


def _client_state(weights, layout, tp, pp, feature_args, hf_base) -> dict:
    return {
        "module": None,
        "buffer_names": [],
        "optimizer": None,
        "lr_scheduler": None,
        "skipped_steps": 0,
        "global_steps": 0,
        "global_samples": 0,
        "dp_world_size": 1,
        "mp_world_size": tp,
        "iteration": 0,
        "checkpoint_version": CHECKPOINT_VERSION,
        "args": checkpoint_args(weights, layout, tp, pp, feature_args),
        "porter": {"vocab_size": weights.shape.vocab_size, "hf_config": hf_base or {},
                   "layout": layout.as_dict()},
    }


def write_checkpoint(weights: MegatronWeights, layout: WeightLayout, out: Path, *, tp: int = 1, pp: int = 1,
                     pipe: bool = True, feature_args: dict | None = None, hf_base: dict | None = None) -> list[Path]:
    """Write the DeepSpeed checkpoint the tree's load_checkpoint reads; returns the files."""
    if not pipe and pp != 1:
        raise PorterError(
            "the plain DeepSpeed engine (--no-pipeline-parallel) has no pipeline stages",
            construct="--pp 1 with --no-pipe", found=f"--pp {pp}",
            fix="write a pipeline-engine checkpoint (the default) for pipeline-parallel runs",
        )
    folder = Path(out) / TAG
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    shards = [shard(weights, layout, tp, r) for r in range(tp)]
    base = _client_state(weights, layout, tp, pp, feature_args, hf_base)
    if pipe:
        for rank, local in enumerate(shards):
            for index, state in _pipe_layer_files(local, layout).items():
                path = folder / f"layer_{index:02d}-model_{rank:02d}-model_states.pt"
                torch.save(state, path)
                written.append(path)
        for mp_rank in range(tp * pp):
            path = folder / f"mp_rank_{mp_rank:02d}_model_states.pt"
            torch.save({**base, "mp_world_size": tp * pp}, path)
            written.append(path)
    else:
        for rank, local in enumerate(shards):
            path = folder / f"mp_rank_{rank:02d}_model_states.pt"
            torch.save({**base, "module": _nested_module(local, layout)}, path)
            written.append(path)
    (Path(out) / "latest").write_text(TAG)
    (Path(out) / "latest_checkpointed_iteration.txt").write_text(TAG)
    return written


def _tag_folder(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    latest = checkpoint / "latest"
    if latest.exists():
        return checkpoint / latest.read_text().strip()
    if any(checkpoint.glob("mp_rank_*_model_states.pt")):
        return checkpoint
    raise PorterError(
        f"{checkpoint} is not a DeepSpeed checkpoint",
        file=str(checkpoint), construct="<dir>/latest naming a folder with mp_rank_XX_model_states.pt",
        found="no 'latest' file and no mp_rank_*_model_states.pt",
        fix="pass the --save directory of a training run, or a folder porter convert wrote",
    )


def flatten_state(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A nested state dict as one dict of dotted names to tensors."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_state(value, f"{prefix}{key}."))
        elif torch.is_tensor(value):
            out[f"{prefix}{key}"] = value
    return out


def _tokenizer_vocab(args) -> int | None:
    """The real vocabulary, from the SentencePiece model the run trained with, if it is at hand."""
    path = getattr(args, "tokenizer_model", None)
    if not path or not Path(path).is_file():
        return None
    try:
        import sentencepiece

        return sentencepiece.SentencePieceProcessor(model_file=str(path)).vocab_size()
    except (ImportError, OSError, RuntimeError):
        return None


class _Opaque:
    """Stands for an object of the tree's own classes (an enum in its args) when the tree is not importable."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})

    def __repr__(self):
        return f"{type(self).__module__}.{type(self).__name__}{self.args}"


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Opaque,), {"__module__": module})


_TOLERANT_PICKLE = types.SimpleNamespace(__name__="porter_tolerant_pickle", Unpickler=_TolerantUnpickler,
                                         load=pickle.load, loads=pickle.loads)


def _load(path: Path):
    """torch.load of a checkpoint file, here where the tree's classes (in its args) may not import."""
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TOLERANT_PICKLE)


def read_checkpoint(checkpoint: Path, layout: WeightLayout, vocab_size: int | None = None) -> MegatronWeights:
    """A DeepSpeed checkpoint of the tree (either engine, any TP/PP) -> one full copy."""
    folder = _tag_folder(checkpoint)
    mp_files = sorted(folder.glob("mp_rank_*_model_states.pt"))
    if not mp_files:
        raise PorterError(f"no mp_rank_*_model_states.pt in {folder}", file=str(folder),
                          fix="pass the checkpoint directory (the one holding 'latest')")
    meta = _load(mp_files[0])
    args = meta.get("args")
    if args is None:
        raise PorterError("the checkpoint carries no Megatron args", file=str(mp_files[0]),
                          construct="client state 'args'", fix="pass a checkpoint written by the tree or by porter")
    layer_files = sorted(folder.glob("layer_*-model_*-model_states.pt"))
    num_layers = args.num_layers
    names = _layer_names(layout)
    shards = []
    if layer_files:
        by_rank: dict[int, dict[int, Path]] = {}
        for path in layer_files:
            match = re.match(r"layer_(\d+)-model_(\d+)-model_states\.pt", path.name)
            by_rank.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
        for rank in sorted(by_rank):
            files = by_rank[rank]
            emb = _load(files[PIPE_EMBEDDING])[f"{layout.word_embeddings}.weight"]
            layers = [_load(files[PIPE_FIRST_LAYER + i]) for i in range(num_layers)]
            norm_index, out_index = layout.pipe_final_norm(num_layers), layout.pipe_output_layer(num_layers)
            final = _load(files[norm_index])["weight"] if norm_index in files else None
            output = _load(files[out_index])[layout.head_pipe_key] if out_index in files else None
            shards.append((emb, layers, final, output))
    else:
        for path in mp_files:
            module = _load(path)["module"]
            lm = module[layout.language_model_key]
            emb = lm[layout.embedding_key][layout.word_embeddings_key]["weight"]
            encoder = flatten_state(lm[layout.encoder_key])
            output = flatten_state(module).get(".".join(layout.head_keys))
            layers = []
            for i in range(num_layers):
                prefix = f"{layout.layers}.{i}."
                layers.append({k[len(prefix):]: v for k, v in encoder.items() if k.startswith(prefix)})
            final = encoder.get(f"{layout.final_norm}.weight")
            shards.append((emb, layers, final, output))
    known = set(names.values())
    for _, layers, _, _ in shards:
        for layer in layers:
            unknown = sorted(set(layer) - known)
            if unknown:
                raise PorterError(
                    "the checkpoint holds layer tensors porter's LLaMA layout has no place for",
                    file=str(folder), construct="the weights of a ported LLaMA layer: " + ", ".join(sorted(known)),
                    found=", ".join(unknown), fix="is this a checkpoint of the generated LLaMA model?",
                )
    porter_meta = meta.get("porter") or {}
    vocab = vocab_size or porter_meta.get("vocab_size") or _tokenizer_vocab(args) \
        or shards[0][0].shape[0] * len(shards)
    first_layers = shards[0][1]
    ffn = first_layers[0][names["fc1"]].shape[0] // 2 * len(shards) if first_layers else args.ffn_hidden_size
    shape = ModelShape(
        num_layers=num_layers, hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        ffn_hidden_size=ffn, vocab_size=vocab, norm_eps=getattr(args, "layernorm_epsilon", 1e-6),
        rope_theta=float(getattr(args, "rope_theta", 10000.0) or 10000.0),
        max_position_embeddings=getattr(args, "max_position_embeddings", None) or args.seq_length,
    )
    parts = [MegatronWeights(shape=shape, embedding=e, layers=ls, final_norm=f, output=o) for e, ls, f, o in shards]
    full = unshard(parts, layout)
    full.extra = {"hf_config": porter_meta.get("hf_config") or {}, "tensor_parallel": len(shards),
                  "pipeline_parallel": getattr(args, "pipeline_model_parallel_size", 1) or 1,
                  "pipe": bool(layer_files)}
    return full


# -- HF directories -----------------------------------------------------------------------------


def read_hf(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a directory LlamaForCausalLM.from_pretrained reads."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise PorterError(f"{directory} has no config.json", file=str(directory),
                          construct="an HF model directory (config.json + model.safetensors)",
                          fix="pass the directory written by save_pretrained")
    config = json.loads(config_path.read_text())
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    if not files:
        for path in sorted(directory.glob("pytorch_model*.bin")):
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    if not state:
        raise PorterError(f"{directory} holds no weights", file=str(directory),
                          construct="model.safetensors (or pytorch_model.bin)", found="none",
                          fix="pass the directory written by save_pretrained")
    return config, state


def write_hf(directory: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    """Write config.json (through transformers' LlamaConfig) and model.safetensors."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in config.items() if k not in ("model_type",)}
    LlamaConfig(**fields).save_pretrained(str(directory))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    return directory


# -- the two conversions, as `porter convert` runs them ------------------------------------------


def feature_args(profile, spec) -> dict:
    """The tree's dests for the spec's switches and numbers, as a converted checkpoint's args carry
    them: the defaults the port's entry point sets, without the spec's training defaults."""
    from porter.plan import make_plan

    defaults = make_plan(spec, profile).defaults
    return {k: v for k, v in defaults.items() if k not in spec.training_defaults}


def _tree_layout(model, target):
    from porter.features import profile_of
    from porter.source import SourceTree
    from porter.spec import Spec, load_spec
    from porter.verify.layout import read_layout

    spec = model if isinstance(model, Spec) else load_spec(model)
    profile = profile_of(SourceTree.open(target))
    return spec, profile, read_layout(profile, spec)


def stamp_tree_args(spec, profile, weights: MegatronWeights, out: Path, tp: int, pp: int,
                    timeout: float = 300.0) -> str:
    """Give the checkpoint the args the tree's own parser makes (porter.verify.treeargs).

    Returns how the args were made; when the tree cannot run here, the checkpoint keeps
    porter's own args (plain numbers and strings) and the reason is returned.
    """
    import tempfile

    from porter.verify.tree_run import RunShape, entry_points, run_in_tree, tree_argv

    shape = weights.shape
    script, provider = entry_points(profile.tree, spec)
    run_shape = RunShape(shape.num_layers, shape.hidden_size, shape.num_attention_heads,
                         shape.max_position_embeddings)
    with tempfile.TemporaryDirectory(prefix="porter-args-") as scratch:
        job = Path(scratch) / "job.json"
        job.write_text(json.dumps({
            "script_module": script, "extra_args_provider": provider, "vocab_size": shape.vocab_size,
            "argv": tree_argv(spec, profile, run_shape, tp, pp) + ["--ffn-hidden-size", str(shape.ffn_hidden_size)],
            "folder": str(Path(out).resolve() / TAG),
        }))
        try:
            run_in_tree(profile.tree.root, "porter.verify.treeargs", job, 1, Path(scratch) / "treeargs.log",
                        timeout, what="parsing the checkpoint's args with the tree's parser",
                        env={"WORLD_SIZE": str(tp * pp)})
        except PorterError as exc:
            return "porter's own (the tree's parser did not run here: " + exc.message + "; " + \
                (exc.found or "").strip().splitlines()[-1] + ")"
    return "the tree's own parser"


def checkpoint_from_hf(model, target, hf_dir, out, *, tp: int = 1, pp: int = 1, pipe: bool = True) -> dict:
    """HF directory -> a checkpoint of the ported tree at target. Returns a summary."""
    spec, profile, layout = _tree_layout(model, target)
    config, state = read_hf(Path(hf_dir))
    weights = hf_to_megatron(state, config, layout, tensor_parallel=tp)
    if weights.shape.num_layers % pp:
        raise PorterError(
            f"{weights.shape.num_layers} layers do not split over {pp} pipeline stages",
            construct="a pipeline-parallel size dividing the layer count", found=f"--pp {pp}",
            fix="choose --pp dividing num_hidden_layers",
        )
    files = write_checkpoint(weights, layout, Path(out), tp=tp, pp=pp, pipe=pipe,
                             feature_args=feature_args(profile, spec), hf_base=config)
    made_by = stamp_tree_args(spec, profile, weights, Path(out), tp, pp)
    return {
        "wrote": str(out), "files": len(files), "engine": "pipeline" if pipe else "plain (--no-pipeline-parallel)",
        "tensor_parallel": tp, "pipeline_parallel": pp, "args": made_by,
        "vocab": f"{weights.shape.vocab_size} padded to {weights.embedding.shape[0]}",
        "load_with": f"--load {out} --finetune --tensor-model-parallel-size {tp} "
                     f"--pipeline-model-parallel-size {pp}" + ("" if pipe else " --no-pipeline-parallel"),
    }


def hf_from_checkpoint(model, target, checkpoint, out, *, vocab_size: int | None = None) -> dict:
    """A checkpoint of the ported tree at target -> an HF directory. Returns a summary."""
    spec, profile, layout = _tree_layout(model, target)
    weights = read_checkpoint(Path(checkpoint), layout, vocab_size=vocab_size)
    state = megatron_to_hf(weights, layout)
    dtype = weights.embedding.dtype
    write_hf(Path(out), hf_config(weights.shape, layout, dtype, weights.extra.get("hf_config")), state)
    return {
        "wrote": str(out), "tensors": len(state), "layers": weights.shape.num_layers,
        "vocab": weights.shape.vocab_size, "from": f"{weights.extra['tensor_parallel']} tensor-parallel shard(s), "
        f"{'pipeline' if weights.extra['pipe'] else 'plain'} engine",
    }
