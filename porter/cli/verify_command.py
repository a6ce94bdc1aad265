"""verify: the ported model against HF transformers' LLaMA, logit for logit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from porter.cli.common import Debug, Json, Model, Output, Quiet, Target, app, fail
from porter.cli.smoke_command import Cpu, say_standins
from porter.errors import PorterError


@app.command()
def verify(
    model: Model,
    target: Target = Path("."),
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel size (processes: TP x PP). Example: --tp 2")] = 1,
    pp: Annotated[int | None, typer.Option("--pp", help="Pipeline-parallel size (the pipe model only); "
                                                        "default 1, or the --load checkpoint's. Example: --pp 2")] = None,
    ep: Annotated[int, typer.Option("--ep", help="Expert-parallel size of a port with experts (processes: "
                                                 "TP x PP x EP). Example: --ep 2")] = 1,
    models: Annotated[str | None, typer.Option(help="Which generated classes: 'model' (LLaMAModel), 'pipe' "
                                                    "(LLaMAModelPipe), or both, comma-separated; default: every "
                                                    "one the port has. Example: --models pipe")] = None,
    layers: Annotated[int, typer.Option(help="Layers of the tiny model. Example: --layers 4")] = 2,
    hidden: Annotated[int, typer.Option(help="Hidden size of the tiny model. Example: --hidden 128")] = 64,
    heads: Annotated[int, typer.Option(help="Attention heads. Example: --heads 8")] = 4,
    vocab: Annotated[int, typer.Option(help="Vocabulary (the tree pads it). Example: --vocab 250")] = 256,
    seq: Annotated[int, typer.Option(help="Sequence length of the batch. Example: --seq 64")] = 32,
    batch: Annotated[int, typer.Option(help="Sequences in the batch. Example: --batch 4")] = 2,
    std: Annotated[float, typer.Option(help="Std of the random weights (0.1: a wrong port cannot hide). Example: --std 0.02")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of weights and batch. Example: --seed 7")] = 1234,
    tolerance: Annotated[float, typer.Option(help="Largest |logit difference| that passes, relative to the largest |logit| (at least 1). Example: --tolerance 1e-4")] = 1e-5,
    load: Annotated[Path | None, typer.Option("--load", help="Verify this checkpoint of the tree (its --save "
                                                             "folder) against its own HF conversion, instead of "
                                                             "a random model. Example: --load ./checkpoints")] = None,
    hf: Annotated[Path | None, typer.Option("--hf", help="Your own HF model folder (config.json, *.safetensors): "
                                                         "its weights through both sides at their real size, "
                                                         "refused with the bytes needed where they would not fit "
                                                         "in memory. Example: --hf ./Meta-Llama-3-8B")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="With --hf: fp32, or bf16 (the weights as you run them; "
                                                       "compare with a larger --tolerance). Example: --dtype bf16")] = "fp32",
    cpu: Cpu = None,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the HF model, checkpoints, logs and the scratch copy "
                                                      "of the tree; kept (default: a temporary folder, removed when "
                                                      "the check passes). Example: --workdir ./verify")] = None,
    json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Check the port numerically: HF's LlamaForCausalLM and the generated models give the same logits.

    A tiny random LLaMA (weights std 0.1, random norm weights) is saved as an HF directory,
    converted to the tree's checkpoints with `porter convert`'s code, loaded by the tree's own
    load_checkpoint into the generated LLaMAModel and LLaMAModelPipe (DeepSpeed, CPU, fp32) and
    run on the same batch. Passes when max |logit difference| <= --tolerance x max(1, max |logit|)
    and every argmax agrees; otherwise names the first module whose output diverges.

    With an HF config.json (or its folder) as MODEL, the reference is transformers' class built
    from that file as transformers reads it, only its sizes shrunk (layers, width, vocabulary;
    every ratio, the rope numbers, tying, biases, experts kept): the report says what shrank.
    With --hf DIR, your own weights run through both sides, nothing shrunk.

    With --load, the reference is that checkpoint converted to HF (megatron-to-hf), and the
    tree loads the checkpoint itself: a proof of a trained checkpoint's conversion.

    It runs in a scratch copy of the tree (your tree is never written); on the CPU, porter
    stands in for the tree's fork- and CUDA-only pieces there, and says which.

    Exit status: 0 passed, 1 parity failed, 2 error (nothing ported, bad options, a package the
    environment lacks, a tree that needs CUDA on a machine without it).

    Examples:
    porter verify llama --target ./Megatron-DeepSpeed
    porter verify llama --target ./Megatron-DeepSpeed --tp 2
    porter verify mixtral --target ./Megatron-DeepSpeed --ep 2
    porter verify ./Meta-Llama-3-8B --target ./Megatron-DeepSpeed
    porter verify ./Meta-Llama-3-8B --target ./Megatron-DeepSpeed --hf ./Meta-Llama-3-8B
    porter verify llama --target ./Megatron-DeepSpeed --load ./checkpoints --json > verify.json
    """
    from porter.requirements import require
    from porter.workfolder import WorkFolder

    out = Output(json=json, quiet=quiet)
    kinds = None if models is None else tuple(k.strip() for k in models.split(",") if k.strip())
    folder = None
    try:
        unknown = [k for k in kinds or () if k not in ("model", "pipe")]
        if unknown or kinds == ():
            raise PorterError(f"unknown --models {models!r}", construct="model, pipe or model,pipe",
                              found=", ".join(unknown) or "nothing", fix="pass --models model,pipe")
        _check_sizes(tp, pp, layers, heads)
        require("parity", "porter verify")
        from porter.catalog import load_spec
        from porter.treerun.device import runs_on_cpu
        from porter.verify.parity import VerifyOptions, describe
        from porter.verify.parity import verify as run_verify
        from porter.verify.reference import TinyConfig

        spec = load_spec(model)
        tiny = TinyConfig(num_layers=layers, hidden_size=hidden, num_attention_heads=heads, vocab_size=vocab,
                          seq_length=seq, batch_size=batch, weight_std=std, seed=seed)
        options = VerifyOptions(tiny=tiny, tensor_parallel=tp, pipeline_parallel=pp, kinds=kinds, expert_parallel=ep,
                                tolerance=tolerance, checkpoint=load.resolve() if load else None,
                                cpu=runs_on_cpu(cpu), hf_dir=hf.resolve() if hf else None, dtype=dtype)
        folder = WorkFolder.open(workdir, "verify", target)
        result = run_verify(spec, target, folder.path, options)
    except PorterError as exc:
        if folder is not None:
            out.warn(folder.close(passed=False))
        fail(exc, debug, out)
    if not json:
        say_standins(out, result.standins)
    kept = folder.close(result.passed)
    if json:
        out.emit("porter.verify/1", result.as_dict())
    elif not (quiet and result.passed):
        typer.echo(describe(result))
        typer.echo(f"verify {'passed' if result.passed else 'FAILED'} ({result.seconds:.1f} s)")
        if kept:
            typer.echo(f"  {kept}")
    raise typer.Exit(0 if result.passed else 1)


def _check_sizes(tp: int, pp: int | None, layers: int, heads: int) -> None:
    """Refuse sizes the run cannot honour before anything runs (exit status 2)."""
    if tp < 1 or (pp is not None and pp < 1):
        raise PorterError(f"--tp {tp} --pp {pp}: sizes must be 1 or more", construct="--tp 1 or more, --pp 1 or more",
                          found=f"--tp {tp} --pp {pp}", fix="pass --tp 1 (or 2) and --pp 1 (or 2)")
    if heads % tp:
        raise PorterError(f"--tp {tp} does not divide the {heads} attention heads",
                          construct="--heads divisible by --tp", found=f"--heads {heads} --tp {tp}",
                          fix=f"pass --tp 1 or 2, or --heads {tp * max(1, heads // tp)}")
