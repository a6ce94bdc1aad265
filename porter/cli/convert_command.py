"""convert: HF weights (the spec's class) <-> the ported tree's Megatron-DeepSpeed checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli import common
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


class _Bar:
    """A conversion's progress (porter.convert.stream.Progress) as a bar on a terminal (stderr):
    tensors and bytes written, speed, time left; nothing elsewhere (a pipe, CI)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar = None

    def start(self, tensors: int, nbytes: int) -> None:
        if not common.stderr_is_terminal():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TextColumn("{task.fields[tensors]}/" + str(tensors) + " tensors"), TransferSpeedColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True))
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=nbytes, tensors=0)
        self._tensors = 0

    def advance(self, tensors: int, nbytes: int) -> None:
        if self._bar is not None:
            self._tensors += tensors
            self._bar.update(self._task, advance=nbytes, tensors=self._tensors)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _figures(summary: dict) -> str:
    from porter.convert.output import human

    return (f"{human(summary['bytes_read'])} read, {human(summary['bytes_written'])} written in "
            f"{summary['seconds']:.1f} s, peak memory {human(summary['peak_bytes'])}")


def _report(summary: dict, printer: Output, line: str) -> None:
    if printer.json:
        printer.emit("porter.convert/1", summary)
    else:
        printer.result(line)


@convert_app.command("hf-to-megatron")
def hf_to_megatron(
    hf: Annotated[Path, typer.Option("--hf", help="HF model directory (config.json + model.safetensors). Example: --hf ./llama-hf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint directory to write (--load it). Example: --out ./ckpt")],
    target: Target = Path("."),
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size of the checkpoint. Example: --tp 2")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size (pipeline engine only). Example: --pp 2")] = 1,
    pipe: Annotated[bool | None, typer.Option(
        "--pipe/--no-pipe", show_default=False,
        help="For the pipeline engine (<Prefix>ModelPipe) or --no-pipeline-parallel runs (the plain <Prefix>Model). "
             "Default: the pipeline engine, or the plain one for a port whose <Prefix>ModelPipe cannot carry its "
             "model. Example: --no-pipe")] = None,
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
        with _Bar("hf-to-megatron") as bar:
            summary = checkpoint_from_hf(model, target, hf, out, tp=tp, pp=pp, pipe=pipe, progress=bar)
    except PorterError as exc:
        fail(exc, debug, printer)
    _report(summary, printer, f"wrote {out}: {summary['files']} files, TP={tp} PP={pp}, {summary['engine']} engine, "
            f"vocabulary {summary['vocab']}, args by {summary['args']}; {_figures(summary)}. "
            f"Train from it with {summary['load_with']}" + _language_model(summary))


def _language_model(summary: dict) -> str:
    """A multimodal folder's conversion: which model was converted, what was left out, what comes back."""
    if "language_model" not in summary:
        return ""
    return "".join(f"\n  {line}" for line in (f"converted {summary['language_model']}", *summary["left_out"],
                                                summary["back_to_hf"]))


@convert_app.command("megatron-to-hf")
def megatron_to_hf(
    load: Annotated[Path, typer.Option("--load", help="Checkpoint directory (the tree's --save, or ours). Example: --load ./checkpoints")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HF model directory to write. Example: --out ./llama-hf")],
    target: Target = Path("."),
    vocab_size: Annotated[int | None, typer.Option(help="Real vocabulary size; the padding rows are dropped. "
                                                        "Default: what porter recorded, else the padded size. Example: --vocab-size 32000")]
    = None,
    max_shard_size: Annotated[str | None, typer.Option(
        help="Largest safetensors file to write, as save_pretrained spells it (default 5GB); a larger model is "
             "split in several, with model.safetensors.index.json. Example: --max-shard-size 2GB",
        show_default=False)] = None,
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
        with _Bar("megatron-to-hf") as bar:
            summary = hf_from_checkpoint(model, target, load, out, vocab_size=vocab_size,
                                         max_shard_size=max_shard_size, progress=bar)
    except PorterError as exc:
        fail(exc, debug, printer)
    _report(summary, printer, f"wrote {out} ({summary['model']}): {summary['files']} files, {summary['tensors']} tensors, "
            f"{summary['layers']} layers, vocabulary {summary['vocab']}, from {summary['from']}; {_figures(summary)}")
