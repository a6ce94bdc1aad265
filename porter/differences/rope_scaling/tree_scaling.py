"""Frequency scaling on the tree's own rotary embedding (two shapes: microsoft's and EleutherAI's).

The first shape porter knows: a RotaryEmbedding whose `__init__(self, dim, ...)` raises one base to a
power, whose `forward` builds its positions as `torch.arange(length, ...) (+ offset)` and returns
angles, and module-level functions of the same file that compute the angles' cos and sin (its
apply_rotary_pos_emb). porter then adds megatron/model/rope_scaling.py (the switches' reader and
the scaled frequencies, rope_scaling.py.j2) and three rewrites (tree_rewrites.py): the class
keeps the scaled frequencies beside its own, its forward takes those of the sequence's length,
the apply function scales cos and sin by the attention factor; every call that builds the class
(found as tree_base.py finds them) passes `scaling=rope_scaling_of(args)`. With the switches off
the class computes what it did (its own frequencies, cos and sin times 1).

EleutherAI's class (Habana 7086aadb, BigScience) computes cos and sin itself, of a table its
forward caches for the longest sequence seen (`if ... (length > self.<cached>):`): the table is
built from the frequencies of the sequence's length and rebuilt when they change, and its cos and
sin are scaled there. Any other shape is refused: `problem` says what was found.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import add_kwarg, dotted, expression, kwarg
from porter.differences.rope_scaling import tree_rewrites as TR
from porter.differences.rotary.detect import ROTARY_CLASS
from porter.differences.rotary.tree_base import SITE_FILES, Site, SiteFinder, tree_rotary
from porter.edits.calls import AddKeyword
from porter.errors import PorterError
from porter.planner import rw

KEYWORD = "scaling"
VALUE = "rope_scaling_of(args)"
MODULE = "megatron/model/rope_scaling.py"
IMPORT_READER = "from megatron.model.rope_scaling import rope_scaling_of"
IMPORT_HELPERS = "from megatron.model.rope_scaling import attention_scaling, frequencies_for, scaled_frequencies, tag_angles"


@dataclass(frozen=True)
class TreeScaling:
    file: str  # the module defining the tree's RotaryEmbedding
    applies: tuple[str, ...]  # its module-level functions computing cos and sin of the angles
    sites: tuple[Site, ...]  # the functions that build the class
    problem: str | None = None  # a shape porter does not know (the plan refuses, saying this)
    cached: bool = False  # the class's forward computes cos and sin of a table it caches (EleutherAI's)


def _method(cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
    return next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == name), None)


def _trig(func: cst.FunctionDef) -> int:
    return sum(isinstance(c.func, cst.Attribute) and c.func.attr.value in ("cos", "sin") and not c.args
               for c in findall(func, m.Call()))


def tree_scaling(parsed) -> TreeScaling | None:
    """The tree's own RotaryEmbedding as scaling needs it, or None where there is no such class."""
    found = tree_rotary(parsed)
    if found is None:
        return None
    path, module, cls = found
    init, forward = _method(cls, "__init__"), _method(cls, "forward")
    problems, cached = [], False
    applies = tuple(s.name.value for s in module.body if isinstance(s, cst.FunctionDef) and _trig(s) >= 2)
    if init is None or forward is None:
        problems.append(f"{ROTARY_CLASS} has no " + " and no ".join(n for n, f in (("__init__", init),
                                                                                   ("forward", forward)) if f is None))
    elif any(TR.cache_if(s) is not None for s in forward.body.body):  # a table the forward caches (EleutherAI's)
        cached = True
        if _trig(forward) < 2:
            problems.append(f"{ROTARY_CLASS}.forward caches a table but computes no cos and sin of it")
    elif not any(TR.positions_length(s) is not None for s in forward.body.body):
        problems.append(f"{ROTARY_CLASS}.forward builds no positions as `x = torch.arange(length, ...)` (nor "
                        "caches a table under `if ... (length > self.<cached length>):`)")
    elif not applies:
        problems.append("no function of the module computes cos and sin of the angles")
    sites = []
    for file in dict.fromkeys((*SITE_FILES, path)):
        source = parsed(file)
        if source is None:
            continue
        finder = SiteFinder(file, KEYWORD, positional=None)  # `scaling` goes last, by keyword
        source.visit(finder)
        sites += finder.sites
        problems += finder.problems
    problem = "; ".join(problems) or None  # the class's own problems are in `file`; a builder's name its file
    return TreeScaling(path, () if cached else applies, tuple(sites), problem, cached)


class _PassScaling(cst.CSTTransformer):
    def leave_Call(self, original, updated):
        if (dotted(updated.func) or "").rsplit(".", 1)[-1] != ROTARY_CLASS or kwarg(updated, KEYWORD) is not None:
            return updated
        return add_kwarg(updated, KEYWORD, expression(VALUE))


def pass_scaling(text: str) -> str:
    """Statements of the tree copied into the generated entry point (the pipe's rotary table) with
    the scaling passed to every call of the class (the copy imports the reader: entry_imports)."""
    return cst.parse_module(text).visit(_PassScaling()).code


def plan(p, found: TreeScaling | None, kind: str) -> None:
    """The class, its forward and its apply functions scaled as the switches say, and every call
    that builds it passing them; refused where the shape is unknown."""
    if found is None or found.problem is not None:
        raise PorterError(
            f"the tree's own rotary embedding has no frequency scaling, and porter cannot give it {kind!r}",
            file=found.file if found is not None else "megatron/model/transformer.py",
            construct=f"a {ROTARY_CLASS} whose __init__(self, dim, ...) raises one base to a power, whose forward "
                      "builds `torch.arange(length, ...) (+ offset)` positions and returns angles, and a function of "
                      "its module computing their cos and sin (apply_rotary_pos_emb), or EleutherAI's caching its "
                      "cos and sin table; built inside functions",
            found=found.problem if found is not None else f"no {ROTARY_CLASS} class imported by the language model",
            fix="port the rotary embedding's scaling by hand, or use position_embedding.rope_scaling.type = 'none'",
        )
    p.create(MODULE, "rope_scaling", "the rotary frequency scaling of the tree's own rotary embedding",
             "rope_scaling.py.j2")
    p.import_into(found.file, "rope_scaling", IMPORT_HELPERS, "imports the scaled frequencies and their factor")
    p.edit(found.file, "rope_scaling", f"{ROTARY_CLASS}.__init__ takes `{KEYWORD}` and keeps the scaled frequencies "
           "beside its own", rw(TR.ScaledRotaryInit, cls=ROTARY_CLASS, keyword=KEYWORD))
    if found.cached:
        p.edit(found.file, "rope_scaling", f"{ROTARY_CLASS}.forward builds its cached table from the frequencies of "
               "the sequence's length, and again when they change (longrope: the long ones past the original context)",
               rw(TR.CachedFrequenciesByLength, cls=ROTARY_CLASS))
        p.edit(found.file, "rope_scaling", f"{ROTARY_CLASS}.forward scales its cos and sin by the attention factor "
               "(1 without scaling)", rw(TR.ScaledCosSin, cls=ROTARY_CLASS, func="forward"))
    else:
        p.edit(found.file, "rope_scaling", f"{ROTARY_CLASS}.forward turns by the frequencies of the sequence's "
               "length (longrope: the long ones past the original context)", rw(TR.FrequenciesByLength, cls=ROTARY_CLASS))
    for func in found.applies:
        p.edit(found.file, "rope_scaling", f"{func} scales cos and sin by the attention factor (1 without scaling)",
               rw(TR.ScaledCosSin, func=func))
    for site in found.sites:
        where = f"{site.cls}.{site.func}" if site.cls else site.func
        p.import_into(site.file, "rope_scaling", IMPORT_READER, "imports the rotary scaling switches' reader")
        p.edit(site.file, "rope_scaling", f"{where} builds the rotary embedding with the scaling switches",
               rw(AddKeyword, cls=site.cls, func=site.func, callee=ROTARY_CLASS, keyword=KEYWORD, value=VALUE))
    p.entry_code.append(pass_scaling)
    p.entry_imports.append(IMPORT_READER)
