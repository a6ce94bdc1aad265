"""Rotary position embedding (RoPE) on query and key, in place of the learned position table.

Spec: `position_embedding.type` (GPT: learned), `position_embedding.rope_theta`,
`position_embedding.layout` (HF's rotate_half pairing). Trees spell the switch as porter's
`--position-embedding-type rotary`, Habana's and BigScience's enum-typed option of the same
name (BigScience implements it in attention), or microsoft's
`--use-rotary-position-embeddings` (built in the language model, handed to attention); the
base as porter's `--rope-theta` or microsoft's `--rotary-position-embeddings-theta`. A tree
whose own rotary embedding has no base option, where the spec asks for another base than its
own, gets porter's `--rope-theta` threaded to every place that builds its RotaryEmbedding, in
the class's own terms (tree_base.py: a `base=` parameter passed, or a hard-coded 10000 made a
`theta` parameter).
When porter adds the implementation: attention builds a RotaryEmbedding and rotates query and
key, and the Embedding drops its learned table, in the Embedding's own terms.
HF: `rope_theta` (transformers 4) or `rope_parameters.rope_theta` (transformers 5).
"""

from __future__ import annotations

from porter.cst.nodes import negate
from porter.differences.base import Difference
from porter.differences.rotary import detect
from porter.differences.rotary import pair_rewrites as RP
from porter.differences.rotary import rewrites as R
from porter.differences.rotary import tree_base
from porter.differences.rotary.probes import add_rotary_probe
from porter.differences.rotary.weights import saved_frequencies
from porter.edits import arguments as A
from porter.planner import rw, unsupported
from porter.profile import ARGUMENTS, LANGUAGE_MODEL, TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import choice, number

ROTARY_BASE = 10000.0  # the base of a rotary embedding without a theta switch


class Rotary(Difference):
    name = "rotary"
    model_switches = ('rotary',)
    hf_fields = ("rope_theta", "rope_parameters")
    fields = {
        "position_embedding.type": choice("learned", "learned", "rotary", help="position encoding"),
        "position_embedding.rope_theta": number(ROTARY_BASE, help="rotary base"),
        "position_embedding.layout": choice("rotate_half", "rotate_half", help="rotary pairing"),
    }
    switch_fields = {"rope_theta": "position_embedding.rope_theta"}
    spellings = {
        "rotary": (
            Spelling(
                "rotary", "--position-embedding-type", "position_embedding_type", "rotary",
                "args.position_embedding_type == 'rotary'", NETWORK,
                (("type", "str"), ("default", "'learned'"), ("choices", "['learned', 'rotary']"),
                 ("help", "'Position embedding: a learned absolute table, or rotary (RoPE) on query and key.'")),
            ),
            # Habana and bigscience: an enum-typed option; bigscience applies it in attention.
            tree_spelling("rotary", "--position-embedding-type", "position_embedding_type", "rotary",
                          "args.position_embedding_type == PositionEmbeddingType.rotary",
                          ((TRANSFORMER, "apply_rotary_pos_emb"),), enum="PositionEmbeddingType"),
            # microsoft: rotary built in the language model, handed to attention.
            tree_spelling("rotary", "--use-rotary-position-embeddings", "use_rotary_position_embeddings", True,
                          "args.use_rotary_position_embeddings",
                          ((LANGUAGE_MODEL, "rotary_pos_emb"), (TRANSFORMER, "rotary_pos_emb"))),
        ),
        "rope_theta": (
            Spelling(
                "rope_theta", "--rope-theta", "rope_theta", ROTARY_BASE, "args.rope_theta", NETWORK,
                (("type", "float"), ("default", "10000.0"), ("help", "'Base of the rotary embedding frequencies.'")),
            ),
            tree_spelling("rope_theta", "--rotary-position-embeddings-theta", "rope_theta", ROTARY_BASE,
                          "args.rope_theta", ((LANGUAGE_MODEL, "rope_theta"),)),
        ),
    }

    def detect(self, parsed):
        return detect.detect(parsed, tree_base.tree_base(parsed))

    def wanted(self, spec):
        return spec["position_embedding.type"] == "rotary"

    def validate(self, values, given, fail):
        if values["position_embedding.type"] != "rotary":
            for key in ("position_embedding.rope_theta", "position_embedding.layout"):
                if key in given:
                    raise fail(key, f"position_embedding.type = {values['position_embedding.type']!r}",
                               f"remove {key}, or set position_embedding.type = 'rotary'",
                               message=f"inconsistent spec: {key} only applies to rotary")

    def plan(self, p):
        p.describe_model("rotary positions: attention rotates q and k; no learned position table")
        theta_value = p.spec["position_embedding.rope_theta"]
        p.switch("rotary")
        if p.implemented("rotary"):
            found = p.profile.spellings.get("rope_theta")
            base = p.facts(self.name).base if p.facts(self.name) is not None else None
            fixed = float(base.default) if base is not None and base.problem is None else ROTARY_BASE
            if found is not None and found.origin == "tree":
                p.switch("rope_theta", on=theta_value, field="position_embedding.rope_theta")
            elif found is not None or theta_value != fixed:
                tree_base.plan(p, base, theta_value)
            else:
                p.reuse("rope_theta", f"the tree's rotary embedding uses base {fixed:g}, the spec's")
            self._reused_positions(p)
            self._repair_pair(p)
            return
        theta = p.switch("rope_theta", on=theta_value, field="position_embedding.rope_theta")
        test = p.tests["rotary"]
        arguments = p.profile.arguments
        if not arguments.forbids_max_positions:
            p.checks.append(
                f"""
                if {test} and args.max_position_embeddings is None:
                    # rotary has no learned position table: the sequence length bounds positions
                    args.max_position_embeddings = args.seq_length if args.seq_length is not None else args.encoder_seq_length
                """
            )
        elif "max_position_embeddings" in arguments.required:
            p.edit(ARGUMENTS, "rotary",
                   "--max-position-embeddings stops being required with rotary: the tree forbids it then",
                   rw(A.OptionalRequiredArg, func=p.checks_function, name="max_position_embeddings", test=test))
        else:
            p.reuse("rotary", "the tree's checks already allow rotary without --max-position-embeddings")
        model = p.model
        if model.qk_method is None:
            raise unsupported("cannot find where attention computes query and key", TRANSFORMER,
                              "a ParallelAttention method that calls self.query_key_value and binds query_layer, key_layer",
                              "no such method")
        p.names_for(TRANSFORMER, "rotary")
        p.import_into(TRANSFORMER, "rotary", "from megatron.model.rotary_embedding import RotaryEmbedding",
                      "imports the rotary embedding")
        p.edit(TRANSFORMER, "rotary", "attention builds a rotary embedding when the switch is on",
               rw(R.AddRotaryEmbedding, cls="ParallelAttention", test=test,
                  head_dim="self.hidden_size_per_attention_head", theta=f"args.{theta.dest}"))
        where = f"ParallelAttention.{model.qk_method}" + (
            " (the projections' half; CoreAttention holds the math)" if model.core_attention else "")
        p.edit(TRANSFORMER, "rotary", f"attention rotates query and key in {where}",
               rw(R.ApplyRotaryEmbedding, cls="ParallelAttention", func=model.qk_method))
        self._positions(p, test)
        p.import_into(LANGUAGE_MODEL, "rotary", "from megatron.model.rotary_embedding import use_positions",
                      "imports the rotary embedding's position hand-over")
        p.edit(LANGUAGE_MODEL, "rotary", "the embedding hands the batch's position ids to the rotary embedding "
               "(--reset-position-ids, explicit positions)", rw(R.HandPositionsToRotary, cls="Embedding"))
        if p.has_dest("reset_position_ids"):
            p.checks.append(
                f"""
                if {test} and args.reset_position_ids and args.pipeline_model_parallel_size > 1:
                    # the position ids reach the first pipeline stage only; rotary needs them in every one
                    raise ValueError('--reset-position-ids with rotary positions needs '
                                     '--pipeline-model-parallel-size 1')
                """
            )
        p.create("megatron/model/rotary_embedding.py", "rotary", "the rotary embedding", "rotary_embedding.py.j2")

    def _repair_pair(self, p) -> None:
        """The tree's own rotary embedding returning [cos, sin] where its apply_rotary_pos_emb
        and attention take the angles (microsoft's FPDT rework): repaired to hand the angles on."""
        facts = p.facts(self.name)
        pair = facts.pair if facts is not None else None
        if pair is None:
            return
        p.edit(pair.file, "rotary", "repair: the reused RotaryEmbedding returned [cos, sin] of its angles, but "
               "apply_rotary_pos_emb takes the angles and attention reads a pair as (query, key) angles (the "
               "query rotated by cos(cos), the pipe's .to() failing on the list); it returns the angles again",
               rw(RP.RotaryReturnsAngles, cls="RotaryEmbedding", func="forward", angles=pair.angles))
        if pair.lm_func is not None:
            p.edit(LANGUAGE_MODEL, "rotary", f"repair: TransformerLanguageModel.{pair.lm_func} keeps the rotary "
                   "angles whole (it unpacked the [cos, sin] pair the embedding no longer returns); attention "
                   "uses them for query and key",
                   rw(RP.RotaryAnglesNotUnpacked, cls="TransformerLanguageModel", func=pair.lm_func, attr=pair.attr))

    def _reused_positions(self, p) -> None:
        """The tree's own rotary, with an Embedding whose learned table hangs on a constructor
        flag (Habana's `use_position`) that only the tree's own GPT model sets from the rotary
        switch: the flag follows the switch in the Embedding itself, so that the generated model
        (and any other caller) builds no table either."""
        gate = p.facts(self.name).position_gate
        if gate is not None and gate.startswith("self.") and gate[5:] not in p.model.embedding_params \
                and p.has_dest(gate[5:]):
            # the gate is a training argument of the tree (microsoft 69e3c6a0's --no-position-embedding,
            # dest add_position_embedding), which its rotary switch does not turn off: the entry point does
            p.default(gate[5:], False)
            return
        if gate is None or not gate.startswith("self.") or gate[5:] not in p.model.embedding_params:
            return
        p.names_for(LANGUAGE_MODEL, "rotary")
        p.edit(LANGUAGE_MODEL, "rotary", f"the Embedding's {gate} gate is off with the tree's rotary switch: "
               "every caller of the Embedding (the generated model too) builds no learned position table",
               rw(R.NarrowPositionGate, cls="Embedding", gate=gate, test=p.tests["rotary"]))

    def _positions(self, p, rotary_test: str) -> None:
        """No learned position table with rotary, in the Embedding's own terms."""
        gate = p.facts(self.name).position_gate
        learned = negate(rotary_test)
        if gate is None or gate == learned:  # no gate, or porter's own from an earlier apply
            p.names_for(LANGUAGE_MODEL, "rotary")
            p.edit(LANGUAGE_MODEL, "rotary", "no learned position table with rotary",
                   rw(R.EmbeddingPositionsInit, cls="Embedding", learned_test=learned))
            p.edit(LANGUAGE_MODEL, "rotary", "the embedding adds positions only when it has a table",
                   rw(R.EmbeddingPositionsForward, cls="Embedding"))
            state_test = f"{R.POSITIONS} is not None"
        elif gate.startswith("self.") and gate[5:] in p.model.embedding_params:
            p.names_for(LANGUAGE_MODEL, "rotary")
            p.edit(LANGUAGE_MODEL, "rotary", f"reuses the Embedding's {gate} gate: off with rotary",
                   rw(R.NarrowPositionGate, cls="Embedding", gate=gate, test=rotary_test))
            state_test = gate
        else:
            raise unsupported("the Embedding gates its position table in a way porter does not know", LANGUAGE_MODEL,
                              "Embedding.__init__ creating self.position_embeddings unconditionally or under a "
                              "`self.<parameter>` flag", f"if {gate}:")
        for method in ("state_dict_for_save_checkpoint", "load_state_dict"):
            p.edit(LANGUAGE_MODEL, "rotary", f"{method} skips the absent position table",
                   rw(R.GuardPositionsState, cls="Embedding", func=method, test=state_test))

    def probes(self, layer):
        add_rotary_probe(layer)

    def weights(self, layer):
        saved_frequencies(layer)

    def from_hf(self, config):
        out = {"position_embedding.type": "rotary"}
        params = config.rope_parameters()
        theta = params.get("rope_theta")
        if theta is not None:
            out["position_embedding.rope_theta"] = float(theta)
        return out

    def to_hf(self, spec, config):
        config.setdefault("rope_parameters", {"rope_type": "default"})["rope_theta"] = spec["position_embedding.rope_theta"]
