"""A difference from GPT as one unit: everything porter knows about it, in one class.

A `Difference` owns:
- `fields`: its slice of the spec schema (dotted names, e.g. "norm.type");
- `spellings`: how trees spell its switches (switch name -> spellings, porter's own first);
- `wanted(spec)`: whether the spec asks for it;
- `detect(parsed)`: what the tree has that it plans from (`profile.facts[name]`);
- `plan(planner)`: the edits it plans with their reasons, the switches it reuses or adds, the
  values it hands templates (planner.values[name]); `kept(planner)`: when not wanted, what an
  earlier port's use of it in a shared generated file needs kept;
- `from_hf(config)` / `to_hf(spec, config)`: its HF config.json field(s), both ways;
  `same_model(spec, values)`: an HF config's values spelling the spec's model another way;
- `layout(profile, spec, layout)`: its part of the weight layout verify and convert use;
- `weights(layer)`: its tensors in a transformer layer (HF <-> Megatron, tensor-parallel role);
- `probes(layer)`: what verify compares where it changes a transformer layer;
- `tiny(spec, tiny)` / `shrink_hf(read, out, layers, seq_length)`: its values in verify's tiny
  model, and in a user's config.json shrunk for verify;
- `validate(values, given, fail)`: combinations of its own fields that make no sense;
- `dropped(config)`: HF tensors the port leaves out, as transformers does.
Every method has a neutral default, so a difference says only what it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from porter.profile.features import Spelling
from porter.schema import Field

if TYPE_CHECKING:
    from porter.hf_config import HFConfig
    from porter.planner import Planner
    from porter.probe import LayerProbes
    from porter.spec import Spec
    from porter.weights import LayerWeights


class Difference:
    name: ClassVar[str] = ""
    fields: ClassVar[dict[str, Field]] = {}
    spellings: ClassVar[dict[str, tuple[Spelling, ...]]] = {}
    switch_fields: ClassVar[dict[str, str]] = {}  # a switch's spec field, when not the first field
    changes_model: ClassVar[bool] = True  # False: porter's own improvement or plain numbers
    hf_fields: ClassVar[tuple[str, ...]] = ()  # the config.json fields from_hf reads
    switchable: ClassVar[tuple[str, ...]] = ()  # fields the port's switch can set to any value (convert)
    pipeline_engine: ClassVar[bool] = True  # False: the generated <Prefix>ModelPipe cannot carry it
    # its switches that change the model's shape: a tree whose GPT model implements all the spec's
    # behind its own switches gets the "flags" port (porter.generated_model)
    model_switches: ClassVar[tuple[str, ...]] = ()
    # what it adds to the generated model (templates/model.py.j2) at a named slot: slot -> a template
    # of its package (slots: imports, save, load, pipe_init; logits: code that changes `logits`, this
    # rank's [b, s, vocab/p], where the plain and the pipe model hold them before the loss)
    model_slots: ClassVar[dict[str, str]] = {}
    # what it changes outside the tree only (HF's checkpoint layout), for `porter diff --stat`:
    # a difference that writes no line in the tree says so there
    converts_only: ClassVar[str] = ""
    # a function of the tree's process ("module:function", called with the model, the checkpoint's
    # tag folder and the tensor-parallel rank) giving this rank's tensors that the engine saves in
    # files of their own, keyed as the model names them (verify's structure check)
    apart_tensors: ClassVar[str | None] = None

    def wanted(self, spec: Spec) -> bool:
        return False

    def detect(self, parsed: Callable[[str], Any]) -> Any:
        """What the tree has that this difference plans from (its facts, in the profile as
        `profile.facts[name]`), read from `parsed(path)` (a parsed file, or None); None: nothing."""
        return None

    def plan(self, p: Planner) -> None:
        """Record this difference's edits in the planner (only called when wanted)."""

    def kept(self, p: Planner) -> None:
        """Asked of a difference the spec does not want: plan what keeps an earlier port's use of it
        working where this port rewrites a shared generated file whole (a template value that
        keeps code another family's port, already in the tree, calls); by default nothing."""

    def tree_model(self, p: Planner) -> None:
        """Where the tree's own GPT classes carry the port (the "flags" port), plan what they need for
        this difference (a repair of the tree's GPT model); by default nothing."""

    def tree_logits(self, p: Planner) -> bool:
        """Where the tree's own GPT classes carry the port (the "flags" port: porter's model template
        and its `logits` slot are not used), plan this difference's change of the logits in the
        tree's GPT model instead (its plain and its pipeline model); True when planned, False
        when it cannot (the port is refused). Asked only of a difference with a `logits` slot."""
        return False

    def validate(self, values: dict[str, Any], given: set[str], fail: Callable[..., Exception]) -> None:
        """Refuse combinations of this difference's fields: raise fail(field, found, fix)."""

    def from_hf(self, config: HFConfig) -> dict[str, Any]:
        """Spec field values read from an HF config.json (only the fields it carries)."""
        return {}

    def to_hf(self, spec: Spec, config: dict[str, Any]) -> None:
        """Add this difference's fields to an HF config dict built for the spec."""

    def same_model(self, spec: Spec, values: dict[str, Any]) -> bool:
        """Do its fields in `values` (an HF config's, from_hf) describe the spec's model, however
        spelled? (convert takes a config into a port: a bias per site said site by site is the
        same as one switch for all.) False: each field is compared as it is."""
        return False

    def layout(self, p: Any, spec: Spec) -> dict[str, Any]:
        """WeightLayout fields this difference decides, from the profile (p) and the spec."""
        return {}

    def weights(self, layer: LayerWeights) -> None:
        """Its tensors in a transformer layer, where it changes them: fill or replace a slot
        (porter.weights.LayerWeights): the HF names, the tree's key, the layout change, the
        tensor-parallel role."""

    def unset(self, spec: Spec, field: str) -> Any:
        """How the tree's command line says `field` (one of this difference's, which the port's
        entry point sets by default) when `spec` leaves it unset: a switchable field is turned
        off (0); None leaves it to the entry point's default (convert stamps a checkpoint's args
        with it)."""
        return 0 if field in self.switchable else None

    def expert_parallel_argv(self, switches: dict, size: int) -> list[str] | None:
        """The tree's options that shard this difference's experts over `size` ranks (verify,
        smoke); None: it has no experts."""
        return None

    def dropped(self, config: dict) -> dict[str, str]:
        """HF tensors of a model's checkpoint that the port leaves out, as transformers does: name
        prefix -> why (convert says what it dropped). Asked of every difference a spec was read
        with, wanted or not: a checkpoint can hold what no spec field describes."""
        return {}

    def without_dropped(self, config: dict) -> dict[str, Any]:
        """The config.json fields that say the tensors `dropped` names are gone (the source file
        a converted checkpoint keeps, and writes back, describes the weights it holds)."""
        return {}

    def check_checkpoint(self, layout: Any, pipe: bool, tp: int) -> None:
        """Refuse a checkpoint this difference's weights cannot be written in (an engine, a
        tensor-parallel size): raise a PorterError naming the option and the fix."""

    def client_state(self, weights: Any) -> dict[str, Any]:
        """What a checkpoint's client state holds for this difference (porter.weights.ModelWeights)."""
        return {}

    def probes(self, layer: LayerProbes) -> None:
        """What verify compares in a transformer layer, where this difference changes it:
        replace a slot's probes or add a slot (porter.verify.probes.LayerProbes)."""

    def shrink_hf(self, read: HFConfig, out: dict[str, Any], layers: int, seq_length: int) -> list[str]:
        """verify's shrinking of a user's config.json (porter.verify.user_model), after the sizes:
        change its own fields in `out` (the file, shrunk to `layers` layers) where the published
        value would prove nothing in a `seq_length`-token batch, or counts more layers than
        there are; it may raise `out["num_hidden_layers"]` where fewer layers would leave out a
        kind of layer the file has (verify then runs that many); `read` is the published file
        as transformers reads it (`read.raw`: as written). Returns what it changed, for the
        report; by default nothing."""
        return []

    def tiny(self, spec: Spec, tiny: Any) -> dict[str, Any]:
        """Spec values of verify's tiny model (porter.verify.reference.TinyConfig), chosen so the
        difference shows (e.g. 2 key/value heads for 4 query heads)."""
        return {}
