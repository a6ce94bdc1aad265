"""A CPU case for a device RNG tracker that has only HPU and CUDA ones (Habana's).

Habana's megatron/mpu/random.py picks, in RNGStatesTrackerSingleton.get(), an HPU tracker
when args.use_hpu and a CUDA one otherwise, and megatron/initialize.py::_set_random_seed
seeds the model-parallel RNG state only on CUDA or HPU devices; on CPU, weight init fails with
"cuda rng state model-parallel-rng is not added". The stand-in gives the tracker class the
CPU generator's state functions when the run's device is the CPU, and seeds it on CPU the
way the tree seeds it on a device (its own model_parallel_cuda_manual_seed, with the seed
_set_random_seed gave torch.manual_seed).
"""

from __future__ import annotations

import functools
from pathlib import Path

NAME = "device RNG tracker"
WHAT = ("the tree's device RNG tracker (HPU and CUDA cases only): the CPU generator's state on a CPU run, "
        "seeded as the tree seeds a device")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "RNGStatesTrackerSingleton")


def _on_cpu() -> bool:
    from megatron import get_args

    device = getattr(get_args(), "device", None)
    return getattr(device, "type", device) == "cpu"


def _patch_random(random) -> None:
    import torch

    singleton, tracker = getattr(random, "RNGStatesTrackerSingleton", None), getattr(random, "RNGStatesTracker", None)
    if singleton is None or tracker is None or not hasattr(tracker, "get_state_fnc"):
        return

    class CPURNGStatesTracker(tracker):
        @staticmethod
        def get_state_fnc(device="cpu"):
            return torch.get_rng_state()

        @staticmethod
        def set_state_fnc(new_state, device="cpu"):
            return torch.set_rng_state(new_state)

        @staticmethod
        def manual_seed(seed):
            return torch.manual_seed(seed)

        @staticmethod
        def set_rng_state(new_state, device=-1):
            return torch.set_rng_state(new_state)

    get = singleton.get

    @functools.wraps(get)
    def get_tracker(self):
        if not self.tracker and _on_cpu():
            from porter.treerun.standins.runtime import used

            used(NAME)
            type(self).tracker = CPURNGStatesTracker()
        return get(self)

    singleton.get = get_tracker


def _patch_initialize(initialize) -> None:
    import torch

    set_seed = getattr(initialize, "_set_random_seed", None)
    mpu = getattr(initialize, "mpu", None)
    if set_seed is None or mpu is None:
        return

    @functools.wraps(set_seed)
    def _set_random_seed(seed_, *args, **kwargs):
        seen = []
        manual_seed = torch.manual_seed
        torch.manual_seed = lambda seed: (seen.append(seed), manual_seed(seed))[1]
        try:
            result = set_seed(seed_, *args, **kwargs)
        finally:
            torch.manual_seed = manual_seed
        tracker = getattr(getattr(mpu, "random", None), "RNGStatesTrackerSingleton", None)
        if seen and tracker is not None and _on_cpu() and not mpu.get_cuda_rng_tracker().get_states():
            mpu.model_parallel_cuda_manual_seed(seen[0])
        return result

    initialize._set_random_seed = _set_random_seed


def install(hooks) -> None:
    hooks.after("megatron.mpu.random", _patch_random)
    hooks.after("megatron.initialize", _patch_initialize)
