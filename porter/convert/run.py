"""The two conversions as `porter convert` runs them, carrying every number both ways.

HF -> Megatron: the HF config's numbers (norm epsilon, rotary base and scaling, key/value
heads, head size, MLP width, vocabulary) become the port's switch values, through each
difference (porter/features/: `from_hf`, then `run_argv`): the tree's own parser makes the
checkpoint's args from them, so a plain `--load` needs no extra flags. A config whose
architecture the port cannot run (a bias the port has no switch for, GQA in a port without
it...) is refused by field.
Megatron -> HF: the checkpoint's args give the numbers back (`from_args`), the spec the
architecture, porter's record (or the tokenizer) the real vocabulary and token ids.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from porter.convert.checkpoint import TAG, read_checkpoint, write_checkpoint
from porter.convert.hf_dir import read_hf, write_hf
from porter.convert.tensors import MegatronWeights, hf_to_megatron, megatron_to_hf
from porter.differences.tokenizer import token_ids
from porter.errors import PorterError
from porter.hf_config import HFConfig, hf_config_of
from porter.layout import WeightLayout
from porter.profile.layout import read_layout

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
        self.switches = make_plan(self.spec, self.profile).switches

    def spec_for(self, config: dict, path: str = "config.json"):
        """The port's spec with the HF config's numbers; refused where the architecture differs."""
        from porter.catalog import fields
        from porter.hf_config import spec_values_from_hf

        values = spec_values_from_hf(HFConfig(config, path), self.spec.differences)
        schema = fields()
        problems = []
        for name, value in values.items():
            mine = self.spec[name]
            if name.startswith(("tokenizer.", "sizes.")) or value == mine or value is None:
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

        plan = make_plan(spec, self.profile)
        return {dest: (field, plan.defaults[dest]) for dest, field in plan.default_fields.items()
                if _number(plan.defaults[dest])}

    def run_argv(self, spec) -> list[str]:
        """The tree's options that set the spec's numbers, for its parser (the sizes are the
        caller's: porter.verify.tree_run.tree_argv)."""
        argv: list[str] = []
        for dest, (field, value) in self.numbers(spec).items():
            argument = self.profile.arguments.by_dest(dest)
            if argument is not None and not field.startswith("sizes."):
                argv += [argument.options[0], *(str(v) for v in (value if isinstance(value, list) else [value]))]
        return argv

    def spec_from_args(self, args) -> Any:
        """The port's spec with the numbers a checkpoint's args hold."""
        values: dict[str, Any] = {}
        schema = self.spec.schema
        for dest, (field, _) in self.numbers(self.spec).items():
            value = getattr(args, dest, None)
            if isinstance(value, list) and _number(value) and list not in schema[field].kinds:
                value = max(value)  # a count per layer (--num-experts): the spec holds the sparse layers'
            if _number(value):
                values[field] = value
        return self.spec.with_values(**values)


def _number(value) -> bool:
    """A number the port's switches take: int or float, or a list of them (one per layer, one per
    rotary frequency)."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def switchable_fields(spec) -> set[str]:
    """Fields a port's switch can turn off or change (rope scaling type ...)."""
    return {name for d in spec.differences for name in d.switchable}


def stamp_tree_args(port: Port, spec, weights: MegatronWeights, out: Path, tp: int, pp: int,
                    seq_length: int, timeout: float = 300.0) -> str:
    """Give the checkpoint the args the tree's own parser makes (porter.verify.treeargs).

    Returns how the args were made; when the tree cannot run here, the checkpoint keeps
    porter's own args (plain numbers and strings) and the reason is returned.
    """
    from porter.verify.tree_run import RunShape, entry_points, run_in_tree, tree_argv

    shape = weights.shape
    script, provider = entry_points(port.profile.tree, port.spec)
    run_shape = RunShape(shape.num_layers, shape.hidden_size, shape.num_attention_heads, seq_length)
    with tempfile.TemporaryDirectory(prefix="porter-args-") as scratch:
        job = Path(scratch) / "job.json"
        job.write_text(json.dumps({
            "script_module": script, "extra_args_provider": provider, "vocab_size": shape.vocab_size,
            "argv": tree_argv(port.spec, port.profile, run_shape, tp, pp) + port.run_argv(spec),
            "folder": str(Path(out).resolve() / TAG),
        }))
        try:
            run_in_tree(port.profile.tree.root, "porter.verify.treeargs", job, 1, Path(scratch) / "treeargs.log",
                        timeout, what="parsing the checkpoint's args with the tree's parser",
                        env={"WORLD_SIZE": str(tp * pp)})
        except PorterError as exc:
            return "porter's own (the tree's parser did not run here: " + exc.message + "; " + \
                (exc.found or "").strip().splitlines()[-1] + ")"
    return "the tree's own parser"


def checkpoint_from_hf(model, target, hf_dir, out, *, tp: int = 1, pp: int = 1, pipe: bool = True) -> dict:
    """HF directory -> a checkpoint of the ported tree at target. Returns a summary."""
    port = Port(model, target)
    config, state = read_hf(Path(hf_dir))
    spec = port.spec_for(config, str(Path(hf_dir) / "config.json"))
    weights = hf_to_megatron(state, config, port.layout, tensor_parallel=tp)
    if weights.shape.num_layers % pp:
        raise PorterError(
            f"{weights.shape.num_layers} layers do not split over {pp} pipeline stages",
            construct="a pipeline-parallel size dividing the layer count", found=f"--pp {pp}",
            fix="choose --pp dividing num_hidden_layers",
        )
    files = write_checkpoint(weights, port.layout, Path(out), tp=tp, pp=pp, pipe=pipe,
                             args={dest: value for dest, (_, value) in port.numbers(spec).items()}, hf_config=config)
    seq = int(config.get("max_position_embeddings") or 2048)
    made_by = stamp_tree_args(port, spec, weights, Path(out), tp, pp, seq)
    return {
        "wrote": str(out), "files": len(files), "engine": "pipeline" if pipe else "plain (--no-pipeline-parallel)",
        "tensor_parallel": tp, "pipeline_parallel": pp, "args": made_by,
        "vocab": f"{weights.shape.vocab_size} padded to {weights.embedding.shape[0]}",
        "load_with": f"--load {out} --finetune --tensor-model-parallel-size {tp} "
                     f"--pipeline-model-parallel-size {pp}" + ("" if pipe else " --no-pipeline-parallel"),
    }


def hf_config_for(port: Port, weights: MegatronWeights, dtype) -> dict:
    """The HF config of a checkpoint: its args' numbers, the spec's architecture, its sizes."""
    args = weights.extra.get("args")
    spec = port.spec_from_args(args) if args is not None else port.spec
    config = hf_config_of(spec, weights.shape.hf_sizes())
    positions = getattr(args, "max_position_embeddings", None) or getattr(args, "seq_length", None)
    if positions:
        config["max_position_embeddings"] = positions
    recorded = weights.extra.get("hf_config") or {}
    for key in PASSED_THROUGH:
        if key in recorded:
            config[key] = recorded[key]
    # the token ids of the tokenizer the run trained with, where it is at hand
    config.update(token_ids(getattr(args, "tokenizer_model", None)))
    config["torch_dtype" if "torch_dtype" in recorded else "dtype"] = str(dtype).removeprefix("torch.")
    return config


def hf_from_checkpoint(model, target, checkpoint, out, *, vocab_size: int | None = None) -> dict:
    """A checkpoint of the ported tree at target -> an HF directory. Returns a summary."""
    port = Port(model, target)
    weights = read_checkpoint(Path(checkpoint), port.layout, vocab_size=vocab_size)
    state = megatron_to_hf(weights, port.layout)
    write_hf(Path(out), hf_config_for(port, weights, weights.embedding.dtype), state, port.spec.hf_class)
    return {
        "wrote": str(out), "tensors": len(state), "layers": weights.shape.num_layers,
        "vocab": weights.shape.vocab_size, "from": f"{weights.extra['tensor_parallel']} tensor-parallel shard(s), "
        f"{'pipeline' if weights.extra['pipe'] else 'plain'} engine",
    }
