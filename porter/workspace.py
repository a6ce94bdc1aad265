"""Files rendered in memory from a plan, checked, then shown as a diff or written.

Nothing is written until every edit of every file has been applied in memory and checked:
each changed file compiles, and each remembers which edit produced each of its lines (for
`porter explain`). Writing is all-or-nothing (see porter.writer).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field

import libcst as cst

from porter.errors import PorterError
from porter.plan import Edit, Plan
from porter.render import GENERATED_MARK, render
from porter.source import SourceFile, SourceTree


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileChange:
    path: str
    before: SourceFile | None  # None: a new file
    text: str  # the new text ("\n" line endings)
    after: bytes  # the new bytes, in the file's own conventions
    provenance: list[str | None]  # per line of `text`: "feature: edit" or None (untouched)
    edits: list[Edit] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.before is None

    @property
    def before_text(self) -> str:
        return "" if self.before is None else self.before.text

    def unified_diff(self, context: int = 3) -> str:
        old = self.before_text.splitlines(keepends=True)
        new = self.text.splitlines(keepends=True)
        lines = list(
            difflib.unified_diff(
                old,
                new,
                fromfile="/dev/null" if self.created else f"a/{self.path}",
                tofile=f"b/{self.path}",
                n=context,
            )
        )
        if not lines:
            return ""
        head = f"diff --git a/{self.path} b/{self.path}\n"
        if self.created:
            head += "new file mode 100644\n"
        body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
        return head + body

    def counts(self) -> tuple[int, int]:
        added = removed = 0
        for line in self.unified_diff(context=0).splitlines():
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
        return added, removed


def _retag(old_lines: list[str], new_lines: list[str], old_tags: list[str | None], tag: str) -> list[str | None]:
    """Carry line tags across one edit: unchanged lines keep theirs, new lines get `tag`."""
    tags: list[str | None] = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            tags.extend(old_tags[i1:i2])
        else:
            tags.extend([tag] * (j2 - j1))
    return tags


@dataclass
class _Piece:
    """One top-level statement of a module being edited: its node, its text, its line tags."""

    node: cst.CSTNode
    text: str
    tags: list[str | None]


class _EditedModule:
    """A module's text and per-line provenance, kept up to date edit by edit.

    A rewrite rebuilds only the top-level statement it is anchored on and hands back every
    other statement as the same object, so only the statements an edit replaced are
    printed again and retagged; the rest keep their text and tags. The text is exactly
    `module.code`: the header, each statement, the footer, less a final newline the file
    does not have.
    """

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.pieces = [self._piece(node, None) for node in (*module.header, *module.body, *module.footer)]

    def _piece(self, node: cst.CSTNode, tag: str | None) -> _Piece:
        text = self.module.code_for_node(node)
        return _Piece(node, text, [tag] * len(text.splitlines()))

    def update(self, module: cst.Module, tag: str) -> None:
        nodes = (*module.header, *module.body, *module.footer)
        old = self.pieces
        matcher = difflib.SequenceMatcher(a=[id(p.node) for p in old], b=[id(n) for n in nodes], autojunk=False)
        pieces: list[_Piece] = []
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                pieces.extend(old[i1:i2])
                continue
            new = [self._piece(node, tag) for node in nodes[j1:j2]]
            if op == "replace":  # lines the edit left as they were keep their tags
                old_lines = [line for p in old[i1:i2] for line in p.text.splitlines()]
                old_tags = [t for p in old[i1:i2] for t in p.tags]
                tags = _retag(old_lines, [line for p in new for line in p.text.splitlines()], old_tags, tag)
                for piece in new:
                    piece.tags, tags = tags[: len(piece.tags)], tags[len(piece.tags) :]
            pieces.extend(new)
        self.module = module
        self.pieces = pieces

    @property
    def text(self) -> str:
        text = "".join(p.text for p in self.pieces)
        if not text:
            return self.module.default_newline if self.module.has_trailing_newline else ""
        if not self.module.has_trailing_newline and text.endswith(self.module.default_newline):
            text = text[: -len(self.module.default_newline)]
        return text

    @property
    def tags(self) -> list[str | None]:
        return [t for p in self.pieces for t in p.tags]


class Workspace:
    """The port, rendered in memory."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree

    def render(self, plan: Plan) -> list[FileChange]:
        """Every file the plan changes or creates, with its new content; unchanged files are left out."""
        changes: list[FileChange] = []
        for path in plan.files():
            edits = [e for e in plan.edits if e.file == path]
            change = self._render_file(path, edits, plan)
            if change is not None:
                changes.append(change)
        return changes

    def _render_file(self, path: str, edits: list[Edit], plan: Plan) -> FileChange | None:
        before = self.tree.get(path)
        creates = [e for e in edits if e.template]
        if creates:
            edit = creates[0]
            if before is not None and not before.text.startswith(GENERATED_MARK):
                raise PorterError(
                    f"{path} already exists and porter did not write it",
                    file=path,
                    construct=f"a free path for {edit.reason}",
                    found="a file without porter's generated header",
                    fix=f"move {path} aside (or delete it) and run porter again, or keep your own "
                    "and port by hand",
                )
            text = render(edit.template, plan.spec, edit.context)
            tags: list[str | None] = [f"{edit.feature}: {edit.name}"] * len(text.splitlines())
        else:
            if before is None:
                raise PorterError(f"{path} is missing from the tree", file=path, fix="check --target")
            module = before.module
            edited = _EditedModule(module)
            for edit in edits:
                module = edit.rewrite().apply(module, path)
                edited.update(module, f"{edit.feature}: {edit.name}")
            text, tags = edited.text, edited.tags
        if before is not None and text == before.text:
            return None
        after = before.encode(text) if before is not None else text.encode("utf-8")
        try:
            compile(text, path, "exec", dont_inherit=True)
        except SyntaxError as exc:  # a porter bug, never the user's: say so
            raise PorterError(
                f"internal error: porter produced code that does not compile in {path}: {exc}",
                file=path,
                fix="nothing was written; please report this with `porter diff --debug` output",
            ) from exc
        return FileChange(path=path, before=before, text=text, after=after, provenance=tags, edits=edits)


def patch(changes: list[FileChange]) -> str:
    return "".join(c.unified_diff() for c in changes)
