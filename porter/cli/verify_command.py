"""verify: the ported model against HF transformers' LLaMA, logit for logit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, app, fail
from porter.errors import PorterError


@app.command()
def verify(
    model: Model,
    target: Target = Path("."),
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size (processes: TP x PP). Example: --tp 2")] = 1,
    pp: Annotated[int | None, typer.Option("--pp", help="Pipeline-parallel size (the pipe model only); "
                                                        "default 1, or the --load checkpoint's. Example: --pp 2")] = None,
    models: Annotated[str, typer.Option(help="Which generated classes: 'model' (LLaMAModel), 'pipe' "
                                             "(LLaMAModelPipe), or both, comma-separated. Example: --models pipe")] = "model,pipe",
    layers: Annotated[int, typer.Option(help="Layers of the tiny model. Example: --layers 4")] = 2,
    hidden: Annotated[int, typer.Option(help="Hidden size of the tiny model. Example: --hidden 128")] = 64,
    heads: Annotated[int, typer.Option(help="Attention heads. Example: --heads 8")] = 4,
    vocab: Annotated[int, typer.Option(help="Vocabulary (the tree pads it). Example: --vocab 250")] = 256,
    seq: Annotated[int, typer.Option(help="Sequence length of the batch. Example: --seq 64")] = 32,
    batch: Annotated[int, typer.Option(help="Sequences in the batch. Example: --batch 4")] = 2,
    std: Annotated[float, typer.Option(help="Std of the random weights (0.1: a wrong port cannot hide). Example: --std 0.02")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of weights and batch. Example: --seed 7")] = 1234,
    tolerance: Annotated[float, typer.Option(help="Largest |logit difference| that passes. Example: --tolerance 1e-4")] = 1e-5,
    load: Annotated[Path | None, typer.Option("--load", help="Verify this checkpoint of the tree (its --save "
                                                             "folder) against its own HF conversion, instead of "
                                                             "a random model. Example: --load ./checkpoints")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the HF model, checkpoints, logs. Example: --workdir ./verify")] = None,
    json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Check the port numerically: HF's LlamaForCausalLM and the generated models give the same logits.

    A tiny random LLaMA (weights std 0.1, random norm weights) is saved as an HF directory,
    converted to the tree's checkpoints with `porter convert`'s code, loaded by the tree's own
    load_checkpoint into the generated LLaMAModel and LLaMAModelPipe (DeepSpeed, CPU, fp32) and
    run on the same batch. Passes when max |logit difference| <= --tolerance and every argmax
    agrees; otherwise names the first module whose output diverges.

    With --load, the reference is that checkpoint converted to HF (megatron-to-hf), and the
    tree loads the checkpoint itself: a proof of a trained checkpoint's conversion.

    Exit status: 0 passed, 1 parity failed, 2 error (nothing ported, bad options...).

    Examples:
    porter verify llama --target ./Megatron-DeepSpeed
    porter verify llama --target ./Megatron-DeepSpeed --tp 2
    porter verify llama --target ./Megatron-DeepSpeed --load ./checkpoints --json > verify.json
    """
    import tempfile

    from porter.spec import load_spec
    from porter.verify.parity import VerifyOptions, describe
    from porter.verify.parity import verify as run_verify
    from porter.verify.reference import TinyConfig

    out = Output(json=json, quiet=quiet)
    kinds = tuple(k.strip() for k in models.split(",") if k.strip())
    try:
        unknown = [k for k in kinds if k not in ("model", "pipe")]
        if unknown or not kinds:
            raise PorterError(f"unknown --models {models!r}", construct="model, pipe or model,pipe",
                              found=", ".join(unknown) or "nothing", fix="pass --models model,pipe")
        spec = load_spec(model)
        tiny = TinyConfig(num_layers=layers, hidden_size=hidden, num_attention_heads=heads, vocab_size=vocab,
                          seq_length=seq, batch_size=batch, weight_std=std, seed=seed)
        options = VerifyOptions(tiny=tiny, tensor_parallel=tp, pipeline_parallel=pp, kinds=kinds,
                                tolerance=tolerance, checkpoint=load)
        folder = workdir or Path(tempfile.mkdtemp(prefix="porter-verify-"))
        result = run_verify(spec, target, folder, options)
    except PorterError as exc:
        fail(exc, debug, out)
    if json:
        out.emit("porter.verify/1", result.as_dict())
    elif not (quiet and result.passed):
        typer.echo(describe(result))
        typer.echo(f"verify {'passed' if result.passed else 'FAILED'} ({result.seconds:.1f} s; work folder {folder})")
    raise typer.Exit(0 if result.passed else 1)
