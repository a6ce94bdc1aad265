"""The base (theta) of the tree's own rotary embedding, where the tree has no option for it.

Two shapes are known. A RotaryEmbedding whose `__init__` takes the base as a parameter with a
number default (EleutherAI's `base=10000`, as Habana and BigScience have it), built by its
callers without it; and one that raises a number literal to the frequencies' exponent
(`inv_freq = 1.0 / (10000 ** (...))`, microsoft mid-2023), which porter gives a `theta`
parameter with that number as default (the spelling microsoft took later). Every call that
builds the class (the language model or attention, the pipe's table in megatron/utils.py or
pretrain_gpt.py) then passes the option's value by that keyword. A call that already passes
a second positional argument, a base parameter porter cannot tell, or a base raised in more
than one place is a shape porter does not know: `problem` says which, and the plan refuses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, dotted
from porter.differences.rotary import base_rewrites as BR
from porter.differences.rotary.detect import ROTARY_CLASS, module_path
from porter.edits.calls import AddKeyword
from porter.errors import PorterError
from porter.planner import rw
from porter.profile import TRANSFORMER

THETA = "theta"  # the parameter porter adds to a class with a hard-coded base
# where trees build their rotary embedding: the language model or attention, the GPT model,
# the pipe's table (megatron/utils.py, pretrain_gpt.py)
SITE_FILES = ("megatron/model/language_model.py", "megatron/model/transformer.py", "megatron/model/gpt_model.py",
              "megatron/utils.py", "pretrain_gpt.py")


@dataclass(frozen=True)
class Site:
    file: str
    cls: str | None  # None: a module-level function
    func: str


@dataclass(frozen=True)
class TreeBase:
    file: str  # the module defining the tree's RotaryEmbedding
    keyword: str  # the __init__ parameter holding the base (porter's `theta` where it adds one)
    literal: str | None  # the hard-coded base porter turns into the parameter's default; None: a parameter already
    default: str  # the base the class uses when given none (the literal, or the parameter's default)
    sites: tuple[Site, ...]  # the functions that build the class without a base
    problem: str | None = None  # a shape porter does not know (the plan refuses, saying this)


def _powers(func: cst.FunctionDef) -> list[cst.BinaryOperation]:
    return findall(func.body, m.BinaryOperation(operator=m.Power()))


def _base(init: cst.FunctionDef) -> tuple[str, str | None, str, str | None]:
    """(keyword, literal, default, problem) of RotaryEmbedding.__init__."""
    params = [p for p in init.params.params if p.name.value != "self"]
    raised = {code(p.left) for p in _powers(init)}
    named = [p for p in params if p.default is not None and p.name.value in raised]
    literals = [p.left for p in _powers(init) if isinstance(p.left, (cst.Integer, cst.Float))]
    if len(named) == 1 and not literals and isinstance(named[0].default, (cst.Integer, cst.Float)):
        return named[0].name.value, None, code(named[0].default), None
    if not named and len(literals) == 1:
        if any(p.name.value == THETA for p in (*params, *init.params.kwonly_params)):
            return THETA, None, "", f"__init__ has a `{THETA}` parameter and still raises {code(literals[0])}"
        return THETA, code(literals[0]), code(literals[0]), None
    return THETA, None, "", (f"__init__ raises {len(literals)} number literal(s) and {len(named)} parameter(s) "
                             "with a number default to a power (porter knows one base: a parameter or a literal)")


class SiteFinder(cst.CSTVisitor):
    """The functions holding calls of the class (a top-level class's method, or a top-level
    function: what a rewrite anchors on), and the calls porter cannot extend."""

    def __init__(self, path: str, keyword: str, positional: int | None = 1) -> None:
        # positional: how many arguments a call may pass by position (None: any), the keyword
        # following them (the base: the head size alone, else porter cannot tell it was passed)
        self.path, self.keyword, self.positional = path, keyword, positional
        self.scopes: list[tuple[str, str]] = []  # ("class" | "def", name), outermost first
        self.sites: list[Site] = []
        self.problems: list[str] = []

    def visit_ClassDef(self, node):
        self.scopes.append(("class", node.name.value))

    def leave_ClassDef(self, node):
        self.scopes.pop()

    def visit_FunctionDef(self, node):
        self.scopes.append(("def", node.name.value))

    def leave_FunctionDef(self, node):
        self.scopes.pop()

    def visit_Call(self, node):
        if (dotted(node.func) or "").rsplit(".", 1)[-1] != ROTARY_CLASS:
            return
        where = f"{self.path}: {code(node)}"
        if any(a.keyword is not None and a.keyword.value == self.keyword for a in node.args):
            return  # already passes the base by its keyword
        if any(a.star for a in node.args) or (self.positional is not None
                                              and sum(a.keyword is None for a in node.args) > self.positional):
            self.problems.append(f"{where} passes more than the head size by position" if self.positional == 1 else
                                 f"{where} passes arguments with * or **")
            return
        kinds = [kind for kind, _name in self.scopes]
        if kinds[:2] == ["class", "def"]:
            site = Site(self.path, self.scopes[0][1], self.scopes[1][1])
        elif kinds[:1] == ["def"]:
            site = Site(self.path, None, self.scopes[0][1])
        else:
            self.problems.append(f"{where} is not inside a function or method")
            return
        if site not in self.sites:
            self.sites.append(site)


def tree_rotary(parsed) -> tuple[str, cst.Module, cst.ClassDef] | None:
    """The module and class of the tree's own RotaryEmbedding, as the language model (else the
    attention) imports it, or None where the tree has no such class."""
    path = module_path(parsed("megatron/model/language_model.py")) or module_path(parsed("megatron/model/transformer.py"))
    module = parsed(path) if path else None
    cls = next((s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == ROTARY_CLASS),
               None) if module is not None else None
    return (path, module, cls) if cls is not None else None


def tree_base(parsed) -> TreeBase | None:
    """The tree's own RotaryEmbedding and its base, or None where there is no such class."""
    found = tree_rotary(parsed)
    if found is None:
        return None
    path, _, cls = found
    init = next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "__init__"), None)
    if init is None:
        return TreeBase(path, THETA, None, "", (), f"{path}: {ROTARY_CLASS} has no __init__")
    keyword, literal, default, problem = _base(init)
    if problem is not None:
        return TreeBase(path, keyword, None, default, (), f"{path}: {ROTARY_CLASS}.{problem}")
    problems, sites = [], []
    for file in dict.fromkeys((*SITE_FILES, path)):
        source = parsed(file)
        if source is None:
            continue
        finder = SiteFinder(file, keyword)
        source.visit(finder)
        sites += finder.sites
        problems += finder.problems
    return TreeBase(path, keyword, literal, default, tuple(sites), "; ".join(problems) or None)


def plan(p, base: TreeBase | None, theta: float) -> None:
    """The base option (porter's --rope-theta, or the one porter added earlier), the class taking
    the base, and every call that builds it passing the option; refused where the shape is unknown."""
    if base is None or base.problem is not None:
        raise PorterError(
            f"the tree's rotary embedding has no theta switch, and the spec asks for {theta:g}",
            file=base.file if base is not None else TRANSFORMER,
            construct=f"a --rope-theta style option of the tree's rotary embedding, or a {ROTARY_CLASS} whose "
                      "__init__ takes its base (`base=10000`) or raises one number (`10000 ** (...)`), built "
                      "inside functions with the head size alone",
            found=base.problem if base is not None else f"no {ROTARY_CLASS} class imported by the language model "
                                                        "or attention",
            fix="use position_embedding.rope_theta = 10000 in the spec, or add a theta switch by hand",
        )
    spelling = p.switch("rope_theta", on=theta, field="position_embedding.rope_theta")
    value = f"args.{spelling.dest}"
    if base.literal is not None:
        p.edit(base.file, "rope_theta", f"{ROTARY_CLASS}.__init__ takes its base as `{base.keyword}` (default "
               f"{base.literal}, the number it raised)",
               rw(BR.RotaryBaseParameter, cls=ROTARY_CLASS, name=base.keyword, literal=base.literal))
    for site in base.sites:
        where = f"{site.cls}.{site.func}" if site.cls else site.func
        p.edit(site.file, "rope_theta", f"{where} builds the rotary embedding with the base option ({spelling.option})",
               rw(AddKeyword, cls=site.cls, func=site.func, callee=ROTARY_CLASS, keyword=base.keyword, value=value))
    p.entry_code.append(functools.partial(BR.pass_base, callee=ROTARY_CLASS, keyword=base.keyword, value=value))
