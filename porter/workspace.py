"""Files rendered in memory from a plan, checked, then shown as a diff or written.

Nothing is written until every edit of every file has been applied in memory and checked
(porter.checks): each changed file compiles, and each edit left the syntax tree unchanged outside
the function (or the imports) it is anchored on. Each file remembers which edit produced
each of its lines (for `porter explain`). That a second apply would change nothing is
checked over the whole port (porter.port); writing is all-or-nothing (porter.writer).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field

import libcst as cst

from porter.checks import check_compiles, check_names, check_scope
from porter.edits.base import ModuleRewrite, Rewrite
from porter.errors import PorterError
from porter.plan import Edit, Plan
from porter.render import GENERATED_MARK, render
from porter.source import SourceFile, SourceTree


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


class _Piece:
    """One top-level statement of a module being edited: its node and, once printed, its text
    and line tags (a statement no edit replaced is printed only when the file's text is asked
    for: a file no edit changes is never printed)."""

    def __init__(self, module: cst.Module, node: cst.CSTNode, tag: str | None) -> None:
        self.module, self.node, self.tag = module, node, tag
        self._text: str | None = None
        self._tags: list[str | None] | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.module.code_for_node(self.node)
        return self._text

    @property
    def tags(self) -> list[str | None]:
        if self._tags is None:
            self._tags = [self.tag] * len(self.text.splitlines())
        return self._tags

    @tags.setter
    def tags(self, tags: list[str | None]) -> None:
        self._tags = tags


class _EditedModule:
    """A module's text and per-line provenance, kept up to date edit by edit.

    A rewrite rebuilds only the top-level statement it is anchored on and hands back every
    other statement as the same object, so only the statements an edit replaced are
    printed again and retagged; the rest keep their text and tags. The text is exactly
    `module.code`: the header, each statement, the footer, less a final newline the file
    does not have. `changed` says whether any edit replaced a statement.
    """

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.changed = False
        self.pieces = [_Piece(module, node, None) for node in (*module.header, *module.body, *module.footer)]

    def update(self, module: cst.Module, tag: str) -> None:
        nodes = (*module.header, *module.body, *module.footer)
        old = self.pieces
        matcher = difflib.SequenceMatcher(a=[id(p.node) for p in old], b=[id(n) for n in nodes], autojunk=False)
        pieces: list[_Piece] = []
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                pieces.extend(old[i1:i2])
                continue
            self.changed = True
            new = [_Piece(module, node, tag) for node in nodes[j1:j2]]
            if op == "replace":  # lines the edit left as they were keep their tags
                old_lines = [line for p in old[i1:i2] for line in p.text.splitlines()]
                old_tags = [t for p in old[i1:i2] for t in p.tags]
                tags = _retag(old_lines, [line for p in new for line in p.text.splitlines()], old_tags, tag)
                for piece in new:
                    count = len(piece.tags)
                    piece.tags, tags = tags[:count], tags[count:]
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
            text = render(edit.template, plan, edit.context, edit.feature)
            tags: list[str | None] = [f"{edit.feature}: {edit.name}"] * len(text.splitlines())
        else:
            if before is None:
                before = self.tree.file(path)  # refuses: the tree lacks a file the port edits
            module = before.module
            edited = _EditedModule(module)
            for edit in edits:
                rewrite = edit.rewrite()
                result = rewrite.apply(module, path)
                check_scope(path, module, result, _scope(rewrite), f"{edit.feature}: {edit.name}")
                module = result
                edited.update(module, f"{edit.feature}: {edit.name}")
            if not edited.changed:  # every statement as parsed: the file's own text
                return None
            text, tags = edited.text, edited.tags
        if before is not None and text == before.text:
            return None
        after = before.encode(text) if before is not None else text.encode("utf-8")
        check_compiles(path, text)
        check_names(path, before.text if before is not None and not creates else None, text)
        return FileChange(path=path, before=before, text=text, after=after, provenance=tags, edits=edits)


def _scope(rewrite) -> tuple:
    """Where a rewrite may change code (see porter.checks)."""
    if isinstance(rewrite, Rewrite):
        return ("parameters" if rewrite.changes_parameters else "function", rewrite.cls, rewrite.func)
    if isinstance(rewrite, ModuleRewrite):
        return rewrite.scope()
    raise TypeError(f"{type(rewrite).__name__} is neither a Rewrite nor a ModuleRewrite")

