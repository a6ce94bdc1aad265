"""The command line of a smoke run of the ported script: the tiny config, its data, its engine."""

from __future__ import annotations

from pathlib import Path

from porter.smoke.config import SmokeConfig
from porter.smoke.ds_config import deepspeed_config
from porter.smoke.port import SmokePort
from porter.treerun.argv import fused_kernels_off, max_positions_allowed, numbers_argv


def training_arguments(port: SmokePort, workdir: Path, config: SmokeConfig, model: Path, prefix: Path,
                       cpu: bool = True) -> list[str]:
    """The tiny-config command line of a smoke run of the ported script.

    The entry point's defaults are a real model's, so the spec's numbers are passed at the
    smoke size (key/value heads that divide the smoke run's heads, a sliding window shorter
    than its sequence, an MLP width for its hidden size).
    """
    profile = port.profile
    args = [
        "--num-layers", str(config.num_layers),
        "--hidden-size", str(config.hidden_size),
        "--num-attention-heads", str(config.num_attention_heads),
        "--seq-length", str(config.seq_length),
        "--micro-batch-size", str(config.batch_size),
        "--global-batch-size", str(config.global_batch_size),
        "--train-iters", str(config.steps),
        "--lr", str(config.lr),
        "--min-lr", str(config.lr / 10),
        "--lr-decay-style", "constant",
        "--log-interval", "1",
        "--eval-iters", "0",
        "--eval-interval", str(10**6),
        "--data-path", str(prefix),
        "--split", "100,0,0",
        "--tokenizer-type", port.tokenizer_type,
        "--tokenizer-model", str(model),
        "--seed", str(config.seed),
        "--tensor-model-parallel-size", str(config.tensor_parallel),
        "--pipeline-model-parallel-size", str(config.pipeline_parallel),
        "--deepspeed",
        "--deepspeed_config", str(deepspeed_config(workdir, config)),
        "--zero-stage", str(config.zero_stage),
    ]
    if max_positions_allowed(port.spec, profile):
        args += ["--max-position-embeddings", str(config.seq_length)]
    if "--distributed-backend" in profile.arguments.options:
        args += ["--distributed-backend", "gloo" if cpu else "nccl"]
    args += fused_kernels_off(profile)
    if not config.pipe:
        args.append("--no-pipeline-parallel")
    args += numbers_argv(port.plan, profile)
    args += config.extra_args
    return args
