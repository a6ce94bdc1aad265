"""The import machinery of the stand-ins, inside a run in a scratch copy of a tree.

Imported only by the child processes porter starts in a tree (porter.treerun.standins.launch, the
verify worker), never by porter's own commands. Two kinds of hook:

- `missing(name, factory)`: serve a module of porter's own for `name` (or, with a trailing
  ".*", for it and its submodules) only when no real one can be imported;
- `after(name, patch)`: once the real module `name` has been executed, call `patch(module)`.

A stand-in that acts calls `used(name)`, which appends its name to the file named by
PORTER_STANDINS_REPORT, so that the parent can say which stand-ins a run needed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable

from porter.treerun.standins import ENV_NAMES, ENV_REPORT, by_name

_reported: set[str] = set()


def used(name: str) -> None:
    """Record that stand-in `name` acted in this run (once per process)."""
    if name in _reported:
        return
    _reported.add(name)
    report = os.environ.get(ENV_REPORT)
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(name + "\n")


class _AnythingType(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything


class Anything(metaclass=_AnythingType):
    """A name that can be called, subclassed, looked into (as a class too) or iterated, and does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return Anything()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything()

    def __iter__(self):
        return iter(())


class LooseModule(types.ModuleType):
    """A stand-in module where every name exists (as `Anything`)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything


def module(name: str, attributes: dict | None = None, loose: bool = False) -> types.ModuleType:
    made = (LooseModule if loose else types.ModuleType)(name)
    made.__dict__.update(attributes or {})
    made.__path__ = []  # a package: its submodules are asked for through the finder
    return made


class ReportingModule(types.ModuleType):
    """A stand-in module that reports its stand-in as used when the run takes one of its names
    (a module imported only to find a name it lacks, as a tree's `try:` does, reports nothing)."""

    def __init__(self, name: str, standin: str, attributes: dict) -> None:
        super().__init__(name)
        self.__path__ = []
        self._standin, self._names = standin, attributes

    def __getattr__(self, name: str):
        names = self.__dict__.get("_names", {})
        if name not in names:
            raise AttributeError(f"module {self.__name__!r} (porter's stand-in) has no attribute {name!r}")
        used(self.__dict__["_standin"])
        return names[name]


Factory = Callable[[str], types.ModuleType]


class Hooks(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The finder at the front of sys.meta_path that serves stand-ins and runs patches."""

    def __init__(self) -> None:
        self._missing: dict[str, tuple[str | None, Factory]] = {}  # name or "pkg.*" -> (stand-in, factory)
        self._after: dict[str, list[Callable[[types.ModuleType], None]]] = {}
        self._serving: set[str] = set()  # "pkg.*" roots whose whole package is a stand-in here

    # -- registration --------------------------------------------------------------------------
    def missing(self, name: str, standin: str | None, factory: Factory) -> None:
        """Serve factory(name) for `name` ("pkg.*": pkg and every submodule) when it cannot be imported.

        `standin` None: a package that only holds stand-ins served under it (apex's), not
        reported by itself.

        For "pkg.*", a real pkg that fails while it imports (a wheel built for another torch)
        counts as missing: its half-imported modules are dropped and the stand-in serves.
        """
        self._missing[name] = (standin, factory)

    def serve(self, root: str, standin: str, factory: Factory) -> None:
        """Serve factory(name) for the package `root` and its submodules from now on, in place of a
        real one that is installed but does not work here (its half-imported modules are dropped)."""
        for loaded in [m for m in sys.modules if m == root or m.startswith(root + ".")]:
            del sys.modules[loaded]
        self._missing[root + ".*"] = (standin, factory)
        self._serving.add(root)

    def after(self, name: str, patch: Callable[[types.ModuleType], None]) -> None:
        """Call patch(module) once the real module `name` has been executed."""
        self._after.setdefault(name, []).append(patch)
        loaded = sys.modules.get(name)
        if loaded is not None:  # imported before the hooks were installed
            patch(loaded)

    # -- finder --------------------------------------------------------------------------------
    def _entry(self, name: str) -> tuple[str, str, Factory] | None:
        if name in self._missing:
            return (name, *self._missing[name])
        for key, value in self._missing.items():
            if key.endswith(".*") and (name == key[:-2] or name.startswith(key[:-1])):
                return (key, *value)
        return None

    def _real_spec(self, name, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(name, path, target)
            except (ImportError, ValueError):
                continue
            if spec is not None:
                return spec
        return None

    def find_spec(self, name, path=None, target=None):
        entry = self._entry(name)
        if entry is not None:
            key, standin, _ = entry
            root = key[:-2] if key.endswith(".*") else None
            if root is not None and root in self._serving:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            real = self._real_spec(name, path, target)
            if real is None:
                if root is not None:
                    self._serving.add(root)
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            if name == root and real.loader is not None and hasattr(real.loader, "exec_module"):
                self._fall_back_when_broken(real, root, standin)
            return real
        patches = self._after.get(name)
        if patches:
            spec = self._real_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run = spec.loader.exec_module

                def exec_module(module, run=run, patches=patches):
                    run(module)
                    for patch in patches:
                        patch(module)

                spec.loader.exec_module = exec_module
            return spec
        return None

    def _fall_back_when_broken(self, spec, root: str, standin: str) -> None:
        run = spec.loader.exec_module
        factory = self._missing[root + ".*"][1]

        def exec_module(module, run=run):
            try:
                run(module)
            except Exception:
                for loaded in [m for m in sys.modules if m.startswith(root + ".")]:
                    del sys.modules[loaded]
                keep = {k: module.__dict__[k] for k in ("__name__", "__spec__", "__loader__") if k in module.__dict__}
                standin_module = factory(root)
                module.__dict__.clear()
                module.__dict__.update(vars(standin_module))
                module.__dict__.update(keep)
                module.__class__ = type(standin_module)
                self._serving.add(root)
                used(standin)

        spec.loader.exec_module = exec_module

    # -- loader --------------------------------------------------------------------------------
    def create_module(self, spec):
        _, standin, factory = self._entry(spec.name)
        if standin is not None:
            used(standin)
        return factory(spec.name)

    def exec_module(self, module) -> None:
        pass


HOOKS = Hooks()


def install(names: list[str]) -> Hooks:
    """Install the named stand-ins in this process (see porter.treerun.standins.MODULES)."""
    if HOOKS not in sys.meta_path:
        sys.meta_path.insert(0, HOOKS)
    for name in names:
        importlib.import_module(by_name(name).module).install(HOOKS)
    return HOOKS


def install_from_environment() -> None:
    names = [n.strip() for n in os.environ.get(ENV_NAMES, "").split(",") if n.strip()]
    if names:
        install(names)
