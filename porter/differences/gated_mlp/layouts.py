"""How a tree's gated MLP lays out its gate and up projections (its spelling's `layout`), and
which of porter's gated functions (megatron/model/swiglu.py) fits each, per activation."""

GATE_FIRST = "gate first: one fused [gate; up] projection, silu on the first half"
GATE_SECOND = "gate second: one fused [up; gate] projection, silu on the second half"
SEPARATE = "separate projections: silu on the first one's output, times the second's"

# activation -> layout -> porter's function for it: a fused function takes the whole projection
# and gates the half its layout says; with separate projections the tree multiplies by the up
# projection itself, and the function is the gate's activation alone.
FUNCTIONS = {
    "swiglu": {GATE_FIRST: "swiglu"},
    "geglu": {GATE_FIRST: "geglu", GATE_SECOND: "geglu_gate_second", SEPARATE: "gelu_tanh"},
}
