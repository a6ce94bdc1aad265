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
from porter.patch import file_patch, file_stat, patch  # noqa: F401  (patch: the whole port's)
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

    def unified_diff(self, context: int = 3) -> str:
        """This file's part of the patch, byte-faithful (see porter.patch)."""
        return file_patch(self, context)

    def counts(self) -> tuple[int, int]:
        """Lines added and removed, as the patch counts them."""
        stat = file_stat(self)
        return stat.added, stat.removed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Codegen:
    """`module.code`, regenerating only the top-level statements an edit replaced.

    A rewrite leaves every statement it does not descend into as the same object, so the
    text of those is kept from the last time (keyed by identity). The result is exactly
    `module.code` (tests/robustness/test_checks.py compares them).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[cst.CSTNode, str]] = {}

    def _of(self, module: cst.Module, node: cst.CSTNode) -> str:
        hit = self._cache.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        text = module.code_for_node(node)
        self._cache[id(node)] = (node, text)
        return text

    def code(self, module: cst.Module) -> str:
        parts = [module.code_for_node(h) for h in module.header]
        parts += [self._of(module, stmt) for stmt in module.body]
        parts += [module.code_for_node(f) for f in module.footer]
        text = "".join(parts)
        if module.has_trailing_newline:
            return text or module.default_newline
        return text[: -len(module.default_newline)] if text.endswith(module.default_newline) else text


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
                raise PorterError(
                    f"{path} is missing from the tree",
                    file=path,
                    construct=f"the file {path}, which the port edits",
                    found="no such file",
                    fix="this tree lacks a file the port edits; check --target",
                )
            module = before.module
            codegen = Codegen()
            text = codegen.code(module)
            tags = [None] * len(text.splitlines())
            for edit in edits:
                rewrite = edit.rewrite()
                edited = rewrite.apply(module, path)
                check_scope(path, module, edited, _scope(rewrite), f"{edit.feature}: {edit.name}")
                module = edited
                new_text = codegen.code(module)
                if new_text != text:
                    tags = _retag(text.splitlines(), new_text.splitlines(), tags, f"{edit.feature}: {edit.name}")
                    text = new_text
        if before is not None and text == before.text:
            return None
        after = before.encode(text) if before is not None else text.encode("utf-8")
        check_compiles(path, text)
        check_names(path, before.text if before is not None and not creates else None, text)
        return FileChange(path=path, before=before, text=text, after=after, provenance=tags, edits=edits)


def _scope(rewrite) -> tuple:
    """Where a rewrite may change code (see porter.checks)."""
    if isinstance(rewrite, Rewrite):
        return ("function", rewrite.cls, rewrite.func)
    if isinstance(rewrite, ModuleRewrite):
        return ("imports",)
    raise TypeError(f"{type(rewrite).__name__} is neither a Rewrite nor a ModuleRewrite")

