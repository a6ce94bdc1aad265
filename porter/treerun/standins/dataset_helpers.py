"""megatron.data.helpers built with the running interpreter's extension suffix.

The trees build their dataset index helpers at the first run: megatron/data/Makefile makes
`helpers$(LIBEXT)`, LIBEXT coming from `python3-config --extension-suffix`. Some forks call a
python3-config at a path of their author's machine there (llm-jp's feature branches:
`~/.pyenv/versions/3.11.4/bin/python3-config`); elsewhere it is missing, make writes `helpers`
with no suffix, and `from megatron.data import helpers` fails. Where that import finds nothing,
the stand-in builds megatron/data/helpers.cpp in the run's scratch copy with g++ and pybind11, for
this interpreter's suffix, and imports that.
"""

from __future__ import annotations

from pathlib import Path

NAME = "dataset helpers"
WHAT = ("megatron.data.helpers (the tree's make wrote no importable module: its LIBEXT names another "
        "machine's python3-config): built from megatron/data/helpers.cpp for this Python, in the scratch copy")


def applies(tree: Path) -> bool:
    return (Path(tree) / "megatron" / "data" / "helpers.cpp").is_file()


def build(name: str):
    import importlib
    import importlib.util
    import os
    import subprocess
    import sys
    import sysconfig
    import tempfile

    import pybind11

    folder = Path(importlib.import_module("megatron.data").__file__).parent
    target = folder / ("helpers" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not target.exists():
        fd, tmp = tempfile.mkstemp(prefix=".helpers.", suffix=".so", dir=folder)
        os.close(fd)
        subprocess.run(["g++", "-O3", "-Wall", "-shared", "-std=c++11", "-fPIC", f"-I{pybind11.get_include()}",
                        f"-I{sysconfig.get_paths()['include']}", str(folder / "helpers.cpp"), "-o", tmp],
                       check=True, stdout=sys.stderr)
        os.replace(tmp, target)  # several ranks may build at once: each replaces with a whole module
    spec = importlib.util.spec_from_file_location(name, target)
    made = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(made)
    return made


def install(hooks) -> None:
    hooks.missing("megatron.data.helpers", NAME, build)
