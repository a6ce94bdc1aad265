"""Stand-ins that let real Megatron-DeepSpeed trees import and run on a CPU machine.

Test machinery only (PYTHONPATH of the real-tree runs), never part of porter's output. Each
stand-in is installed only when the real module is missing:
  - deepspeed.compression.compress: deepspeed 0.19 removed it; every tree's training.py
    imports it at module level (init_compression / redundancy_clean, unused without
    compression training);
  - torchvision and PIL (and their submodules): Megatron imports them only for its vision
    datasets;
  - torch._six (removed in torch 2): bigscience's clip_grads imports `inf` from it;
and, when PORTER_STANDINS names them (comma-separated):
  - habana: habana_frameworks.torch.core.mark_step, which Habana's training loop calls
    unconditionally (no habana_frameworks.torch.hpu, so DeepSpeed detects no HPU);
  - apex: apex / amp_C names that bigscience's tree imports at module level (enough to
    import and parse arguments; nothing of them runs).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types


class _Anything:
    """A name that can be called, subclassed or looked into, and does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return _Anything()


class _LooseModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


def _module(name, attributes=None, loose=False, package=False):
    module = (_LooseModule if loose else types.ModuleType)(name)
    module.__dict__.update(attributes or {})
    if package:
        module.__path__ = []
    return module


# module -> factory; a package marked "*" serves every submodule too (loose modules).
_STANDINS = {
    "deepspeed.compression.compress": lambda name: _module(
        name, {"init_compression": lambda model, *a, **k: model, "redundancy_clean": lambda model, *a, **k: model},
    ),
    "torchvision*": lambda name: _module(name, loose=True, package=True),
    "PIL*": lambda name: _module(name, loose=True, package=True),
    "torch._six": lambda name: _module(name, {"inf": float("inf"), "string_classes": (str, bytes)}),
}
_OPTIONAL = {
    "habana": {
        "habana_frameworks": lambda name: _module(name, package=True),
        "habana_frameworks.torch": lambda name: _module(name, package=True),
        "habana_frameworks.torch.core": lambda name: _module(name, {"mark_step": lambda: None}),
    },
    "apex": {
        "apex*": lambda name: _module(name, loose=True, package=True),
        "amp_C": lambda name: _module(name, loose=True),
    },
}
for _wanted in filter(None, os.environ.get("PORTER_STANDINS", "").split(",")):
    _STANDINS.update(_OPTIONAL[_wanted.strip()])


def _factory(name):
    if name in _STANDINS:
        return _STANDINS[name]
    for key, factory in _STANDINS.items():
        if key.endswith("*") and (name == key[:-1] or name.startswith(key[:-1] + ".")):
            return factory
    return None


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a stand-in for a listed module only when no real one can be found."""

    def find_spec(self, name, path=None, target=None):
        if _factory(name) is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            try:
                if finder.find_spec(name, path, target) is not None:
                    return None
            except (ImportError, ValueError):
                continue
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return _factory(spec.name)(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.append(_StandInFinder())
