"""What a run passes to the tree: its entry script and extra-args provider, and a command line
its parser accepts (only the options the tree has)."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

from porter.cst import match as m
from porter.cst.find import findall
from porter.errors import PorterError
from porter.profile import TreeProfile
from porter.source import SourceTree
from porter.spec import Spec
from porter.treerun.shape import RunShape

if TYPE_CHECKING:
    from porter.planner import Plan


def entry_points(tree: SourceTree, spec: Spec) -> tuple[str, str | None]:
    """(script module, its extra-args provider) from the `pretrain(...)` call of spec.script."""
    import libcst as cst

    if not tree.exists(spec.script):
        raise PorterError(
            f"{spec.script} is missing: the tree is not ported",
            file=spec.script, construct=f"the entry point the {spec.name} port writes",
            fix=f"run `porter apply {spec.name} --target {tree.root}` first",
        )
    module = tree.file(spec.script).module
    provider = None
    for call in findall(module, m.Call(func=m.Name("pretrain"))):
        for arg in call.args:
            if arg.keyword and arg.keyword.value == "extra_args_provider" and isinstance(arg.value, cst.Name):
                provider = arg.value.value
    return spec.script.removesuffix(".py"), provider


def max_positions_allowed(spec: Spec, profile: TreeProfile) -> bool:
    """May porter pass --max-position-embeddings? Rotary needs no position table: some trees
    forbid the size then (Habana's), some require it anyway."""
    return spec["position_embedding.type"] != "rotary" or not profile.arguments.forbids_max_positions


def fused_kernels_off(profile: TreeProfile) -> list[str]:
    """Every --no-*-fusion option the tree has: each fused kernel it can turn off is CUDA-only
    (apex, jit fusers, custom extensions)."""
    return sorted(o for o in profile.arguments.options if o.startswith("--no-") and o.endswith("-fusion"))


def tree_argv(spec: Spec, profile: TreeProfile, shape: RunShape, tp: int, pp: int, dp: int = 1) -> list[str]:
    """A command line the tree's parser accepts for this model (only the options it has); `dp`
    data-parallel replicas each run the batch."""
    options = profile.arguments.options
    positions = ["--max-position-embeddings", str(shape.seq_length)] if max_positions_allowed(spec, profile) else []
    argv = [
        "--num-layers", str(shape.num_layers), "--hidden-size", str(shape.hidden_size),
        "--num-attention-heads", str(shape.num_attention_heads),
        "--seq-length", str(shape.seq_length), *positions,
        "--micro-batch-size", str(shape.batch_size), "--global-batch-size", str(shape.batch_size * dp),
        "--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp),
        "--seed", str(shape.seed), "--deepspeed",
    ]
    for option, value in (("--distributed-backend", "gloo"), ("--train-iters", "1"), ("--lr", "1e-4"),
                          ("--hidden-dropout", "0.0"), ("--attention-dropout", "0.0")):
        if option in options:
            argv += [option, value]
    argv += fused_kernels_off(profile)
    # Weights only: a converted checkpoint has no optimizer, scheduler or RNG states.
    weights_only = ["--finetune"] if "--finetune" in options else \
        ["--no-load-optim", "--no-load-rng", "--no-load-lr-state"]
    return argv + [flag for flag in weights_only if flag in options]


def tokenizer_argv(spec: Spec, profile: TreeProfile, folder: Path) -> list[str]:
    """`--tokenizer-model <a tiny tokenizer of the spec's kind>`: some trees build a tokenizer at
    start-up (a SentencePiece model, or an HF tokenizer.json).

    The tokenizer is trained here on porter's own corpus (cached in folder). It only lets the tree
    start: the model's vocabulary is the job's (see porter.verify.harness.TreeSession.start).
    """
    kind = spec["tokenizer.type"]
    if kind not in ("sentencepiece", "hf") or "--tokenizer-model" not in profile.arguments.options:
        return []
    from porter.corpus import train_sentencepiece, train_tokenizer_json, write_corpus

    model = Path(folder) / "tokenizer" / ("spm.model" if kind == "sentencepiece" else "tokenizer.json")
    if not model.exists():
        text, _ = write_corpus(model.parent, max_bytes=50_000)
        if kind == "sentencepiece":
            train_sentencepiece(text, model.with_suffix(""), vocab_size=256)
        else:
            train_tokenizer_json(text, model, vocab_size=256)
    return ["--tokenizer-model", str(model)]


def tree_job(spec: Spec, tree: SourceTree, profile: TreeProfile, shape: RunShape, tp: int = 1, pp: int = 1,
             argv_extra: list[str] | None = None, dp: int = 1) -> dict:
    """What porter.verify.harness.TreeJob needs to start the tree's megatron for a model (a plain dict)."""
    script, provider = entry_points(tree, spec)
    return {"script_module": script, "extra_args_provider": provider,
            "argv": tree_argv(spec, profile, shape, tp, pp, dp) + list(argv_extra or []),
            "vocab_size": shape.vocab_size, "micro_batch_size": shape.batch_size}


def is_number(value) -> bool:
    """A number the port's switches take: int or float, or a list of them (one per layer, layer
    indices: maybe none, one per rotary frequency)."""
    if isinstance(value, list):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plan_numbers(plan: Plan, switchable: Container[str] = ()) -> dict[str, tuple[str, Any]]:
    """dest -> (spec field, value) of the plan's numbers, as the port's entry point sets them
    (norm epsilon, rotary base, key/value heads, MLP width, sizes), and of the `switchable`
    fields whatever their value (a rope scaling type, a flag)."""
    return {dest: (field, plan.defaults[dest]) for dest, field in plan.default_fields.items()
            if is_number(plan.defaults[dest]) or field in switchable}


def numbers_argv(numbers: dict[str, tuple[str, Any]], profile: TreeProfile) -> list[str]:
    """The tree's options that set the numbers (dest -> (spec field, value): plan_numbers), for
    its parser (the sizes are the caller's: tree_argv); a flag's value as 0 or 1."""
    argv: list[str] = []
    for dest, (field, value) in numbers.items():
        argument = profile.arguments.by_dest(dest)
        if isinstance(value, bool):
            value = int(value)
        if argument is not None and not field.startswith("sizes."):
            argv += [argument.options[0], *(str(v) for v in (value if isinstance(value, list) else [value]))]
    return argv


def expert_parallel_argv(spec: Spec, switches: dict, size: int) -> list[str]:
    """The tree's options that shard the port's experts over `size` ranks (verify, smoke): each
    difference with experts says its own (Difference.expert_parallel_argv)."""
    if size == 1:
        return []
    argv = [a for d in spec.wanted() for a in (d.expert_parallel_argv(switches, size) or [])]
    if not argv:
        raise PorterError(
            f"expert parallelism needs experts; the {spec.name} port has none",
            file=spec.path, construct="a difference with experts in the spec",
            found="no difference of the port shards over expert-parallel ranks",
            fix="drop --ep, or use a spec with experts (porter list)",
        )
    return argv
