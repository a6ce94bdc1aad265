"""DeepSpeed checkpoint files: what the tree's load_checkpoint reads, and what its save writes.

A shard is what one tensor-parallel rank holds, written as
    pipeline engine:  <dir>/<tag>/layer_XX-model_TT-model_states.pt (one per layer spec and
                      TP rank) and mp_rank_MM_model_states.pt (client state, one per
                      model-parallel rank, MM = pp_rank * TP + tp_rank);
    plain engine:     <dir>/<tag>/mp_rank_TT_model_states.pt with 'module' holding the
                      nested dict of the model's state_dict_for_save_checkpoint;
plus <dir>/latest (DeepSpeed's tag file) and latest_checkpointed_iteration.txt. With
DeepSpeed's MoE layer (plain engine only) every expert is a file of its own besides
(porter/convert/experts.py).
"""

from __future__ import annotations

import argparse
import pickle
import re
import types
from pathlib import Path

import torch

from porter.convert.shape import ModelShape
from porter.convert.sharding import shard, unshard
from porter.convert.tensors import MegatronWeights, layer_names
from porter.differences.moe import weights as experts
from porter.errors import PorterError
from porter.layout import WeightLayout

TAG = "release"
CHECKPOINT_VERSION = 3.0


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
    files = {layout.pipe_embedding: {f"{layout.word_embeddings}.weight": local.embedding}}
    for i, layer in enumerate(local.layers):
        files[layout.pipe_layer(i)] = dict(layer)
    count = len(local.layers)
    if local.final_norm is not None:
        files[layout.pipe_final_norm(count)] = {"weight": local.final_norm}
    if local.output is not None:
        files[layout.pipe_output_layer(count)] = {layout.head_pipe_key: local.output}
    return files


def checkpoint_args(weights: MegatronWeights, layout: WeightLayout, tp: int, pp: int,
                    switches: dict) -> argparse.Namespace:
    """The `args` a Megatron checkpoint carries (what load_checkpoint compares), before the tree's
    own parser stamps them (porter.verify.treeargs)."""
    shape = weights.shape
    values = dict(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, kv_channels=shape.head_dim,
        make_vocab_size_divisible_by=layout.make_vocab_size_divisible_by,
        padded_vocab_size=weights.embedding.shape[0], tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        consumed_train_samples=0, consumed_valid_samples=0, iteration=0,
    )
    values.update(switches)
    return argparse.Namespace(**values)


def _client_state(weights, layout, tp, pp, args: dict, hf_config: dict) -> dict:
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
        "args": checkpoint_args(weights, layout, tp, pp, args),
        "porter": {"vocab_size": weights.shape.vocab_size, "hf_config": hf_config,
                   "layout": layout.as_dict()},
    }


def write_checkpoint(weights: MegatronWeights, layout: WeightLayout, out: Path, *, tp: int = 1, pp: int = 1,
                     pipe: bool = True, args: dict | None = None, hf_config: dict | None = None) -> list[Path]:
    """Write the DeepSpeed checkpoint the tree's load_checkpoint reads; returns the files.

    `args`: the tree's dests for the model's switches and numbers (eps, rotary base, key/value
    heads...), so that the checkpoint's args hold them; `hf_config`: the HF config it came from,
    kept for the way back."""
    if not pipe and pp != 1:
        raise PorterError(
            "the plain DeepSpeed engine (--no-pipeline-parallel) has no pipeline stages",
            construct="--pp 1 with --no-pipe", found=f"--pp {pp}",
            fix="write a pipeline-engine checkpoint (the default) for pipeline-parallel runs",
        )
    experts.check_engine(layout, pipe, tp)
    folder = Path(out) / TAG
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    shards = [shard(weights, layout, tp, r) for r in range(tp)]
    base = _client_state(weights, layout, tp, pp, args or {}, hf_config or {})
    if layout.num_experts:  # DeepSpeed's engine lists the expert count of each of its MoE layers
        base["num_experts"] = [weights.shape.num_experts] * len(weights.layers)
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
            if layout.num_experts:
                layers, files = experts.split_experts(local.layers, layout, weights.shape.num_experts)
                local = MegatronWeights(shape=local.shape, embedding=local.embedding, layers=layers,
                                        final_norm=local.final_norm, output=local.output)
                for (moe_layer, expert), state in files.items():
                    path = experts.expert_file(folder, moe_layer, expert, rank)
                    torch.save(state, path)
                    written.append(path)
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


def read_checkpoint(checkpoint: Path, layout: WeightLayout, vocab_size: int | None = None,
                    keep_padding: bool = False) -> MegatronWeights:
    """A DeepSpeed checkpoint of the tree (either engine, any TP/PP) -> one full copy.

    The real vocabulary: `vocab_size`, else what porter recorded, else the tokenizer the run
    trained with; when none is at hand it is refused (padding rows are never written into an
    HF model), unless `keep_padding` (verify compares every row)."""
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
    names = layer_names(layout)
    shards = []
    num_experts = 0
    if layer_files:
        by_rank: dict[int, dict[int, Path]] = {}
        for path in layer_files:
            match = re.match(r"layer_(\d+)-model_(\d+)-model_states\.pt", path.name)
            by_rank.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
        for rank in sorted(by_rank):
            files = by_rank[rank]
            emb = _load(files[layout.pipe_embedding])[f"{layout.word_embeddings}.weight"]
            layers = [_load(files[layout.pipe_layer(i)]) for i in range(num_layers)]
            norm_index, out_index = layout.pipe_final_norm(num_layers), layout.pipe_output_layer(num_layers)
            final = _load(files[norm_index])["weight"] if norm_index in files else None
            output = _load(files[out_index])[layout.head_pipe_key] if out_index in files else None
            shards.append((emb, layers, final, output))
    else:
        for rank, path in enumerate(mp_files):
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
            num_experts = experts.read_expert_files(folder, rank, layers, _load) if layout.num_experts else 0
            shards.append((emb, layers, final, output))
    known = set(names.values())
    if layout.num_experts:
        known |= experts.layer_keys(layout, num_experts)
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
    padded = shards[0][0].shape[0] * len(shards)
    vocab = vocab_size or porter_meta.get("vocab_size") or _tokenizer_vocab(args) or (padded if keep_padding else None)
    if vocab is None:
        tokenizer = getattr(args, "tokenizer_model", None)
        raise PorterError(
            "the checkpoint does not say its real vocabulary size",
            file=str(folder), construct="the vocabulary without Megatron's padding rows",
            found=f"{padded} padded rows; the tokenizer it trained with ({tokenizer or 'none recorded'}) is not at hand",
            fix="give the real size: --vocab-size N (the tokenizer's vocabulary), or run where the tokenizer file is",
        )
    first_layers = shards[0][1]
    halves = 1 if layout.up else 2  # a fused [gate; up] projection is twice the MLP width
    fc1 = experts.expert_keys(layout, 0)[0] if layout.num_experts else names["fc1"]
    ffn = first_layers[0][fc1].shape[0] // halves * len(shards) if first_layers else args.ffn_hidden_size
    heads = args.num_attention_heads
    shape = ModelShape(
        num_layers=num_layers, hidden_size=args.hidden_size, num_attention_heads=heads,
        ffn_hidden_size=ffn, vocab_size=vocab, num_query_groups=getattr(args, "num_key_value_heads", None) or heads,
        head_dim=getattr(args, "kv_channels", None) or 0, num_experts=num_experts if layout.num_experts else 0,
    )
    parts = [MegatronWeights(shape=shape, embedding=e, layers=ls, final_norm=f, output=o) for e, ls, f, o in shards]
    full = unshard(parts, layout)
    full.extra = {"hf_config": porter_meta.get("hf_config") or {}, "tensor_parallel": len(shards),
                  "pipeline_parallel": getattr(args, "pipeline_model_parallel_size", 1) or 1,
                  "pipe": bool(layer_files), "args": args}
    return full
