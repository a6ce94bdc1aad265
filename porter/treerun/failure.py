"""Why a run inside a tree failed, as a user needs to hear it.

A smoke or verify run that stops prints a Python traceback somewhere in its log. This reads
the last one and sorts it: a package the environment lacks (the tree's own `import six`:
pip installs it, the port is not at fault), a tree that needs CUDA (it imports apex at
start-up, or asserts CUDA), or an error of the tree's code, named by its exception and the
innermost line of the tree it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError
from porter.treerun.pip_names import PIP_NAMES, SAME_ON_PYPI

TRACEBACK = "Traceback (most recent call last):"
FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")  # torch.distributed's per-rank prefix
MISSING = re.compile(r"No module named '?(?P<name>[A-Za-z_][\w.]*)'?")
# Packages that exist only as CUDA builds (NVIDIA's apex and its extensions, flash-attn,
# Transformer Engine, Megatron's own fused kernels).
CUDA_ONLY = {"apex", "amp_C", "flash_attn", "transformer_engine", "fused_layer_norm_cuda",
             "fused_mix_prec_layer_norm_cuda", "fused_weight_gradient_mlp_cuda", "xformers"}
MPI_MISSING = re.compile(r"cannot load MPI library|libmpi[\w.]*\.so|libmpich[\w.]*\.so")
CUDA_MESSAGE = re.compile(r"Torch not compiled with CUDA|No CUDA GPUs are available|Found no NVIDIA driver|"
                          r"CUDA driver|no CUDA-capable device|requires CUDA support|nvcc|cuda_runtime|CUDA_HOME", re.I)
@dataclass
class Frame:
    file: str
    line: int
    code: str


@dataclass
class TreeFailure:
    kind: str  # "missing-package", "needs-cuda", "no-mpi" (mpi4py without an MPI library) or "error"
    exception: str  # the exception line, e.g. "ModuleNotFoundError: No module named 'six'"
    where: Frame | None  # the innermost frame in the tree, its path relative to the tree
    package: str | None = None  # missing-package / needs-cuda: the import name
    tree: Path | None = None  # the tree the run was of (where the tree's uses of a missing package are read)

    @property
    def summary(self) -> str:
        """One line: the exception, and where in the tree it came from (and why, where porter knows)."""
        if self.where is None:
            return self.exception
        return f"{self.exception} (at {self.where.file}:{self.where.line}: {self.where.code})" + \
            (self.known_cause or self.whose)

    @property
    def whose(self) -> str:
        """'; the tree's own code at F:N ...' or '; the port's code at F:N ...' (porter's journal says which), or ''."""
        from porter.treerun.owner import described

        if self.kind != "error" or self.where is None:
            return ""
        said = described(self.tree, self.where.file, self.where.line)
        return f"; {said}" if said else ""

    @property
    def known_cause(self) -> str:
        """Why the tree's own code fails, for failures porter recognises; '' otherwise."""
        if self.kind == "error" and self.where is not None and "NoneType.__format__" in self.exception \
                and "loss_scale" in self.where.code:
            return (f"; the tree's own code at {self.where.file}:{self.where.line} fails in fp32: it formats the loss "
                    "scale, which is None without fp16 (porter smoke trains in fp32 only, so the tree's "
                    "mixed-precision path, where the scale is a number, is not taken)")
        return ""

    @property
    def is_environment(self) -> bool:
        return self.kind in ("missing-package", "needs-cuda", "no-mpi")

    def error(self, what: str, log: Path | None = None) -> PorterError:
        """The refusal for an environment failure (exit status 2); `what` names the run."""
        file = f"{self.where.file}:{self.where.line}" if self.where else (str(log) if log else None)
        found = f"{self.exception}, raised by `{self.where.code}`" if self.where and self.where.code else self.exception
        if self.kind == "no-mpi":
            return PorterError(
                f"the tree imports mpi4py, which finds no MPI library on this machine ({what} stopped; the "
                "environment, not the tree's code nor the port)",
                file=file, construct="from mpi4py import MPI (with an MPI library installed)", found=found,
                fix="install an MPI library (apt-get install libopenmpi-dev, or pip install mpich), or run with "
                    "--cpu: porter stands in a COMM_WORLD of the run's own processes",
            )
        if self.kind == "needs-cuda":
            cause = f"it imports {self.package} (CUDA-only) at start-up" if self.package else "it requires CUDA at start-up"
            return PorterError(
                f"this tree needs CUDA: {cause}, and this machine has none ({what} stopped)",
                file=file, construct="a tree that starts on this machine's CPU", found=found,
                fix="run it on a machine with an NVIDIA GPU (with the tree's CUDA packages installed); "
                    "the port itself is written: porter diff and porter inspect show it",
            )
        if "." in (self.package or ""):
            top = self.package.split(".")[0]
            return PorterError(
                f"the installed {top} {_version(top)} has no module {self.package}, which the tree imports: "
                f"the tree was written for another {top} ({what} stopped; the port is not at fault)",
                file=file, construct=f"import {self.package}", found=found,
                fix=f"install the {top} version the tree was written for (its requirements), or run with --cpu: "
                    "porter's stand-ins cover the pieces newer releases removed",
            )
        pip = pip_name(self.package)
        if pip is None:
            return PorterError(
                f"the environment lacks the Python package {self.package!r} that the tree imports ({what} stopped; "
                f"the port is not at fault), and porter cannot tell which pip package provides it",
                file=file, construct=f"import {self.package}", found=found + _uses(self.package, self.tree),
                fix=f"install the {self.package} the tree's authors mean (see the tree's README or requirements"
                    + _named_source(self.package, self.tree) + f"); a PyPI project named {self.package!r} may be "
                    "another one, then run porter again",
            )
        extra = " (or pip install 'porter[train]', which has what real trees commonly import)" \
            if pip.lower() in train_extra() else ""
        return PorterError(
            f"the environment lacks the Python package {pip!r} that the tree imports ({what} stopped; "
            f"the port is not at fault)",
            file=file, construct=f"import {self.package}", found=found,
            fix=f"pip install {pip}{extra}, then run porter again",
        )


def last_traceback(log: str) -> tuple[list[Frame], str] | None:
    """(frames, exception line) of the last complete traceback in log, or None."""
    lines = [RANK_PREFIX.sub("", line) for line in log.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.strip() == TRACEBACK]
    for start in reversed(starts):
        frames: list[Frame] = []
        i = start + 1
        while i < len(lines):
            match = FRAME.match(lines[i])
            if match:
                code = lines[i + 1].strip() if i + 1 < len(lines) and not FRAME.match(lines[i + 1]) else ""
                frames.append(Frame(match["file"], int(match["line"]), code))
                i += 2 if code else 1
                continue
            stripped = lines[i].strip()
            if frames and stripped and not lines[i].startswith((" ", "\t")) and not set(stripped) <= set("^~ "):
                return frames, stripped
            i += 1
    return None


def _in_tree(frames: list[Frame], roots: list[Path]) -> Frame | None:
    for frame in reversed(frames):
        for root in roots:
            path = Path(frame.file) if Path(frame.file).is_absolute() else Path(root) / frame.file
            try:
                relative = path.resolve().relative_to(Path(root).resolve())
            except ValueError:
                continue
            return Frame(str(relative), frame.line, frame.code)
    return None


def classify(log: str, roots: list[Path]) -> TreeFailure | None:
    """Why the run whose output is `log` failed; `roots`: the tree (and its scratch copy)."""
    failure = _classify(log, roots)
    if failure is not None and roots:
        failure.tree = Path(roots[-1])
    return failure


def _classify(log: str, roots: list[Path]) -> TreeFailure | None:
    found = last_traceback(log)
    if found is not None:
        frames, exception = found
        where = _in_tree(frames, roots)
        missing = MISSING.search(exception) if exception.startswith(("ModuleNotFoundError", "ImportError")) else None
        if missing:
            top = missing["name"].split(".")[0]
            if top in CUDA_ONLY or top.endswith("_cuda"):
                return TreeFailure("needs-cuda", exception, where, top)
            if top == missing["name"] or _not_installed(top):
                return TreeFailure("missing-package", exception, where, top)
            return TreeFailure("missing-package", exception, where, missing["name"])  # another version
        if MPI_MISSING.search(exception) or (where is None and any("mpi4py" in f.file for f in frames)
                                              and exception.startswith(("RuntimeError", "ImportError", "OSError"))):
            return TreeFailure("no-mpi", exception, where, "mpi4py")
        if CUDA_MESSAGE.search(exception) or (exception.startswith("AssertionError") and where
                                               and "cuda" in where.code.lower()):
            return TreeFailure("needs-cuda", exception, where)
        if not exception.startswith("SystemExit"):
            return TreeFailure("error", exception, where)
    # No traceback of its own: a build step that failed (`python3 -m pybind11` in a Makefile)
    for line in reversed(log.splitlines()):
        missing = MISSING.search(line)
        if missing and _not_installed(missing["name"].split(".")[0]):
            return TreeFailure("missing-package", line.strip(), None, missing["name"].split(".")[0])
    return None


def _not_installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "(version unknown)"


def train_extra() -> set[str]:
    """The distribution names in porter's `train` extra (from its installed metadata)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        wanted = requires("porter") or []
    except PackageNotFoundError:
        return set()
    return {re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower() for line in wanted
            if re.search(r"extra\s*==\s*[\"']train[\"']", line)}


def pip_name(package: str) -> str | None:
    """The pip package that installs `package` (an import name), where porter knows it (porter.treerun.pip_names)."""
    if package in PIP_NAMES:
        return PIP_NAMES[package]
    if package in SAME_ON_PYPI or package.lower() in train_extra():
        return package
    return None


def _uses(package: str, tree: Path | None) -> str:
    """`; the tree uses it for: a, b, c` (the names the tree's Python takes from it), or ''."""
    if tree is None:
        return ""
    from porter.treerun.standins import tree_sources

    text = tree_sources(str(Path(tree).resolve()))
    names = dict.fromkeys(re.findall(rf"(?<!from )(?<!import )\b{re.escape(package)}\.([A-Za-z_]\w*)", text))
    for imported in re.findall(rf"^\s*from {re.escape(package)}(?:\.[\w.]+)? import \(?([\w, ]+)", text, re.M):
        names.update(dict.fromkeys(n.split(" as ")[0].strip() for n in imported.split(",") if n.strip()))
    shown = [n for n in names if not n.startswith("_")][:10]
    return f"; the tree uses it for: {', '.join(shown)}" if shown else ""


def _named_source(package: str, tree: Path | None) -> str:
    """`; the tree's <file> names <url>`: where the tree's own documents say the package comes from."""
    if tree is None:
        return ""
    url = re.compile(rf"(?:https?://|git\+)[^\s)\]'\"`]*/{re.escape(package)}(?:\.git)?(?=[\s)\]'\"`/]|$)")
    for path in sorted(Path(tree).rglob("*")):
        if path.suffix not in (".md", ".txt", ".sh", ".toml", ".cfg", ".rst") and path.name != "setup.py":
            continue
        try:
            found = url.search(path.read_text(errors="replace"))
        except OSError:
            continue
        if found:
            return f"; the tree's {path.relative_to(tree)} names {found.group(0)}"
    return ""
