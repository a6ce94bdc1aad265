"""The verify worker: `python -m porter.verify.worker JOB.json`, run inside the target tree.

Started by porter.verify.parity with the tree first on PYTHONPATH (one process, or one per
rank under torch.distributed.run). For each model kind in the job it builds the generated
model with the tree's model_provider, wraps it in DeepSpeed, checks that its tensors are
exactly the converted checkpoint's (and the tensors its code computes, its buffers, hold the same
values), loads the checkpoint with the tree's own
load_checkpoint, runs the batch with probes attached, and saves what it saw to
<out>/<kind>-rank<R>.pt.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch

from porter.verify import harness, treeargs


def run_kind(session: harness.TreeSession, kind: str, job: dict, out: Path) -> None:
    mpu = harness.parallel_state()
    layout = job["layout"]
    tokens = torch.tensor(job["tokens"], dtype=torch.long)
    labels = torch.tensor(job["labels"], dtype=torch.long)
    positions = torch.tensor(job["positions"], dtype=torch.long) if job.get("positions") else None
    tp_rank = mpu.get_tensor_model_parallel_rank()
    pp_rank = mpu.get_pipeline_model_parallel_rank()
    record: dict = {"kind": kind, "tp_rank": tp_rank, "pp_rank": pp_rank,
                    "tp": mpu.get_tensor_model_parallel_world_size(),
                    "pp": mpu.get_pipeline_model_parallel_world_size(), "dp_rank": mpu.get_data_parallel_rank()}

    checkpoint = Path(job["checkpoints"][kind])
    folder = checkpoint / (checkpoint / "latest").read_text().strip()
    if job.get("stamp_args") and torch.distributed.get_rank() == 0:
        # what `porter convert` does with the tree's parser: the checkpoint carries the tree's args
        treeargs.stamp(folder, session.args)
    torch.distributed.barrier()
    engine = session.engine(kind)
    apart = job.get("apart", [])
    problems = harness.structure_problems(harness.expected_tensors(engine.module, kind, folder, tp_rank, apart))
    record["structure"] = problems
    if problems:
        harness.load_loosely(engine.module, kind, folder, tp_rank, job["weight_std"], job["seed"] + 7, apart)
        record["loaded_by"] = "porter (loosely: the structure differs)"
    else:
        record["structure"] = harness.computed_differently(engine.module, kind, folder, tp_rank, job.get("made", ()))
        session.args.load = str(checkpoint)
        session.load(engine, strict=True)
        record["loaded_by"] = "the tree's megatron.checkpointing.load_checkpoint"

    probes = job["probes"]
    values, handles = harness.attach_probes(engine.module, probes, layout, job["num_layers"], kind)
    try:
        record.update(session.run(engine, tokens, labels, positions))
    finally:
        for handle in handles:
            handle.remove()
    # The logits are what the model returns (not what a hook on its head saw).
    logits = record.pop("logits")
    if logits is not None:
        values[next(p["name"] for p in probes if p["site"] == "output")] = logits
    record["probes"] = values
    torch.save(record, out / f"{kind}-rank{torch.distributed.get_rank()}.pt")


def main(path: str) -> int:
    job = json.loads(Path(path).read_text())
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    stage = "start"  # what the error file is named after: the tree's start-up, or a model kind
    try:
        session = harness.TreeSession.start(harness.TreeJob.from_dict(job["tree"]))
        for kind in job["kinds"]:
            stage = kind
            run_kind(session, kind, job, out)
    except BaseException as exc:  # the parent reports this rank's own error, not the launcher's summary
        if not isinstance(exc, SystemExit) or exc.code not in (0, None):
            rank = os.environ.get("RANK", "0")
            (out / f"{stage}-rank{rank}.error").write_text(traceback.format_exc())
        raise
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
