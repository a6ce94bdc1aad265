"""mpi4py where no MPI library loads: a COMM_WORLD of the run's own processes, without MPI.

argonne-lcf's entry points (pretrain_gpt_alcf.py) discover ranks with `from mpi4py import MPI`
and `MPI.COMM_WORLD`. A CPU runner may have mpi4py installed from PyPI and no MPI library
(`RuntimeError: cannot load MPI library`), or no mpi4py at all. Under --cpu the stand-in
serves an `mpi4py.MPI` whose COMM_WORLD is this run: its rank and size are the launcher's
RANK and WORLD_SIZE (one process: 0 and 1); a collective across several processes cannot be
served without MPI and fails loudly. Where MPI loads, the tree's mpi4py is used.
"""

from __future__ import annotations

from pathlib import Path

NAME = "mpi4py"
WHAT = ("mpi4py (no MPI library loads here): MPI.COMM_WORLD of this run's processes (rank and size from the "
        "launcher), collectives on one process only")


def applies(tree: Path) -> bool:
    from porter.treerun.standins import tree_mentions

    return tree_mentions(tree, "mpi4py")


def mpi(name: str):
    import os
    import socket

    from porter.treerun.standins.runtime import module

    class Comm:
        def __init__(self) -> None:
            self.rank = int(os.environ.get("RANK", "0"))
            self.size = int(os.environ.get("WORLD_SIZE", "1"))

        def Get_rank(self) -> int:
            return self.rank

        def Get_size(self) -> int:
            return self.size

        def _one(self, what: str, value):
            if self.size > 1:
                raise RuntimeError(f"porter's mpi4py stand-in cannot {what} across {self.size} processes without an "
                                   "MPI library: install one (e.g. apt-get install libopenmpi-dev) or run one process")
            return value

        def bcast(self, obj, root=0):
            return self._one("broadcast", obj)

        def allreduce(self, value, op=None):
            return self._one("all-reduce", value)

        def allgather(self, value):
            return self._one("all-gather", [value])

        def gather(self, value, root=0):
            return self._one("gather", [value])

        def barrier(self) -> None:
            self._one("wait at a barrier", None)

        Barrier = barrier

    if name == "mpi4py":
        return module(name, {"__version__": "porter-stand-in"})
    return module(name, {"COMM_WORLD": Comm(), "Get_processor_name": socket.gethostname, "SUM": "sum", "MAX": "max",
                         "MIN": "min", "Is_initialized": lambda: True, "Is_finalized": lambda: False})


def install(hooks) -> None:
    try:
        from mpi4py import MPI  # noqa: F401  (loads the MPI library, or fails)
    except (ImportError, RuntimeError, OSError):
        hooks.serve("mpi4py", NAME, mpi)
