"""Worker: what a ported tree's MoE layers start as (run inside the tree by tests/families/test_moe_routing.py).

    python -m tests.helpers.moe_start JOB.json

Builds the generated model with the tree's own machinery (its parser with the entry point's
defaults, its model_provider, DeepSpeed's plain engine, which makes the expert-parallel
groups) and saves, per rank, every MoE layer's router weight and each local expert's weights
under its global id: <out>/rank<R>.pt = {layer path: {"router": tensor, "experts": {id: {name: tensor}}}}.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch

from porter.verify import harness


def main(path: str) -> int:
    job = json.loads(Path(path).read_text())
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        from deepspeed.moe.layer import MoE
        from deepspeed.utils import groups

        session = harness.TreeSession.start(harness.TreeJob.from_dict(job["tree"]))
        engine = session.engine("model")
        found = {}
        for name, module in engine.module.named_modules():
            if not isinstance(module, MoE):
                continue
            rank = groups._get_expert_parallel_rank(module.expert_group_name)
            experts = {}
            for local, expert in enumerate(module.deepspeed_moe.experts.deepspeed_experts):
                experts[rank * module.num_local_experts + local] = {
                    key: value.detach().clone() for key, value in expert.state_dict().items()}
            found[name] = {"router": module.deepspeed_moe.gate.wg.weight.detach().clone(), "experts": experts,
                           "router_class": type(module.deepspeed_moe.gate).__name__}
        torch.save(found, out / f"rank{torch.distributed.get_rank()}.pt")
    except BaseException:
        (out / f"rank{os.environ.get('RANK', '0')}.error").write_text(traceback.format_exc())
        raise
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
