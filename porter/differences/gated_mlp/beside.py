"""Another gated activation beside a tree's own SwiGLU: the tree's gated MLP, another function on the gate.

A tree with its own gated MLP has everything GeGLU needs but the function on the gate: its
projection(s), its weight layout (gate first, gate second, or a separate up projection) and
its checkpoints. porter reuses all of that and adds a way to ask for GeGLU in the tree's own
idiom, by the kind of the tree's switch:

- a boolean switch (`--swiglu`, microsoft's since NVIDIA's July 2023 rebase): porter adds a
  switch of the same kind beside it (`--geglu`, in the group that registers `--swiglu`), which
  turns the tree's gated MLP on (`args.swiglu = True` where the tree checks its arguments) and,
  after the tree's choice of `self.activation_func`, puts porter's function there;
- an option of literal choices (Habana's `--activation-func-type {gelu,swiglu}`): porter adds
  its choice to the list, the tree's test of its gated choice in ParallelMLP.__init__ takes the
  new one too (`args.x in ('swiglu', 'geglu_tanh')`), and porter's function goes after the
  tree's choice;
- an option whose choices are the keys of a dict of gated functions that the MLP looks the
  choice up in (BigScience's `--glu-activation`, GLU_ACTIVATIONS): porter adds an entry.

porter's choice is named for what it computes (`geglu_tanh`): a tree's own `geglu` may be the
exact erf GELU (BigScience's is), which is not Gemma's. The function fits the tree's layout
(porter's swiglu.py: geglu gates the first half, geglu_gate_second the second, gelu_tanh is
the gate's activation alone where the tree multiplies its separate up projection in), so
conversion reads the tree's layout as for its SwiGLU. Anything else is refused by name.
"""

from __future__ import annotations

from porter.differences.gated_mlp import rewrites as R
from porter.edits import arguments as A
from porter.differences.gated_mlp.layouts import FUNCTIONS, GATE_FIRST
from porter.planner import rw, unsupported
from porter.profile import ARGUMENTS, TRANSFORMER
from porter.profile.features import NETWORK, Spelling

# activation.type -> porter's switch beside the tree's boolean --swiglu: (option, dest, what its help says)
BESIDE = {"geglu": ("--geglu", "geglu", "Use gated linear units and GELU (tanh approximation) activation instead "
                                        "of default gelu: the gated MLP of --swiglu, GELU on its gate.")}
# activation.type -> porter's choice added to a tree's option of choices
CHOICES = {"geglu": "geglu_tanh"}


def beside_spelling(activation: str, group: str = NETWORK) -> Spelling:
    """porter's store_true switch for `activation` beside a tree's own boolean SwiGLU switch."""
    option, dest, help_text = BESIDE[activation]
    return Spelling(activation, option, dest, True, f"args.{dest}", group,
                    (("action", "'store_true'"), ("help", repr(help_text))))


def _refuse(own: Spelling, activation: str, found: str):
    return unsupported(f"the tree has its own gated MLP ({own.option}), which porter does not extend to {activation}",
                       TRANSFORMER, f"a ParallelMLP porter can give {activation}: the tree's gated MLP behind a "
                       "boolean switch, an option of literal choices, or a dict of gated functions its choices "
                       "name", found)


def plan_beside(p, own: Spelling, activation: str, what: str) -> Spelling:
    """Plan `activation` as the tree's gated MLP with porter's function on the gate; -> its switch's spelling."""
    layout = own.layout or GATE_FIRST
    func = FUNCTIONS.get(activation, {}).get(layout)
    if func is None:
        raise _refuse(own, activation, f"the tree's {own.switch}, laid out {layout.split(':')[0]}: porter has no "
                                       f"{activation} function for that layout")
    registered = p.profile.arguments.by_option(own.option)
    registry = (p.facts("swiglu") or {}).get(own.option)
    p.switch("swiglu")  # the tree's gated MLP, on: its projection(s), its weight layout
    if own.on is True and activation in BESIDE:
        spelling = p.switch(activation, spelling=beside_spelling(activation, registered.function))
        turn_on = [f"    # {activation} is the gated MLP of {own.option} with another function on the gate",
                   f"    args.{own.dest} = True"]
    elif registered is not None and isinstance(own.on, str) and activation in CHOICES and (
            registered.choices is not None or registry is not None):
        value = CHOICES[activation]
        spelling = p.switch(activation, spelling=Spelling(activation, own.option, own.dest, value,
                                                          f"args.{own.dest} == {value!r}", registered.function,
                                                          origin="tree", layout=own.layout, weights=own.weights),
                            existing=True)
        turn_on = []
        widened = f"args.{own.dest} in ({own.on!r}, {value!r})"
        p.tests["swiglu"] = widened  # the tree's gated MLP is on for either choice
        if registry is not None:
            p.edit(registry.path, activation, f"{own.option} takes {value!r}, {func} ({what}) on the tree's gated MLP: "
                   f"an entry of {registry.name}, where the option's choices and the MLP's function come from",
                   rw(R.AddRegistryEntry, name=registry.name, key=value, value=func))
            p.import_into(registry.path, activation, f"from megatron.model.swiglu import {func}",
                          "imports the gated activation")
        else:
            p.edit(ARGUMENTS, activation, f"{own.option} takes {value!r} too",
                   rw(A.ExtendChoices, func=registered.function, option=own.option, value=value))
            p.edit(TRANSFORMER, activation, f"the tree's gated MLP comes on for {own.option} {value} too",
                   rw(R.WidenGatedTest, cls="ParallelMLP", test=own.test, widened=widened))
    elif own.on is True:
        raise _refuse(own, activation, f"the tree's boolean {own.switch}: porter has no switch of its own for "
                                       f"{activation} to put beside it")
    else:
        raise _refuse(own, activation, f"the tree's {own.switch}: an option whose choices are neither a literal list "
                                       "in arguments.py nor the keys of a module-level dict of gated functions")
    lines = [f"if {spelling.test}:"]
    for dest in ("openai_gelu", "onnx_safe"):
        if p.has_dest(dest):
            lines.append(f"    assert not args.{dest}, '--{dest.replace('_', '-')} cannot be combined with "
                         f"{spelling.switch}'")
    lines += turn_on
    if len(lines) > 1:
        p.checks.append("\n".join(lines))
    if registry is None or own.on is True:  # else the dict's entry is the function
        p.edit(TRANSFORMER, activation, f"the MLP uses {func} ({what}) on the tree's gated MLP when {spelling.switch}",
               rw(R.SetActivation, cls="ParallelMLP", test=spelling.test, func_name=func))
        p.import_into(TRANSFORMER, activation, f"from megatron.model.swiglu import {func}", "imports the gated activation")
    return spelling
