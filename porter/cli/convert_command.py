"""convert: HF weights (the spec's class) <-> the ported tree's Megatron-DeepSpeed checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Output, Target, app, fail
from porter.errors import PorterError

convert_app = typer.Typer(
    help="Convert weights between HF transformers (the spec's class) and a ported tree's checkpoints (bit-exact).\n\n"
    "Examples:\n"
    "porter convert hf-to-megatron --hf ./llama-hf --out ./ckpt --target ./Megatron-DeepSpeed --tp 2\n"
    "porter convert megatron-to-hf --load ./checkpoints --out ./llama-hf --target ./Megatron-DeepSpeed",
    no_args_is_help=True,
)
app.add_typer(convert_app, name="convert")

SpecOption = Annotated[
    str, typer.Option("--model", "-m", help="The port's spec: a name, a .toml spec, or the HF model folder it was ported from. "
                             "Example: --model llama3")
]


def _report(summary: dict, printer: Output) -> None:
    if printer.json:
        printer.emit("porter.convert/1", summary)
        return
    for key, value in summary.items():
        printer.result(f"{key}: {value}")


@convert_app.command("hf-to-megatron")
def hf_to_megatron(
    hf: Annotated[Path, typer.Option("--hf", help="HF model directory (config.json + model.safetensors). Example: --hf ./llama-hf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory to write (--load it). Example: --out ./ckpt")],
    target: Target = Path("."),
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size of the checkpoint. Example: --tp 2")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size (pipeline engine only). Example: --pp 2")] = 1,
    no_pipe: Annotated[bool, typer.Option("--no-pipe", help="For --no-pipeline-parallel runs (the plain <Prefix>Model). Example: --no-pipe")]
    = False,
    model: SpecOption = "llama",
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Write an HF model as a checkpoint of the ported tree, sharded for --tp and --pp.

    The layout (fused QKV per key/value group, [gate; up] halves, biases, untied head,
    vocabulary padding) is read from the tree and the spec. The model's numbers (norm epsilon,
    rotary base and scaling, key/value heads, MLP width) go into the checkpoint's args: start
    training from it with the tree's `--load OUT --finetune` (weights only) and the same
    --tp/--pp, and nothing else. A model the port cannot run is refused by spec field.

    Examples:
    porter convert hf-to-megatron --hf ./llama-hf --out ./ckpt --target ./Megatron-DeepSpeed --tp 2
    porter convert hf-to-megatron --hf ./llama-hf --out ./ckpt --target ./Megatron-DeepSpeed --tp 2 --pp 2 --json
    """
    from porter.convert import checkpoint_from_hf

    printer = Output(json=json)
    try:
        summary = checkpoint_from_hf(model, target, hf, out, tp=tp, pp=pp, pipe=not no_pipe)
    except PorterError as exc:
        fail(exc, debug, printer)
    _report(summary, printer)


@convert_app.command("megatron-to-hf")
def megatron_to_hf(
    load: Annotated[Path, typer.Option("--load", help="Checkpoint directory (the tree's --save, or ours). Example: --load ./checkpoints")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HF model directory to write. Example: --out ./llama-hf")],
    target: Target = Path("."),
    vocab_size: Annotated[int | None, typer.Option(help="Real vocabulary size; the padding rows are dropped. "
                                                        "Default: what porter recorded, else the padded size. Example: --vocab-size 32000")]
    = None,
    model: SpecOption = "llama",
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Write a checkpoint of the ported tree (either engine, any TP/PP) as an HF model directory.

    The spec's HF class reads the result (`LlamaForCausalLM.from_pretrained(OUT)` for the
    LLaMA family). The numbers come from the checkpoint's args, the token ids from the
    tokenizer the run trained with; without the tokenizer at hand, give --vocab-size.

    Examples:
    porter convert megatron-to-hf --load ./checkpoints --out ./llama-hf --target ./Megatron-DeepSpeed
    """
    from porter.convert import hf_from_checkpoint

    printer = Output(json=json)
    try:
        summary = hf_from_checkpoint(model, target, load, out, vocab_size=vocab_size)
    except PorterError as exc:
        fail(exc, debug, printer)
    _report(summary, printer)
