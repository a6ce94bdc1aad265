"""HF model directories, as `from_pretrained` reads them and `save_pretrained` writes them.

Reading (`HFDir`): config.json, and the weights one tensor at a time, each read when the
conversion asks for it: model.safetensors, or the shards model.safetensors.index.json names
(its weight_map decides which file holds which tensor), else pytorch_model*.bin. Block-fp8
weights are dequantized to bf16 as they are read (porter/convert/fp8.py). A multimodal model's
folder is its language model's: the text config and the language model's tensors under the
text class's names, the vision tower's and the projector's left out unread (porter/multimodal.py).

Writing (`stream_hf`): config.json through the transformers config class, and the tensors
as they come, into safetensors shards of at most `max_shard_size` (save_pretrained's
spelling and meaning, default "5GB") with model.safetensors.index.json when there are
several; one model.safetensors when they fit in one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from porter import multimodal
from porter.convert import fp8
from porter.convert import safetensors_files as safetensors
from porter.convert.output import staged
from porter.convert.pieces import as_meta, nbytes
from porter.convert.stream import Fill, Progress, Stats
from porter.convert.tensors import Take
from porter.convert.torch_files import TorchFile
from porter.errors import PorterError
from porter.hf_config import hf_class_of, installed_rope_spelling

DEFAULT_SHARD_SIZE = "5GB"
INDEX = "model.safetensors.index.json"
# what a converted HF folder holds (an earlier conversion's folder is replaced as a whole)
OUR_NAMES = re.compile(r"config\.json|generation_config\.json|model(-\d{5}-of-\d{5})?\.safetensors|"
                       r"model\.safetensors\.index\.json")


def _config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.exists():
        raise PorterError(f"{directory} has no config.json", file=str(directory),
                          construct="an HF model directory (config.json + model.safetensors)",
                          fix="pass the directory written by save_pretrained")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise PorterError(f"malformed config.json: {exc.msg}", file=str(config_path), construct="JSON",
                          found=f"line {exc.lineno} column {exc.colno}",
                          fix="fix the JSON, or save the model again") from exc


class HFDir:
    """An HF model directory: its config, and where each of its tensors is (nothing read yet).
    Of a multimodal model, its language model: `multimodal` says which model it is part of,
    `left_out` the tensors not read (part -> count)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory = Path(directory)
        self.config = raw = _config(directory)
        self.multimodal = multimodal.of(raw)
        config_path = str(directory / "config.json")
        if self.multimodal is not None:
            self.config = multimodal.text_config(raw, self.multimodal, config_path)
        self.quantized = fp8.scheme(raw, config_path)
        self.bytes_read = 0
        self._torch_files: dict[Path, TorchFile] = {}
        self._headers: dict[Path, safetensors.Header] = {}
        self.where: dict[str, Path] = self._safetensors() or self._bins()
        if not self.where:
            raise PorterError(f"{directory} holds no weights", file=str(directory),
                              construct="model.safetensors (or pytorch_model.bin)", found="none",
                              fix="pass the directory written by save_pretrained")
        scales = {name for name in self.where if name.endswith(fp8.SCALE)}
        stored = [name for name in self.where if name not in scales]
        self.stored = {name: name for name in stored}  # the name read -> the name in the file
        self.left_out: dict[str, int] = {}
        if self.multimodal is not None:
            split = multimodal.split(stored, self.multimodal, config_path)
            self.stored, self.left_out = split.text, split.left_out
        self.names = {name: self.where[file_name] for name, file_name in self.stored.items()}

    def _safetensors(self) -> dict[str, Path]:
        index = self.directory / INDEX
        if index.exists():
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
            missing = sorted({f for f in weight_map.values() if not (self.directory / f).exists()})
            if missing:
                raise PorterError(f"{INDEX} names shards that are not there", file=str(index),
                                  construct="every file of its weight_map", found="missing: " + ", ".join(missing),
                                  fix="download or copy the whole model folder")
            return {name: self.directory / file for name, file in weight_map.items()}
        single = self.directory / "model.safetensors"
        files = [single] if single.exists() else sorted(self.directory.glob("*.safetensors"))
        return {name: path for path in files for name in self._header(path).names}

    def _header(self, path: Path) -> safetensors.Header:
        if path not in self._headers:
            self._headers[path] = safetensors.Header(path)
        return self._headers[path]

    def _bins(self) -> dict[str, Path]:
        where = {}
        for path in sorted(self.directory.glob("pytorch_model*.bin")):
            file = self._torch_files[path] = TorchFile(path, trusted=False)
            where.update({name: path for name, t in file.structure.items() if torch.is_tensor(t)})
        return where

    def _read(self, name: str, meta: bool) -> torch.Tensor:
        path = self.where[name]
        if path.suffix == ".bin":
            file = self._torch_files[path]
            stored = file.structure[name]
            return stored if meta else file.read(stored)
        header = self._header(path)
        return header.meta(name) if meta else header.read(name)

    def tensor(self, name: str, meta: bool = False) -> torch.Tensor:
        """One tensor, read as it is used (bf16 from block-fp8 ones); on the meta device when asked."""
        name = self.stored[name]
        weight = self._read(name, meta)
        scale_name = name + fp8.SCALE
        if self.quantized is not None and scale_name in self.where:
            scale = self._read(scale_name, meta)
            if not meta:
                self.bytes_read += nbytes(weight) + nbytes(scale)
            return self.quantized.dequantize(weight, scale)
        if not meta:
            self.bytes_read += nbytes(weight)
        return weight

    def take(self, meta: bool = False) -> Take:
        return Take(self.names, lambda name: self.tensor(name, meta), len(self.names))

    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor by name (each mapped from its file: for small models and tests)."""
        return {name: self.tensor(name) for name in self.names}


def read_hf(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a directory `from_pretrained` reads."""
    source = HFDir(directory)
    return source.config, source.state()


def _write_config(directory: Path, config: dict, hf_class: str) -> None:
    config_class = hf_class_of(hf_class).config_class
    fields = {k: v for k, v in installed_rope_spelling(config).items() if k not in ("model_type",)}
    config_class(**fields).save_pretrained(str(directory))


def check_shard_size(max_shard_size: int | str) -> int | str:
    """save_pretrained's max_shard_size ("5GB", "500MB", or bytes), refused by name when it is not one."""
    from huggingface_hub.serialization._base import parse_size_to_int

    try:
        if isinstance(max_shard_size, str) and not max_shard_size.strip().isdigit():
            parse_size_to_int(max_shard_size)
            return max_shard_size
        return int(max_shard_size)
    except ValueError as exc:
        raise PorterError(f"--max-shard-size {max_shard_size} is not a size", construct="a size as save_pretrained "
                          "spells it: digits and a unit (KB, MB, GB, TB), e.g. 5GB, or a number of bytes",
                          found=str(exc), fix="pass e.g. --max-shard-size 5GB") from exc


def stream_hf(out: Path, config: dict, tensors_of: Callable[[bool], Iterator[tuple[str, torch.Tensor]]],
              hf_class: str = "LlamaForCausalLM", max_shard_size: int | str = DEFAULT_SHARD_SIZE,
              progress: Progress | None = None) -> tuple[list[Path], Stats]:
    """Write an HF model directory from its tensors as they come (`tensors_of(meta)`: the same
    tensors in the same order every call; on the meta device when asked), without
    lm_head.weight when the config ties it to the embedding. Returns (the files, the figures)."""
    max_shard_size = check_shard_size(max_shard_size)
    progress = progress or Progress()
    stats = Stats()
    tied = bool(config.get("tie_word_embeddings"))  # the head is the embedding: HF's tied checkpoints omit it

    def tensors(meta: bool) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, t) for name, t in tensors_of(meta) if not (tied and name == "lm_head.weight"))

    plan = {name: as_meta(t) for name, t in tensors(True)}
    split = safetensors.split(plan, max_shard_size)
    planned = [(split.tensor_to_filename[name], name, t) for name, t in plan.items()]
    total = sum(nbytes(t) for t in plan.values())
    progress.start(len(planned), total)
    with staged(out, total + 65536 * (len(split.filename_to_tensors) + 2), lambda name: bool(OUR_NAMES.fullmatch(name))
                ) as partial:
        _write_config(partial, config, hf_class)
        places = {}
        for file, names in split.filename_to_tensors.items():
            offsets = safetensors.write_header(partial / file, {n: plan[n] for n in names}, {"format": "pt"})
            places.update({(file, name): offset for name, offset in offsets.items()})
        if split.is_sharded:
            index = safetensors.index(split, sum(t.numel() for t in plan.values()))
            (partial / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        fill = Fill(partial, planned, places, stats, progress)
        try:
            for name, tensor in tensors(False):
                fill.put(split.tensor_to_filename[name], name, tensor)
            fill.check()
        finally:
            fill.close()
    written = sorted(Path(out).iterdir())
    stats.files = len(written)
    stats.bytes_written = sum(p.stat().st_size for p in written)
    return written, stats.finish()


def write_hf(directory: Path, config: dict, state: dict[str, torch.Tensor], hf_class: str = "LlamaForCausalLM",
             max_shard_size: int | str = DEFAULT_SHARD_SIZE) -> Path:
    """Write config.json (through the transformers config class of `hf_class`) and the state dict
    as save_pretrained does (without lm_head.weight when the config ties it to the embedding)."""
    stream_hf(Path(directory), config,
              lambda meta: ((k, v.to("meta") if meta else v) for k, v in state.items()), hf_class, max_shard_size)
    return Path(directory)
