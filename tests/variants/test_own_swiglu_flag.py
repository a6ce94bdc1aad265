"""GeGLU beside a tree's own boolean `--swiglu` (microsoft's since NVIDIA's July 2023 rebase): porter adds
`--geglu` next to it, which turns the tree's gated MLP on and puts GELU (tanh) on its gate; the tree's
fused projection and weight layout are reused, not rewritten (issue 20, a gap met on microsoft HEAD).

Cheap here: apply once (shared), the tree's own ParallelMLP built in one subprocess (a few seconds),
re-apply and revert. `porter verify gemma` on the variant is slow (22 s on a quiet machine, 170 s on a busy one)."""

from __future__ import annotations

import json

import pytest

from porter import convert
from porter.catalog import load_spec
from porter.port import prepare
from porter.verify.parity import verify
from tests.variants.conftest import passed, python_in_tree, reapply_then_revert

GEMMA = load_spec("gemma")
TRANSFORMER = "megatron/model/transformer.py"

# The tree's ParallelMLP under pretrain_gemma.py's defaults, against act(x W_gate) * (x W_up) W_down
# computed here from its fused [gate; up] weight with three functions on the gate; then the same
# MLP built with --geglu off (the tree's own SwiGLU): the check tells the two apart. And the
# tree's parse_args given `--geglu` alone (pretrain_gpt.py): the tree's gated MLP comes on with it.
MLP_CHECK = """
    import json, sys
    sys.argv = ["pretrain_gemma.py", "--num-layers", "1", "--hidden-size", "64", "--num-attention-heads", "4",
                "--ffn-hidden-size", "96", "--seq-length", "8", "--micro-batch-size", "1",
                "--distributed-backend", "gloo"]
    import torch
    import torch.nn.functional as F
    import pretrain_gemma
    from megatron import get_args
    from megatron.arguments import parse_args
    from megatron.initialize import initialize_megatron
    from megatron.model.transformer import ParallelMLP

    initialize_megatron(extra_args_provider=pretrain_gemma.gemma_defaults)
    args = get_args()
    torch.manual_seed(0)
    x = torch.randn(8, 2, 64)

    def against(mlp):
        with torch.no_grad():
            out, _ = mlp(x)
            gate, up = (x @ w.t() for w in mlp.dense_h_to_4h.weight.chunk(2, dim=0))
            gated = {"gelu_tanh": F.gelu(gate, approximate="tanh") * up, "gelu_erf": F.gelu(gate) * up,
                     "silu": F.silu(gate) * up}
            return {k: (mlp.dense_4h_to_h(v)[0] - out).abs().max().item() for k, v in gated.items()}

    geglu = ParallelMLP(torch.nn.init.normal_, torch.nn.init.normal_)
    found = {"swiglu": args.swiglu, "geglu": args.geglu, "fused": list(geglu.dense_h_to_4h.weight.shape),
             "with_geglu": against(geglu)}
    args.geglu = False
    found["without_geglu"] = against(ParallelMLP(torch.nn.init.normal_, torch.nn.init.normal_))
    sys.argv = ["pretrain_gpt.py", "--num-layers", "1", "--hidden-size", "64", "--num-attention-heads", "4",
                "--seq-length", "8", "--max-position-embeddings", "8", "--micro-batch-size", "1", "--geglu"]
    alone = parse_args()
    found["geglu_alone"] = [alone.geglu, alone.swiglu]
    print("FOUND", json.dumps(found))
"""


def test_geglu_goes_beside_the_trees_swiglu(own_swiglu_gemma_tree):
    tree = own_swiglu_gemma_tree
    spellings = tree.port.profile.spellings
    assert (spellings["swiglu"].option, spellings["swiglu"].origin, spellings["swiglu"].implemented) == \
        ("--swiglu", "tree", True)
    # the tree's projection is not rewritten: its gated unit doubles it
    assert not [e for e in tree.port.plan.edits if e.file == TRANSFORMER and e.name == "FusedGateUp"]
    transformer = (tree.root / TRANSFORMER).read_text()
    assert "gate_and_up" not in transformer and "activation_func_type" not in transformer
    assert transformer.count("self.activation_func = geglu") == 1
    assert transformer.index("self.activation_func = silu_gated") < transformer.index("self.activation_func = geglu")
    arguments = (tree.root / "megatron/arguments.py").read_text()
    assert "'--activation-func-type'" not in arguments
    # --geglu registered as the tree registers --swiglu: a store_true switch in the same group, right after
    assert arguments.index("'--swiglu', action='store_true'") < arguments.index("'--geglu'") < \
        arguments.index("return parser", arguments.index("'--swiglu'"))
    assert "    if args.geglu:\n" in arguments and "        args.swiglu = True\n" in arguments
    entry = (tree.root / "pretrain_gemma.py").read_text()
    assert "swiglu=True," in entry and "geglu=True," in entry
    layout = convert.Port(GEMMA, tree.root).layout
    assert (layout.gate_first, layout.up, layout.activation) == (True, "", "geglu")


def test_the_trees_mlp_gates_with_gelu_tanh(own_swiglu_gemma_tree):
    out = python_in_tree(own_swiglu_gemma_tree.root, MLP_CHECK)
    found = json.loads(out.split("FOUND ", 1)[1].splitlines()[0])
    assert (found["swiglu"], found["geglu"], found["fused"]) == (True, True, [192, 64])
    assert found["with_geglu"]["gelu_tanh"] <= 1e-5, found
    assert found["with_geglu"]["gelu_erf"] > 1e-3 and found["with_geglu"]["silu"] > 1e-1, found
    # broken on purpose: without --geglu the tree's SwiGLU runs, and the check says so
    assert found["without_geglu"]["gelu_tanh"] > 1e-1 and found["without_geglu"]["silu"] <= 1e-5, found
    assert found["geglu_alone"] == [True, True]


def test_a_second_apply_plans_nothing(own_swiglu_gemma_tree):
    assert prepare(GEMMA, own_swiglu_gemma_tree.root).changes == []


def test_reapply_then_revert_is_byte_identical(own_swiglu_gemma_tree, tmp_path):
    reapply_then_revert(own_swiglu_gemma_tree, tmp_path, "gemma")


@pytest.mark.slow  # 20-170 s on 2 cores
def test_verify_passes(own_swiglu_gemma_tree, tmp_path):
    passed(verify(GEMMA, own_swiglu_gemma_tree.root, tmp_path), ["GemmaModel", "GemmaModelPipe"])
