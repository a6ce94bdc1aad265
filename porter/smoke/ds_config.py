"""The DeepSpeed config of a smoke run: its batch, ZeRO stage, fp32."""

from __future__ import annotations

import json
from pathlib import Path

from porter.smoke.config import SmokeConfig


def deepspeed_config(workdir: Path, config: SmokeConfig) -> Path:
    path = workdir / "ds_config.json"
    path.write_text(
        json.dumps(
            {
                "train_batch_size": config.global_batch_size,
                "train_micro_batch_size_per_gpu": config.batch_size,
                "gradient_accumulation_steps": config.global_batch_size // (config.batch_size * config.data_parallel),
                "zero_optimization": {"stage": config.zero_stage},
                "fp16": {"enabled": False},
                "bf16": {"enabled": False},
                "steps_per_print": 10**9,
                "wall_clock_breakdown": False,
            },
            indent=1,
        )
    )
    return path
