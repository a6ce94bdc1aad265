"""DeepSpeed checkpoint files: what the tree's load_checkpoint reads, and what its save writes.

A shard is what one tensor-parallel rank holds, written as
    pipeline engine:  <dir>/<tag>/layer_XX-model_TT-model_states.pt (one per layer spec and
                      TP rank) and mp_rank_MM_model_states.pt (client state, one per
                      model-parallel rank, MM = pp_rank * TP + tp_rank);
    plain engine:     <dir>/<tag>/mp_rank_TT_model_states.pt with 'module' holding the
                      nested dict of the model's state_dict_for_save_checkpoint;
plus <dir>/latest (DeepSpeed's tag file) and latest_checkpointed_iteration.txt. A layer tensor
a difference saves apart (DeepSpeed's MoE layer writes every expert to a file of its own) goes
where its Weight's `file` says (porter.weights).

Both ways stream (porter/convert/stream.py): `stream_checkpoint` writes the full model's
parts, one at a time, into every rank's files (each layer file closed when its layer is
written); `CheckpointReader` reads a checkpoint part by part, each tensor mapped from its
file when the part needs it, the ranks' shards joined a layer at a time.
"""

from __future__ import annotations

import argparse
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from porter.convert.output import staged
from porter.convert.pieces import as_meta, nbytes
from porter.convert.sharding import check_divisible, shard_layer, shard_tensor, unshard_tensor
from porter.convert.stream import Fill, Progress, Stats
from porter.convert.tensors import MegatronWeights, Part
from porter.convert.torch_files import TorchFile, tensor_offsets, write_skeleton
from porter.errors import PorterError
from porter.layout import WeightLayout
from porter.weights import ModelShape, ModelWeights

TAG = "release"
CHECKPOINT_VERSION = 3.0
OUR_NAMES = ("latest", "latest_checkpointed_iteration.txt", TAG)  # what a converted checkpoint folder holds


def layer_file(index: int, rank: int) -> str:
    return f"layer_{index:02d}-model_{rank:02d}-model_states.pt"


def mp_rank_file(mp_rank: int) -> str:
    return f"mp_rank_{mp_rank:02d}_model_states.pt"


def checkpoint_args(shape: ModelShape, padded_vocab: int, layout: WeightLayout, tp: int, pp: int,
                    switches: dict) -> argparse.Namespace:
    """The `args` a Megatron checkpoint carries (what load_checkpoint compares), before the tree's
    own parser stamps them (porter.verify.treeargs)."""
    values = dict(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, kv_channels=shape.head_dim,
        make_vocab_size_divisible_by=layout.make_vocab_size_divisible_by,
        padded_vocab_size=padded_vocab, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        consumed_train_samples=0, consumed_valid_samples=0, iteration=0,
    )
    values.update(switches)
    return argparse.Namespace(**values)


def _client_state(weights: ModelWeights, padded_vocab: int, tp: int, pp: int, args: dict, hf_config: dict) -> dict:
    shape, layout = weights.shape, weights.layout
    state = {
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
        "args": checkpoint_args(shape, padded_vocab, layout, tp, pp, args),
        "porter": {"vocab_size": shape.vocab_size, "hf_config": hf_config, "layout": layout.as_dict()},
    }
    state.update(weights.client_state())  # what the differences add (DeepSpeed's expert counts)
    return state


def _check(weights: ModelWeights, tp: int, pp: int, pipe: bool, num_layers: int) -> None:
    if not pipe and pp != 1:
        raise PorterError(
            "the plain DeepSpeed engine (--no-pipeline-parallel) has no pipeline stages",
            construct="--pp 1 with --no-pipe", found=f"--pp {pp}",
            fix="write a pipeline-engine checkpoint (the default) for pipeline-parallel runs",
        )
    weights.check_checkpoint(pipe, tp)
    if num_layers % pp:
        raise PorterError(
            f"{num_layers} layers do not split over {pp} pipeline stages",
            construct="a pipeline-parallel size dividing the layer count", found=f"--pp {pp}",
            fix="choose --pp dividing num_hidden_layers",
        )


def slots(parts: Iterator[Part], weights: ModelWeights, tp: int, pipe: bool) -> Iterator[tuple[str, tuple, torch.Tensor]]:
    """The full model's parts -> (file, key path in it, tensor) of every rank's shard, in order:
    a layer's files are complete when its layer is done. A tensor made of pieces (the fused
    gate+up halves) comes as the tuple of its pieces; a tensor saved apart goes to its own file."""
    layout, num_layers = weights.layout, weights.shape.num_layers
    module = ("module", layout.language_model_key)
    encoder = (*module, layout.encoder_key)
    holding = 0  # layers so far whose tensors are (partly) saved apart: DeepSpeed numbers its MoE layers so
    for kind, i, value in parts:
        if value is None:
            continue
        for rank in range(tp):
            if kind == "embedding":
                where = (layer_file(layout.pipe_embedding, rank), (f"{layout.word_embeddings}.weight",)) if pipe else \
                    (mp_rank_file(rank), (*module, layout.embedding_key, layout.word_embeddings_key, "weight"))
                yield *where, shard_tensor(value, "rows", tp, rank)
            elif kind == "final_norm":
                where = (layer_file(layout.pipe_final_norm(num_layers), rank), ("weight",)) if pipe else \
                    (mp_rank_file(rank), (*encoder, f"{layout.final_norm}.weight"))
                yield *where, value
            elif kind == "output":
                where = (layer_file(layout.pipe_output_layer(num_layers), rank), (layout.head_pipe_key,)) if pipe else \
                    (mp_rank_file(rank), ("module", *layout.head_keys))
                yield *where, shard_tensor(value, "rows", tp, rank)
            else:
                apart = {w.key: w for w in weights.apart(i)}
                for key, tensor in shard_layer(value, weights.roles(i), tp, rank, pieces=True).items():
                    tensor = tensor[0] if len(tensor) == 1 else tensor
                    if key in apart:
                        file, inside = apart[key].file(i, holding, rank)
                        yield file, (inside,), tensor
                    else:
                        yield ((layer_file(layout.pipe_layer(i), rank), (key,)) if pipe else
                               (mp_rank_file(rank), (*encoder, f"{layout.layers}.{i}.{key}"))) + (tensor,)
        if kind == "layer" and weights.apart(i):
            holding += 1


def _set(obj: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = as_meta(value)


def _files(planned: list, base: dict, tp: int, pp: int, pipe: bool) -> dict[str, dict]:
    """Every file of the checkpoint's tag folder: name -> its object (tensors on the meta device)."""
    files: dict[str, dict] = {}
    if pipe:
        for mp_rank in range(tp * pp):
            files[mp_rank_file(mp_rank)] = {**base, "mp_world_size": tp * pp}
    else:
        for rank in range(tp):
            files[mp_rank_file(rank)] = {**base, "module": {}}
    for file, path, tensor in planned:
        _set(files.setdefault(file, {}), path, tensor)
    return files


def stream_checkpoint(parts_of: Callable[[bool], Iterator[Part]], weights: ModelWeights,
                      out: Path, *, tp: int = 1, pp: int = 1, pipe: bool = True, args: dict | None = None,
                      hf_config: dict | None = None, stamp: Callable[[Path], str] | None = None,
                      progress: Progress | None = None) -> tuple[list[Path], Stats, str | None]:
    """Write the DeepSpeed checkpoint the tree's load_checkpoint reads, from the full model's
    parts (`parts_of(meta)`: the same parts every call; on the meta device when asked).

    `args`: the tree's dests for the model's switches and numbers (eps, rotary base, key/value
    heads...), so that the checkpoint's args hold them; `hf_config`: the HF config it came from,
    kept for the way back; `stamp(tag folder)`: gives the client state files the tree's own args
    (porter.convert.run.stamp_tree_args), before their tensors go in, or meanwhile when they
    hold none (the pipeline engine's). Returns (the files, the figures, what stamp said)."""
    shape = weights.shape
    _check(weights, tp, pp, pipe, shape.num_layers)
    progress = progress or Progress()
    stats = Stats()
    planned = []
    padded = None
    for file, path, tensor in slots(parts_of(True), weights, tp, pipe):
        if padded is None:  # the embedding comes first: its rows are the padded vocabulary
            padded = tensor.shape[0] * tp
            check_divisible(shape, padded, tp)
        planned.append((file, path, tensor))
    base = _client_state(weights, padded, tp, pp, args or {}, hf_config or {})
    files = _files(planned, base, tp, pp, pipe)
    total = sum(nbytes(t) for _, _, t in planned)
    progress.start(len(planned), total)
    stamped = None
    with staged(out, total + 4096 * len(files), lambda name: name in OUR_NAMES) as partial:
        folder = partial / TAG
        folder.mkdir()
        for name, obj in files.items():
            write_skeleton(folder / name, obj)
        (partial / "latest").write_text(TAG)
        (partial / "latest_checkpointed_iteration.txt").write_text(TAG)
        stamper = None
        if stamp is not None and pipe:  # client state apart from the tensors: the tree stamps it meanwhile
            result: list = []

            def run_stamp() -> None:
                try:
                    result.append(stamp(folder))
                except BaseException as exc:  # raised in the main thread, after the join
                    result.append(exc)

            stamper = threading.Thread(target=run_stamp, daemon=True)
            stamper.start()
        elif stamp is not None:
            stamped = stamp(folder)
        places = {}
        for name in {file for file, _, _ in planned}:
            places.update({(name, path): offset for path, offset in tensor_offsets(folder / name).items()})
        fill = Fill(folder, planned, places, stats, progress)
        try:
            for file, path, tensor in slots(parts_of(False), weights, tp, pipe):
                fill.put(file, path, tensor)
            fill.check()
        finally:
            fill.close()
            if stamper is not None:  # its process writes into the folder: wait for it, even on Ctrl-C
                stamper.join()
        if stamper is not None:
            if isinstance(result[0], BaseException):
                raise result[0]
            stamped = result[0]
        stats.files = len(files)
    written = [Path(out) / TAG / name for name in files]
    stats.bytes_written = sum(p.stat().st_size for p in written)
    return written, stats.finish(), stamped


def write_checkpoint(model: MegatronWeights, out: Path, *, tp: int = 1, pp: int = 1,
                     pipe: bool = True, args: dict | None = None, hf_config: dict | None = None) -> list[Path]:
    """Write a full copy in memory as the DeepSpeed checkpoint the tree's load_checkpoint reads;
    returns the files (see stream_checkpoint)."""
    def parts_of(meta: bool) -> Iterator[Part]:
        for kind, i, value in model.parts():
            if meta:
                value = {k: v.to("meta") for k, v in value.items()} if isinstance(value, dict) else \
                    None if value is None else value.to("meta")
            yield kind, i, value

    return stream_checkpoint(parts_of, model.weights, out, tp=tp, pp=pp, pipe=pipe, args=args,
                             hf_config=hf_config)[0]


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


class _Rank:
    """One tensor-parallel rank's shard: where each of its tensors is (file, meta tensor)."""

    def __init__(self) -> None:
        self.embedding = None
        self.layers: list[dict[str, tuple[TorchFile, torch.Tensor]]] = []
        self.final_norm = None
        self.output = None


class CheckpointReader:
    """A DeepSpeed checkpoint of the tree (either engine, any TP/PP), read part by part.

    Opening it reads the files' structure only (no tensor data): the args, the model's shape,
    where each tensor is. `parts(weights)` then gives the full model part by part, each rank's
    tensors mapped from their files as the part is made and joined (porter/convert/sharding.py),
    each layer's tensors as its weights (porter.weights.ModelWeights) say, those saved apart read
    from their own files.

    The real vocabulary: `vocab_size`, else what porter recorded, else the tokenizer the run
    trained with; when none is at hand it is refused (padding rows are never written into an
    HF model), unless `keep_padding` (verify compares every row)."""

    def __init__(self, checkpoint: Path, layout: WeightLayout, vocab_size: int | None = None,
                 keep_padding: bool = False) -> None:
        self.layout = layout
        self.bytes_read = 0
        folder = self.folder = _tag_folder(checkpoint)
        mp_files = sorted(folder.glob("mp_rank_*_model_states.pt"))
        if not mp_files:
            raise PorterError(f"no mp_rank_*_model_states.pt in {folder}", file=str(folder),
                              fix="pass the checkpoint directory (the one holding 'latest')")
        first = TorchFile(mp_files[0])
        meta = first.structure
        args = meta.get("args")
        if args is None:
            raise PorterError("the checkpoint carries no Megatron args", file=str(mp_files[0]),
                              construct="client state 'args'", fix="pass a checkpoint written by the tree or by porter")
        num_layers = args.num_layers
        layer_files = sorted(folder.glob("layer_*-model_*-model_states.pt"))
        self.ranks = self._pipe_ranks(layer_files, num_layers) if layer_files else \
            self._plain_ranks([first, *(TorchFile(p) for p in mp_files[1:])], num_layers)
        porter_meta = meta.get("porter") or {}
        padded = self.ranks[0].embedding[1].shape[0] * len(self.ranks)
        vocab = vocab_size or porter_meta.get("vocab_size") or _tokenizer_vocab(args) or \
            (padded if keep_padding else None)
        if vocab is None:
            tokenizer = getattr(args, "tokenizer_model", None)
            raise PorterError(
                "the checkpoint does not say its real vocabulary size",
                file=str(folder), construct="the vocabulary without Megatron's padding rows",
                found=f"{padded} padded rows; the tokenizer it trained with ({tokenizer or 'none recorded'}) "
                      "is not at hand",
                fix="give the real size: --vocab-size N (the tokenizer's vocabulary), or run where the tokenizer file is",
            )
        heads = args.num_attention_heads
        self.shape = ModelShape(
            num_layers=num_layers, hidden_size=args.hidden_size, num_attention_heads=heads,
            ffn_hidden_size=self._ffn(args), vocab_size=vocab,
            kv_heads=getattr(args, "num_key_value_heads", None) or heads,
            head_dim=getattr(args, "kv_channels", None) or 0,
        )
        self.padded_vocab = padded
        self.extra = {"hf_config": porter_meta.get("hf_config") or {}, "tensor_parallel": len(self.ranks),
                      "pipeline_parallel": getattr(args, "pipeline_model_parallel_size", 1) or 1,
                      "pipe": bool(layer_files), "args": args}
        self._files: dict[str, TorchFile] = {}

    def _ffn(self, args) -> int:
        """The MLP width: the run's --ffn-hidden-size, else the columns of layer 0's MLP output
        projection on every rank (a row-parallel linear: [h, ffn / tp] each)."""
        if isinstance(getattr(args, "ffn_hidden_size", None), int):
            return args.ffn_hidden_size
        key = f"{self.layout.mlp}.{self.layout.fc2}.weight"
        first = self.ranks[0].layers
        if not first or key not in first[0]:
            raise PorterError("the checkpoint does not say its MLP width", file=str(self.folder),
                              construct="args.ffn_hidden_size, or layer 0's " + key, found="neither",
                              fix="pass a checkpoint written by the tree or by porter")
        return first[0][key][1].shape[1] * len(self.ranks)

    @property
    def dtype(self) -> torch.dtype:
        """The checkpoint's dtype, as its word embeddings have it."""
        return self.ranks[0].embedding[1].dtype

    def _pipe_ranks(self, layer_files: list[Path], num_layers: int) -> list[_Rank]:
        layout = self.layout
        by_rank: dict[int, dict[int, Path]] = {}
        for path in layer_files:
            match = re.match(r"layer_(\d+)-model_(\d+)-model_states\.pt", path.name)
            by_rank.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
        ranks = []
        for number in sorted(by_rank):
            files = by_rank[number]
            rank = _Rank()
            ranks.append(rank)
            rank.embedding = self._place(files, number, layout.pipe_embedding, f"{layout.word_embeddings}.weight")
            rank.layers = [self._place(files, number, layout.pipe_layer(i)) for i in range(num_layers)]
            norm_index, out_index = layout.pipe_final_norm(num_layers), layout.pipe_output_layer(num_layers)
            rank.final_norm = self._place(files, number, norm_index, "weight") if norm_index in files else None
            rank.output = self._place(files, number, out_index, layout.head_pipe_key) if out_index in files else None
        return ranks

    def _place(self, files: dict[int, Path], rank: int, index: int, key: str | None = None):
        """(file, meta tensor) of `key` in a rank's layer file, or {key: (file, meta tensor)} of all of it."""
        if index not in files:
            raise PorterError("the checkpoint lacks a layer file", file=str(self.folder),
                              construct=layer_file(index, rank), found="no such file",
                              fix="copy the whole checkpoint folder")
        file = TorchFile(files[index])
        if key is not None:
            return file, file.structure[key]
        return {k: (file, t) for k, t in file.structure.items() if torch.is_tensor(t)}

    def _plain_ranks(self, mp_files: list[TorchFile], num_layers: int) -> list[_Rank]:
        layout = self.layout
        ranks = []
        for file in mp_files:
            rank = _Rank()
            ranks.append(rank)
            module = file.structure["module"]
            lm = module[layout.language_model_key]
            rank.embedding = (file, lm[layout.embedding_key][layout.word_embeddings_key]["weight"])
            encoder = flatten_state(lm[layout.encoder_key])
            output = flatten_state(module).get(".".join(layout.head_keys))
            for i in range(num_layers):
                prefix = f"{layout.layers}.{i}."
                rank.layers.append({k[len(prefix):]: (file, v) for k, v in encoder.items() if k.startswith(prefix)})
            final = encoder.get(f"{layout.final_norm}.weight")
            rank.final_norm = None if final is None else (file, final)
            rank.output = None if output is None else (file, output)
        return ranks

    def _apart(self, weight, i: int, holding: int, rank: int):
        """(file, meta tensor) of a layer tensor saved in a file of its own."""
        name, key = weight.file(i, holding, rank)
        if name not in self._files:
            path = self.folder / name
            if not path.exists():
                raise PorterError("the checkpoint lacks a file of its own of a layer tensor", file=str(self.folder),
                                  construct=f"{name} (layer {i}'s {weight.key})", found="no such file",
                                  fix="copy the whole checkpoint folder")
            self._files[name] = TorchFile(path)
        structure = self._files[name].structure
        if key not in structure:
            raise PorterError("a checkpoint file lacks a tensor", file=str(self.folder / name), construct=key,
                              found=", ".join(k for k in structure if torch.is_tensor(structure[k])) or "no tensors",
                              fix="is this a checkpoint of the ported model?")
        return self._files[name], structure[key]

    def _check_keys(self, weights: ModelWeights, i: int, rank: _Rank) -> None:
        """Layer i's tensors in a rank's file are the ones its weights say, no more and no fewer."""
        wanted = {w.key for w in weights.layer(i) if w.file is None}
        found = set(rank.layers[i])
        if found != wanted:
            raise PorterError(
                "the checkpoint's layer tensors are not the ported model's",
                file=str(self.folder), construct=f"layer {i}: " + ", ".join(sorted(wanted)),
                found=", ".join(f"{k} (unknown)" for k in sorted(found - wanted)) + ("; " if found - wanted else "")
                + ", ".join(f"{k} (missing)" for k in sorted(wanted - found)),
                fix="is this a checkpoint of this port's model (porter convert, or the tree's training)?",
            )

    def _get(self, place, meta: bool) -> torch.Tensor:
        file, tensor = place
        if meta:
            return tensor
        read = file.read(tensor)
        self.bytes_read += read.numel() * read.element_size()
        return read

    def parts(self, weights: ModelWeights, meta: bool = False) -> Iterator[Part]:
        """The full model, part by part (on the meta device when asked: nothing read); the
        embedding and the head come as pieces (porter/convert/pieces.py)."""
        ranks = self.ranks
        # the embedding and the head as their ranks' pieces: written out, never put together
        yield "embedding", None, tuple(self._get(r.embedding, meta) for r in ranks)
        holding = 0
        for i in range(self.shape.num_layers):
            layer = {}
            for rank in ranks:
                self._check_keys(weights, i, rank)
            for weight in weights.layer(i):
                if weight.made is not None and weight.key not in ranks[0].layers[i]:
                    continue
                holders = ranks[:1] if weight.role == "replicated" else ranks  # a replica is read from rank 0 only
                places = [self._apart(weight, i, holding, n) if weight.file else r.layers[i][weight.key]
                          for n, r in enumerate(holders)]
                layer[weight.key] = unshard_tensor([self._get(place, meta) for place in places], weight.role)
            holding += bool(weights.apart(i))
            yield "layer", i, layer
        first = ranks[0]
        yield "final_norm", None, None if first.final_norm is None else self._get(first.final_norm, meta)
        yield "output", None, None if first.output is None else tuple(self._get(r.output, meta) for r in ranks)


def read_checkpoint(reader: CheckpointReader, weights: ModelWeights) -> MegatronWeights:
    """A DeepSpeed checkpoint of the tree (either engine, any TP/PP) -> one full copy, in memory
    (for small models: verify's; conversions stream with CheckpointReader)."""
    return MegatronWeights.collect(reader.parts(weights), weights, reader.extra)
