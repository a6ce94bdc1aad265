"""The shortcuts porter takes for speed give exactly what the slow ways give.

- porter.cst.find.findall with porter.cst.match's matchers finds what libcst.matchers.findall finds
  with libcst's;
- the workspace's per-statement text is exactly `module.code`, and its line provenance is
  what a whole-file retag gives;
- a rewrite with nothing to do hands every top-level statement back as the same object (so
  the workspace prints nothing again), and one that does something changes only its anchor.
"""

import libcst as cst
import libcst.matchers as m
import pytest

from porter.cst import match
from porter.cst.find import findall
from porter.differences.gated_mlp.rewrites import SetActivation
from porter.resources import sample_tree_dir
from porter.workspace import _EditedModule, _retag

# Each pattern written once, built with porter.cst.match and with libcst.matchers.
PATTERNS = [
    lambda m: m.Assign(),
    lambda m: m.Name() | m.Attribute(),
    lambda m: m.Call(func=m.Attribute(attr=m.Name("add_argument"))),
    lambda m: m.IfExp(test=m.Comparison(left=m.Name("bias"))),
    lambda m: m.BinaryOperation(operator=m.Add()),
    lambda m: m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call()),
    lambda m: m.For(iter=m.Name("defaults")),
    lambda m: m.Call(args=[m.Arg(value=m.SimpleString()), m.ZeroOrMore()]),
    lambda m: m.Call(args=[m.ZeroOrMore(), m.Arg(keyword=m.Name("default")), m.ZeroOrMore()]),
    lambda m: m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()]),
    lambda m: m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("args")))])]),
    lambda m: m.Comparison(comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))]),
    lambda m: m.Attribute(value=m.Name(), attr=m.Name("size")),
    lambda m: m.Arg(value=m.DoNotCare(), keyword=m.Name("help")),
]

SOURCES = sorted(sample_tree_dir().rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES[::3], ids=lambda p: p.name)
def test_findall_finds_what_libcst_finds(path):
    module = cst.parse_module(path.read_text())
    # the module first (its index then answers for every subtree), then each statement
    for node in [module, *module.body, *(s.body for s in module.body if isinstance(s, cst.ClassDef))]:
        for pattern in PATTERNS:
            ours, theirs = findall(node, pattern(match)), m.findall(node, pattern(m))
            assert [id(n) for n in ours] == [id(n) for n in theirs] or (
                len(ours) == len(theirs) and {id(n) for n in ours} == {id(n) for n in theirs}
            )


@pytest.mark.parametrize(
    "source",
    [
        "# header comment\n\nimport os\n\n\ndef f():\n    return 1\n# footer\n",
        "x = 1\ny = 2",  # no final newline
        "\n\n",
        "",
        "class A:\n    pass\n\n\n\n",
    ],
)
def test_statement_text_is_module_code(source):
    module = cst.parse_module(source)
    assert _EditedModule(module).text == module.code


def test_provenance_is_a_whole_file_retag():
    before = cst.parse_module("import os\n\n\ndef f():\n    a = 1\n    return a\n\n\ndef g():\n    return 2\n")
    edited = _EditedModule(before)
    f = before.body[1]
    new_f = f.with_changes(body=f.body.with_changes(body=[cst.parse_statement("b = 0\n"), *f.body.body]))
    after = before.with_changes(body=[before.body[0], new_f, before.body[2], cst.parse_statement("z = 3\n")])
    edited.update(after, "edit")
    assert edited.text == after.code
    whole = _retag(before.code.splitlines(), after.code.splitlines(), [None] * len(before.code.splitlines()), "edit")
    assert edited.tags == whole
    assert edited.tags.count("edit") == 2


TRY_AND_CLASS = """\
try:
    from apex import FusedNorm
except ImportError:
    FusedNorm = None


class MLP:
    size = 4

    def __init__(self):
        args = get_args()
        self.activation_func = gelu

    def forward(self, x):
        return x
"""


def test_a_rewrite_with_nothing_to_do_hands_back_the_same_statements():
    module = cst.parse_module(TRY_AND_CLASS)
    done = SetActivation("MLP", "args.swiglu", "swiglu")
    once = done.apply(module, "t.py")
    assert done._hits == 1
    assert once.body[0] is module.body[0]  # the try: block, untouched
    assert once.body[1] is not module.body[1] and once.code != module.code

    again = SetActivation("MLP", "args.swiglu", "swiglu")
    twice = again.apply(once, "t.py")
    assert again._done == 1
    assert all(a is b for a, b in zip(twice.body, once.body, strict=True))
    edited = _EditedModule(once)
    edited.update(twice, "again")
    assert not edited.changed


def test_match_means_what_libcst_matchers_mean():
    stmt = cst.parse_statement("parser.add_argument('--x', type=int, default=None)\n")
    call = stmt.body[0].value
    for pattern in PATTERNS[7:9] + [lambda m: m.Call(args=[m.Arg(), m.Arg()]), lambda m: m.Call(args=[m.ZeroOrMore()])]:
        assert match.matches(call, pattern(match)) == m.matches(call, pattern(m))
    with pytest.raises(TypeError):
        match.Name(nonesuch="x")
