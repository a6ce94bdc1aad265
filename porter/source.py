"""The target tree as porter reads it: each file read once, parsed at most once.

Reading refuses early and clearly, naming the file, when it is not UTF-8 or does not parse;
it remembers each file's exact bytes and line-ending style so that what porter writes back
keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from porter.errors import PorterError
from porter.syntax_error import syntax_error

# The files that make a folder a Megatron-DeepSpeed tree porter can port.
REQUIRED_FILES = (
    "megatron/arguments.py",
    "megatron/model/__init__.py",
    "megatron/model/transformer.py",
    "megatron/model/gpt_model.py",
    "megatron/model/language_model.py",
)


@dataclass
class SourceFile:
    path: str  # relative, with forward slashes
    raw: bytes
    text: str  # decoded, with "\n" line endings
    newline: str  # "\n", "\r\n", or "mixed" (porter reads such a file but will not rewrite it)
    bom: bool
    _module: cst.Module | None = field(default=None, repr=False)

    @property
    def module(self) -> cst.Module:
        if self._module is None:
            try:
                self._module = cst.parse_module(self.text)
            except cst.ParserSyntaxError as exc:
                raise syntax_error(self.path, self.text, exc) from exc
        return self._module

    def encode(self, text: str) -> bytes:
        """Text back to bytes in this file's own encoding conventions."""
        if self.newline == "mixed":
            raise PorterError(
                f"{self.path} mixes line endings (CRLF and LF)",
                file=self.path,
                construct="one line-ending style per file (porter writes a file back in its own style)",
                found="both \\r\\n and \\n line endings",
                fix=f"convert {self.path} to one style (e.g. dos2unix {self.path}), then run porter again",
            )
        if self.newline != "\n":
            text = text.replace("\n", self.newline)
        data = text.encode("utf-8")
        return (b"\xef\xbb\xbf" + data) if self.bom else data


def decode(path: str, raw: bytes) -> SourceFile:
    bom = raw.startswith(b"\xef\xbb\xbf")
    body = raw[3:] if bom else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PorterError(
            f"{path} is not UTF-8 text",
            file=path,
            construct="a UTF-8 Python source file",
            found=str(exc),
            fix=f"convert {path} to UTF-8, then run porter again",
        ) from exc
    crlf = text.count("\r\n")
    newline = "\n"
    if crlf or "\r" in text:
        newline = "\r\n" if crlf == text.count("\n") == text.count("\r") else "mixed"
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return SourceFile(path=path, raw=raw, text=text, newline=newline, bom=bom)


class SourceTree:
    """Read access to the target tree. Files are read lazily, once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files: dict[str, SourceFile | None] = {}
        self._overlay: dict[str, bytes] = {}

    def with_changes(self, contents: dict[str, bytes]) -> SourceTree:
        """The tree as it would be with these files written (in memory; nothing touches the disk)."""
        tree = SourceTree(self.root)
        tree._overlay = {**self._overlay, **contents}
        tree._files = {path: found for path, found in self._files.items() if path not in contents}
        tree._files.update({path: decode(path, raw) for path, raw in contents.items()})
        return tree

    @classmethod
    def open(cls, target: str | Path) -> SourceTree:
        root = Path(target)
        if not root.exists():
            raise PorterError(
                f"target {root} does not exist",
                file=str(root),
                construct="the root folder of a Megatron-DeepSpeed tree (it holds megatron/)",
                found="nothing at that path",
                fix="pass --target the path of your Megatron-DeepSpeed checkout",
            )
        if not root.is_dir():
            raise PorterError(
                f"target {root} is not a directory",
                file=str(root),
                construct="the root folder of a Megatron-DeepSpeed tree (it holds megatron/)",
                found="a file",
                fix="pass --target the root folder of a Megatron-DeepSpeed checkout",
            )
        missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
        if missing:
            raise PorterError(
                f"{root} is not a Megatron-DeepSpeed tree",
                file=str(root),
                construct="the files " + ", ".join(REQUIRED_FILES),
                found="missing: " + ", ".join(missing),
                fix="point --target at the folder that holds megatron/ and pretrain_gpt.py "
                "(for Habana's Model-References: PyTorch/nlp/DeepSpeedExamples/Megatron-DeepSpeed)",
            )
        return cls(root)

    def exists(self, path: str) -> bool:
        return path in self._overlay or (self.root / path).is_file()

    def get(self, path: str) -> SourceFile | None:
        if path not in self._files:
            full = self.root / path
            if not full.is_file():
                self._files[path] = None
            else:
                try:
                    raw = full.read_bytes()
                except OSError as exc:
                    raise PorterError(
                        f"cannot read {path}: {exc.strerror}",
                        file=path,
                        construct="a readable source file",
                        found=str(exc),
                        fix=f"make {path} readable, then run porter again",
                    ) from exc
                self._files[path] = decode(path, raw)
        return self._files[path]

    def file(self, path: str) -> SourceFile:
        found = self.get(path)
        if found is None:
            raise PorterError(
                f"{path} is missing from the tree",
                file=path,
                construct=f"the file {path}, which the port edits",
                found="no such file",
                fix="this tree lacks a file the port edits; check --target",
            )
        return found

    def list(self, folder: str, suffix: str = ".py") -> list[str]:
        base = self.root / folder
        found = set()
        if base.is_dir():
            found = {str(p.relative_to(self.root)).replace("\\", "/") for p in base.glob(f"*{suffix}") if p.is_file()}
        prefix = f"{folder}/" if folder else ""
        found |= {
            p for p in self._overlay if p.startswith(prefix) and "/" not in p[len(prefix):] and p.endswith(suffix)
        }
        return sorted(found)

    def parsed(self) -> list[str]:
        """The files parsed so far, in the order they were first read."""
        return [path for path, source in self._files.items() if source is not None and source._module is not None]
