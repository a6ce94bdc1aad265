"""The two conversions as `porter convert` runs them, carrying every number both ways.

HF -> Megatron: the HF config's numbers (norm epsilon, rotary base and scaling, key/value
heads, head size, MLP width, vocabulary) become the port's switch values, through each
difference (porter/differences/: `from_hf`, then `run_argv`): the tree's own parser makes the
checkpoint's args from them, so a plain `--load` needs no extra flags. A config whose
architecture the port cannot run (a bias the port has no switch for, GQA in a port without
it...) is refused by field.
Megatron -> HF: the checkpoint keeps the source config.json as it was; on the way back that
file is written again, changed only where the checkpoint's args (what training can change:
the rotary base and scaling, the window, the norm epsilon, the context) differ from what
porter read in it, so a published config round-trips to a file transformers reads field for
field as the original. Without one (a checkpoint the tree trained from scratch) the args give
the numbers, the spec the architecture, the tokenizer the token ids.
Both ways every tensor's shape is checked against the config before anything is written
(porter/convert/shape_check.py).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from porter.convert import shape_check
from porter.convert.checkpoint import CheckpointReader, read_checkpoint, stream_checkpoint
from porter.convert.hf_dir import DEFAULT_SHARD_SIZE, HFDir, check_shard_size, stream_hf
from porter.convert.stream import Progress
from porter.convert.tensors import MegatronWeights, hf_parts, hf_tensors, hf_to_megatron
from porter.differences.tokenizer import token_ids
from porter.errors import PorterError
from porter.hf_config import HFConfig, hf_config_of, rope_spelling
from porter.hf_reading import ROPE_FIELDS, reading, rope_parameters_of
from porter.layout import WeightLayout
from porter.profile.layout import read_layout
from porter.treerun.argv import (
    entry_points,
    expert_parallel_argv,
    is_number,
    numbers_argv,
    plan_numbers,
    tree_argv,
)
from porter.treerun.in_tree import run_in_tree
from porter.treerun.shape import RunShape
from porter.weights import ModelShape, ModelWeights

# HF config fields kept from the source model on the way back (not architecture: token ids...)
PASSED_THROUGH = ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype")


class Port:
    """A ported tree as conversion sees it: its spec, profile, weight layout and switches."""

    def __init__(self, model, target) -> None:
        from porter.catalog import load_spec, profile_of
        from porter.naming import spec_in_tree
        from porter.plan import make_plan
        from porter.source import SourceTree
        from porter.spec import Spec

        tree = SourceTree.open(target)
        self.spec = spec_in_tree(model if isinstance(model, Spec) else load_spec(model), tree)
        self.profile = profile_of(tree)
        self.layout: WeightLayout = read_layout(self.profile, self.spec)
        plan = make_plan(self.spec, self.profile)
        self.switches = plan.switches
        # the numbers the port's entry point sets by default (dest -> spec field)
        self._default_fields = dict(plan.default_fields)

    def weights(self, config: dict, shape: ModelShape | None = None, hf_names=None) -> ModelWeights:
        """The model's weights, layer by layer, as the port's differences lay them out (porter.weights):
        for an HF config (its sizes, unless `shape`), reading an HF model with `hf_names` at hand."""
        return ModelWeights(self.layout, shape or ModelShape.from_hf(config), config, self.spec.wanted(), hf_names)

    def check_hf_shapes(self, shapes: dict, config: HFConfig) -> None:
        """Refuse HF tensors (name -> shape) that contradict the config (read as transformers reads it)."""
        shape_check.check_hf(shapes, config.raw if isinstance(config, HFConfig) else config, self.spec.hf_class,
                             getattr(config, "path", "config.json"))

    def read(self, checkpoint: Path, vocab_size: int | None = None, keep_padding: bool = False
             ) -> tuple[CheckpointReader, ModelWeights]:
        """A checkpoint of the tree, opened (nothing read yet), and its weights as the port lays
        them out, for the HF config its args give."""
        reader = CheckpointReader(Path(checkpoint), self.layout, vocab_size=vocab_size, keep_padding=keep_padding)
        return reader, self.weights(hf_config_for(self, reader, reader.dtype), reader.shape)

    def read_checkpoint(self, checkpoint: Path, vocab_size: int | None = None) -> MegatronWeights:
        """A checkpoint of the tree, whole in memory (small models: tests, verify)."""
        reader, weights = self.read(checkpoint, vocab_size=vocab_size)
        return read_checkpoint(reader, weights)

    def to_megatron(self, state: dict, config: dict, tensor_parallel: int = 1) -> MegatronWeights:
        """An HF state dict and config, whole in memory, in the tree's layout (small models: tests, verify)."""
        return hf_to_megatron(state, config, self.layout, self.spec.wanted(), tensor_parallel)

    def pipeline_engine(self) -> bool:
        """Does the port's model run on the pipeline engine (else only on the plain one)?"""
        return all(d.pipeline_engine for d in self.spec.wanted())

    def expert_parallel_argv(self, size: int) -> list[str]:
        """The tree's options that shard the port's experts over `size` ranks (verify, smoke)."""
        return expert_parallel_argv(self.spec, self.switches, size)

    def spec_for(self, config: dict, path: str = "config.json"):
        """The port's spec with the HF config's numbers; refused where the architecture differs."""
        from porter.catalog import fields
        from porter.hf_config import spec_values_from_hf

        values = spec_values_from_hf(HFConfig(config, path), self.spec.differences)
        schema = fields()
        problems = []
        # a difference's fields that spell the port's model another way (a bias per site)
        same = {name for d in self.spec.differences if d.same_model(self.spec, values) for name in d.fields}
        for name, value in values.items():
            mine = self.spec[name]
            if name.startswith(("tokenizer.", "sizes.")) or value == mine or value is None or name in same:
                continue  # None: the config says nothing of it (a rule its explicit numbers replace)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and (mine is not None or schema[name].base is not None):
                continue  # a number the port's switch takes
            if name in switchable_fields(self.spec):
                continue
            problems.append(f"{name} = {value!r} (the port: {mine!r})")
        if problems:
            raise PorterError(
                f"the HF model's architecture differs from the {self.spec.name} port's",
                file=path, construct="the spec fields the port implements",
                found="; ".join(problems),
                fix=f"convert a model of this port's family, or port the model's own config first "
                    f"(porter apply {path} --target ...)",
            )
        return self.spec.with_values(**{k: v for k, v in values.items() if not k.startswith("tokenizer.")})

    def numbers(self, spec) -> dict[str, tuple[str, Any]]:
        """dest -> (spec field, value) of the spec's numbers, as the port's entry point sets them
        (norm epsilon, rotary base, key/value heads, MLP width, sizes)."""
        from porter.plan import make_plan

        return self._numbers(make_plan(spec, self.profile), spec)

    def _numbers(self, plan, spec) -> dict[str, tuple[str, Any]]:
        switchable = switchable_fields(self.spec)
        out = plan_numbers(plan, switchable)
        # what this spec leaves unset or changes is said outright, not left to the entry point's
        # default (the bundled spec's): a window turned off, a head size of hidden / heads
        for dest, field in self._default_fields.items():
            if dest in out:
                continue
            value = spec[field]
            if value is None:
                value = unset_value(spec, field)
                if value is not None:
                    out[dest] = (field, value)
            elif field in switchable:
                out[dest] = (field, value)
        return out

    def run_argv(self, spec) -> list[str]:
        """The tree's options that set the spec's numbers, for its parser (the sizes are the
        caller's: porter.treerun.argv.tree_argv)."""
        return numbers_argv(self.numbers(spec), self.profile)

    def spec_from_args(self, args) -> Any:
        """The port's spec with the numbers a checkpoint's args hold."""
        values: dict[str, Any] = {}
        schema = self.spec.schema
        for dest, (field, _) in self.numbers(self.spec).items():
            value = getattr(args, dest, None)
            if isinstance(value, list) and value and is_number(value) and list not in schema[field].kinds:
                value = max(value)  # a count per layer (--num-experts): the spec holds the sparse layers'
            if is_number(value) or (field in switchable_fields(self.spec) and isinstance(value, str)):
                values[field] = value
        return self.spec.with_values(**values)


def unset_value(spec, field: str) -> Any:
    """How the tree's command line says a field `spec` leaves unset (Difference.unset)."""
    owner = next((d for d in spec.differences if field in d.fields), None)
    return owner.unset(spec, field) if owner is not None else None


def switchable_fields(spec) -> set[str]:
    """Fields a port's switch can turn off or change (rope scaling type ...)."""
    return {name for d in spec.differences for name in d.switchable}


def stamp_tree_args(port: Port, spec, shape: ModelShape, folder: Path, tp: int, pp: int,
                    seq_length: int, timeout: float = 300.0) -> str:
    """Give the checkpoint's client state files in `folder` (its tag folder) the args the tree's
    own parser makes (porter.verify.treeargs).

    Returns how the args were made; when the tree cannot run here, the checkpoint keeps
    porter's own args (plain numbers and strings) and the reason is returned.
    """
    script, provider = entry_points(port.profile.tree, port.spec)
    run_shape = RunShape(num_layers=shape.num_layers, hidden_size=shape.hidden_size,
                         num_attention_heads=shape.num_attention_heads, seq_length=seq_length, batch_size=1)
    with tempfile.TemporaryDirectory(prefix="porter-args-") as scratch:
        job = Path(scratch) / "job.json"
        job.write_text(json.dumps({
            "script_module": script, "extra_args_provider": provider, "vocab_size": shape.vocab_size,
            "argv": tree_argv(port.spec, port.profile, run_shape, tp, pp) + port.run_argv(spec),
            "folder": str(Path(folder).resolve()), "skeleton": True,
        }))
        try:
            run_in_tree(port.profile.tree.root, "porter.verify.treeargs", job, 1, Path(scratch) / "treeargs.log",
                        timeout, what="parsing the checkpoint's args with the tree's parser",
                        env={"WORLD_SIZE": str(tp * pp)})
        except PorterError as exc:
            return "porter's own (the tree's parser did not run here: " + exc.message + "; " + \
                (exc.found or "").strip().splitlines()[-1] + ")"
    return "the tree's own parser"


def checkpoint_from_hf(model, target, hf_dir, out, *, tp: int = 1, pp: int = 1, pipe: bool | None = None,
                       progress: Progress | None = None) -> dict:
    """HF directory -> a checkpoint of the ported tree at target, streamed. Returns a summary.
    `pipe`: for the pipeline engine or the plain one; None: the engine the port has (the
    pipeline engine, or the plain one where a difference keeps the model off the pipe model)."""
    start = time.monotonic()
    port = Port(model, target)
    if pipe is None:
        pipe = port.pipeline_engine()
    source = HFDir(Path(hf_dir))
    config = source.config
    path = str(Path(hf_dir) / "config.json")
    read = reading(config, path)  # as transformers reads it: what the file leaves out is the class's
    spec = port.spec_for(config, path)
    port.check_hf_shapes({name: source.tensor(name, meta=True).shape for name in source.names}, read)
    weights = port.weights(read, hf_names=source.names)
    shape = weights.shape
    seq = int(config.get("max_position_embeddings") or 2048)
    files, stats, made_by = stream_checkpoint(
        lambda meta: hf_parts(source.take(meta), weights, tp), weights, Path(out),
        tp=tp, pp=pp, pipe=pipe, args={dest: value for dest, (_, value) in port.numbers(spec).items()},
        hf_config=_kept_config(source, port.spec), stamp=lambda folder: stamp_tree_args(port, spec, shape, folder, tp, pp, seq),
        progress=progress)
    stats.bytes_read = source.bytes_read
    padded = port.layout.padded_vocab(shape.vocab_size, tp)
    return {
        "wrote": str(out), "files": len(files), "engine": "pipeline" if pipe else "plain (--no-pipeline-parallel)",
        "tensor_parallel": tp, "pipeline_parallel": pp, "args": made_by,
        "vocab": f"{shape.vocab_size} padded to {padded}",
        "load_with": f"--load {out} --finetune --tensor-model-parallel-size {tp} "
                     f"--pipeline-model-parallel-size {pp}" + ("" if pipe else " --no-pipeline-parallel"),
        **(_dequantized(source)), **_language_model(source), **_dropped(port.spec, config, source.names),
        **stats.as_dict(), "seconds": round(time.monotonic() - start, 3),
    }


def _language_model(source: HFDir) -> dict:
    """What a multimodal folder's conversion says: the language model converted, the rest left out."""
    if source.multimodal is None:
        return {}
    architectures = ", ".join(source.config.get("architectures") or ()) or "the text model's class"
    return {"language_model": source.multimodal.describe(),
            "left_out": [f"{part}.* ({count} tensors): not the language model, not read"
                         for part, count in source.left_out.items()],
            "back_to_hf": f"megatron-to-hf writes the language model alone: {architectures} "
                          f"(model_type {source.config.get('model_type')})"}


def _dropped(spec, config: dict, names) -> dict:
    """The HF tensors left out as transformers leaves them out, by the differences that say so."""
    said = []
    for difference in spec.differences:
        for prefix, why in difference.dropped(config).items():
            count = sum(1 for name in names if name.startswith(prefix))
            if count:
                said.append(f"{prefix}* ({count} tensors): {why}")
    return {"dropped": said} if said else {}


def _kept_config(source: HFDir, spec) -> dict:
    """The source config.json the checkpoint keeps (megatron-to-hf writes it back): as it is, but
    for the quantization of weights read dequantized and the parts the port left out (each
    difference that drops tensors says how the file says they are gone)."""
    kept = dict(source.config)
    if source.quantized is not None:
        kept.pop("quantization_config", None)
    for difference in spec.differences:
        kept.update(difference.without_dropped(source.config))
    return kept


def _dequantized(source: HFDir) -> dict:
    if source.quantized is None:
        return {}
    rows, cols = source.quantized.block
    return {"dequantized": f"block-fp8 ({rows}x{cols} blocks) read as bf16"}


def hf_config_for(port: Port, weights, dtype) -> dict:
    """The HF config of a checkpoint (a CheckpointReader, or the full copy read from it): the
    source config.json it was converted from, changed only where its args differ from what
    porter read there; else its args' numbers, the spec's architecture, its sizes."""
    args = weights.extra.get("args")
    spec = port.spec_from_args(args) if args is not None else port.spec
    trained = hf_config_of(spec, weights.shape.hf_sizes())
    if spec["attention.head_dim"] is not None and trained.get("head_dim") not in (None, weights.shape.head_dim):
        # the checkpoint's heads (its kv_channels, hidden / heads where it has none), not the
        # bundled spec's head size: a Qwen3-MoE trained at hidden / heads writes that back (a
        # latent attention's head_dim is its rotary part, none of the heads' sizes: kept)
        trained["head_dim"] = weights.shape.head_dim
    positions = getattr(args, "max_position_embeddings", None) or getattr(args, "seq_length", None)
    if positions:
        trained["max_position_embeddings"] = positions
    recorded = weights.extra.get("hf_config") or {}
    if recorded.get("model_type"):
        # the user's file keeps its own token ids, an absent one too (its class's default:
        # OLMo-2's file names no bos_token_id, and transformers reads None)
        config = _users_file(port, recorded, trained)
    else:
        config = trained
        for key in PASSED_THROUGH:
            if key in recorded:
                config[key] = recorded[key]
        # the token ids of the tokenizer the run trained with, where it is at hand and the
        # source says none
        for key, value in token_ids(getattr(args, "tokenizer_model", None)).items():
            if recorded.get(key) is None:
                config[key] = value
    name = "torch_dtype" if "torch_dtype" in recorded else "dtype"
    config[name] = str(dtype).removeprefix("torch.")
    return config


def _users_file(port: Port, recorded: dict, trained: dict) -> dict:
    """The source config.json with what training changed: each HF field where the checkpoint's
    model (trained) differs from porter's reading of the file (before), in the file's spelling."""
    read = reading(recorded)
    before = hf_config_of(port.spec_for(recorded), ModelShape.from_hf(dict(read)).hf_sizes())
    before["max_position_embeddings"] = read.get("max_position_embeddings")
    out = dict(recorded)
    changed_rope = rope_parameters_of(trained) != rope_parameters_of(before)
    for key, value in trained.items():
        if key in ROPE_FIELDS or before.get(key) == value:
            continue
        if key == "head_dim" and value == read.get("hidden_size", 0) // max(1, read.get("num_attention_heads", 1)) \
                and "head_dim" not in recorded:
            continue
        out[key] = value
    if changed_rope:
        spelled = rope_spelling({"rope_parameters": rope_parameters_of(trained)}, legacy="rope_parameters" not in recorded)
        for key in ROPE_FIELDS:
            out.pop(key, None)
        out.update(spelled)
    return out


def hf_from_checkpoint(model, target, checkpoint, out, *, vocab_size: int | None = None,
                       max_shard_size: int | str | None = None, progress: Progress | None = None) -> dict:
    """A checkpoint of the ported tree at target -> an HF directory, streamed (in safetensors files
    of at most max_shard_size, default 5GB). Returns a summary."""
    start = time.monotonic()
    max_shard_size = check_shard_size(max_shard_size or DEFAULT_SHARD_SIZE)
    port = Port(model, target)
    reader, weights = port.read(Path(checkpoint), vocab_size=vocab_size)
    shape_check.check_megatron(reader.parts(weights, meta=True), weights, port.spec.hf_class, str(checkpoint))
    config = weights.config
    files, stats = stream_hf(Path(out), {**config, "tie_word_embeddings": port.layout.tied},
                             lambda meta: hf_tensors(reader.parts(weights, meta), weights),
                             port.spec.hf_class, max_shard_size, progress)
    if reader.extra["hf_config"].get("model_type"):  # the user's own file, not transformers' rewrite of it
        (Path(out) / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    stats.bytes_read = reader.bytes_read
    return {
        "wrote": str(out), "model": f"{', '.join(config.get('architectures') or [port.spec.hf_class])} "
                                    f"(model_type {config.get('model_type')})",
        "files": len(files), "tensors": stats.tensors, "layers": reader.shape.num_layers,
        "vocab": reader.shape.vocab_size, "from": f"{reader.extra['tensor_parallel']} tensor-parallel shard(s), "
        f"{'pipeline' if reader.extra['pipe'] else 'plain'} engine", **stats.as_dict(),
        "seconds": round(time.monotonic() - start, 3),
    }
