"""Before/after tests of the rewrites that give a tree's own gated MLP GeGLU in its idiom (a choice
of its option, an entry of its dict of GLU functions), the detector of such a dict, and porter's
functions for each layout."""

from functools import partial

import libcst as cst
import torch
import torch.nn.functional as F

from porter.checks import scope_violations
from porter.differences.gated_mlp import registry
from porter.differences.gated_mlp import rewrites as R
from porter.render import environment

MLP = '''
class ParallelMLP(MegatronModule):
    def __init__(self, init_method):
        args = get_args()
        self.gated = args.mlp_act == 'swiglu'
        self.fc_in = mpu.ColumnParallelLinear(args.hidden_size, args.ffn_hidden_size)
        if self.gated:
            self.fc_up = mpu.ColumnParallelLinear(args.hidden_size, args.ffn_hidden_size)
            self.activation_func = F.silu
        else:
            self.activation_func = F.gelu
'''


def test_the_trees_gated_test_takes_the_new_choice_too(check):
    check(partial(R.WidenGatedTest, cls="ParallelMLP", test="args.mlp_act == 'swiglu'",
                  widened="args.mlp_act in ('swiglu', 'geglu_tanh')"),
          MLP, MLP.replace("self.gated = args.mlp_act == 'swiglu'", "self.gated = args.mlp_act in ('swiglu', 'geglu_tanh')"))


def test_an_mlp_without_the_trees_test_is_refused(refuses):
    error = refuses(partial(R.WidenGatedTest, cls="ParallelMLP", test="args.mlp_act == 'swiglu'",
                            widened="args.mlp_act in ('swiglu', 'geglu_tanh')"),
                    MLP.replace("args.mlp_act == 'swiglu'", "args.gated"))
    assert "args.mlp_act == 'swiglu'" in str(error)


TABLE = '''
import torch
from torch.nn import functional as F


def _halves(fn):
    def glu(x):
        a, b = x.chunk(2, dim=-1)
        return a * fn(b)
    return glu


TABLE = {
    "swiglu": _halves(F.silu),
    "reglu": _halves(F.relu),
}
OTHER = {"a": 1}
'''


def _entry(source: str) -> tuple[str, list[str]]:
    before = cst.parse_module(source)
    rewrite = R.AddRegistryEntry(name="TABLE", key="geglu_tanh", value="geglu_gate_second")
    after = rewrite.apply(before, "acts.py")
    return after.code, scope_violations(before, after, rewrite.scope())


def test_a_dict_of_glu_functions_gets_an_entry_laid_out_as_the_others():
    text, outside = _entry(TABLE)
    assert text == TABLE.replace('''    "reglu": _halves(F.relu),
}''', '''    "reglu": _halves(F.relu),
    "geglu_tanh": geglu_gate_second,
}''')
    assert outside == []
    assert _entry(text)[0] == text  # idempotent
    one_line = TABLE.replace('''{
    "swiglu": _halves(F.silu),
    "reglu": _halves(F.relu),
}''', "{'swiglu': _halves(F.silu), 'reglu': _halves(F.relu)}")
    assert "{'swiglu': _halves(F.silu), 'reglu': _halves(F.relu), 'geglu_tanh': geglu_gate_second}" in _entry(one_line)[0]


def test_the_entrys_scope_is_that_assignment_only():
    before = cst.parse_module(TABLE)
    after = cst.parse_module(TABLE.replace('OTHER = {"a": 1}', 'OTHER = {"a": 2}'))
    assert scope_violations(before, after, ("assignment", "TABLE")) == ["SimpleStatementLine"]


def _parsed(files: dict[str, str]):
    return lambda path: cst.parse_module(files[path]) if path in files else None


def test_choices_read_from_a_dict_are_found_with_its_module():
    arguments = '''
import megatron


def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--mlp-glu', type=str, choices=megatron.model.acts.TABLE.keys())
    group.add_argument('--mlp-act', type=str, choices=['gelu', 'swiglu'])
    return parser
'''
    found = registry.detect(_parsed({"megatron/arguments.py": arguments, "megatron/model/acts.py": TABLE}))
    assert found == {"--mlp-glu": registry.Registry("megatron/model/acts.py", "TABLE", ("swiglu", "reglu"))}
    imported = arguments.replace("import megatron\n", "from megatron.model.acts import TABLE\n").replace(
        "megatron.model.acts.TABLE.keys()", "list(TABLE)")
    assert registry.detect(_parsed({"megatron/arguments.py": imported, "megatron/model/acts.py": TABLE}))["--mlp-glu"].name == "TABLE"
    assert registry.detect(_parsed({"megatron/arguments.py": arguments})) == {}  # no such module: none


def test_porters_functions_for_each_layout():
    namespace = {}
    exec(environment().get_template("swiglu.py.j2").render(), namespace)  # noqa: S102
    x = torch.randn(3, 8)
    first, second = x.chunk(2, dim=-1)
    assert torch.equal(namespace["geglu"](x), F.gelu(first, approximate="tanh") * second)
    assert torch.equal(namespace["geglu_gate_second"](x), first * F.gelu(second, approximate="tanh"))
    assert torch.equal(namespace["gelu_tanh"](x), F.gelu(x, approximate="tanh"))
