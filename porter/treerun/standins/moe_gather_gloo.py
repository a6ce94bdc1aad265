"""DeepSpeed's MoE layer gathering tokens over the tensor-parallel ranks on gloo.

With tensor parallelism, deepspeed.moe.mappings gathers each rank's slice of the tokens into
a flat buffer (`all_gather_into_tensor(flat, tokens)`). NCCL takes any output of world x the
input's elements; gloo (torch.distributed on a CPU) takes only an output shaped [world * d0,
d1, ...], and refuses the flat one. The stand-in gathers into that shape on a gloo group and
cuts it as DeepSpeed does; elsewhere DeepSpeed's own gather runs.
"""

from __future__ import annotations

from pathlib import Path

NAME = "moe gather on gloo"
WHAT = ("DeepSpeed's MoE token gather over tensor-parallel ranks into a flat buffer, which gloo refuses: "
        "gathered into the buffer's [world * d0, ...] shape instead")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "deepspeed.moe")


def _patch(mappings) -> None:
    original = getattr(mappings, "_gather_tokens", None)
    if original is None:
        return

    def gather_tokens(input_, dim=0):
        import deepspeed
        import torch

        mpu = deepspeed.utils.groups.mpu
        group = mpu.get_tensor_model_parallel_group() if mpu is not None else None
        world = mpu.get_tensor_model_parallel_world_size() if mpu is not None else 1
        if world == 1 or torch.distributed.get_backend(group) != "gloo":
            return original(input_, dim)
        from porter.treerun.standins.runtime import used

        used(NAME)
        input_ = input_.contiguous()
        gathered = input_.new_empty((world * input_.shape[0], *input_.shape[1:]))
        torch.distributed.all_gather_into_tensor(gathered, input_, group=group)
        return torch.cat(gathered.chunk(world, dim=0), dim=dim).contiguous()

    mappings._gather_tokens = gather_tokens


def install(hooks) -> None:
    hooks.after("deepspeed.moe.mappings", _patch)
