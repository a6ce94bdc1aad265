"""GeGLU beside a tree's own gated MLP chosen by an option's value (issue 20): porter adds its choice
`geglu_tanh` in the tree's idiom and keeps the tree's projections and weight layout.

- Habana's hand port (`--activation-func-type {gelu,swiglu}`, a separate up projection): the choice
  joins the option's list, the tree's `== 'swiglu'` test of its gated MLP takes it too, and GELU's
  tanh approximation alone goes on the gate (the tree multiplies its up projection in).
- BigScience's gate-second GLU (`--glu-activation`, choices the keys of GLU_ACTIVATIONS, whose own
  `geglu` is the exact erf GELU): an entry `geglu_tanh` of that dict, porter's gate-second function.

Cheap here: the plans (no model runs). Verify, re-apply and revert of both are slow."""

from __future__ import annotations

import pytest

from porter import convert
from porter.catalog import load_spec
from porter.port import prepare
from porter.verify.parity import verify
from tests.variants.conftest import passed, reapply_then_revert
from tests.variants.variants import make_variant

GEMMA = load_spec("gemma")
TRANSFORMER = "megatron/model/transformer.py"
ARGUMENTS = "megatron/arguments.py"
GLU = "megatron/model/glu_activations.py"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """variant -> {path: text after the port} (the plan rendered, nothing written)."""
    out = {}
    for name in ("hand_port_separate_gate", "glu_gate_second"):
        port = prepare(GEMMA, make_variant(name, tmp_path_factory.mktemp(name) / "Megatron-DeepSpeed"))
        out[name] = {c.path: c.text for c in port.changes}
    return out


def test_a_separate_gate_takes_a_choice_of_the_trees_option(planned):
    files = planned["hand_port_separate_gate"]
    assert "choices=['gelu', 'swiglu', 'geglu_tanh']," in files[ARGUMENTS]
    assert "'--activation-func-type'" in files[ARGUMENTS] and files[ARGUMENTS].count("'--activation-func-type'") == 1
    transformer = files[TRANSFORMER]
    assert "self.use_swiglu = args.activation_func_type in ('swiglu', 'geglu_tanh')" in transformer
    assert "    if args.activation_func_type == 'geglu_tanh':\n            self.activation_func = gelu_tanh\n" in transformer
    assert "gate_and_up" not in transformer  # the tree's two projections stay
    assert "activation_func_type='geglu_tanh'," in files["pretrain_gemma.py"]


def test_a_gate_second_glu_gets_an_entry_of_its_dict(planned):
    files = planned["glu_gate_second"]
    assert '    "geglu": _gated(F.gelu),' in files[GLU]  # the tree's own (erf) geglu stays as it is
    assert '    "geglu_tanh": geglu_gate_second,\n}' in files[GLU]
    assert "from megatron.model.swiglu import geglu_gate_second" in files[GLU]
    assert "glu_activation='geglu_tanh'," in files["pretrain_gemma.py"]
    assert "gate_and_up" not in files[TRANSFORMER] and "geglu" not in files[TRANSFORMER]


@pytest.mark.slow  # ~15 s each on a quiet machine
@pytest.mark.parametrize("which", ["separate_gate_gemma_tree", "gate_second_gemma_tree"])
def test_verify_passes_and_reapply_then_revert(which, request, tmp_path):
    tree = request.getfixturevalue(which)
    layout = convert.Port(GEMMA, tree.root).layout
    assert layout.activation == "geglu"
    assert (layout.up, layout.gate_first) == (("dense_h_to_4h_swiglu", True) if which == "separate_gate_gemma_tree"
                                              else ("", False))
    passed(verify(GEMMA, tree.root, tmp_path / "verify"), ["GemmaModel", "GemmaModelPipe"])
    reapply_then_revert(tree, tmp_path, "gemma")
