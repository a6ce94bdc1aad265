"""From a Spec and a TreeProfile to an ordered list of Edits: the only place that decides.

Every edit carries the spec key (feature) it serves and a reason a reviewer can read
("adds --no-bias: no bias switch found"; "reuses --swiglu"). A rewrite edit names a small
libcst transformer and its plain parameters; a create edit names a template and its
context. Nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from porter.edits import arguments as A
from porter.edits import language_model as L
from porter.edits import model_files as F
from porter.edits import transformer as T
from porter.edits.base import negate
from porter.edits.imports import ImportNameAlongside, InsertImport
from porter.errors import PorterError
from porter.profile import (
    ARGUMENTS,
    GLOBAL_VARS,
    GPT_MODEL,
    LANGUAGE_MODEL,
    MODEL_INIT,
    OPTIMIZER,
    TOKENIZER,
    TRANSFORMER,
    TreeProfile,
)
from porter.profile.features import SENTENCEPIECE_CHOICE, Spelling, porter_spelling
from porter.spec import Spec


@dataclass(frozen=True)
class Edit:
    file: str
    feature: str  # the spec key this edit serves, e.g. "rmsnorm"
    reason: str
    rewrite: Callable[[], Any] | None = None  # a factory of a fresh Rewrite
    template: str | None = None  # for created files
    context: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def kind(self) -> str:
        return "create" if self.template else "rewrite"

    @property
    def name(self) -> str:
        if self.template:
            return f"template {self.template}"
        func = self.rewrite.func if isinstance(self.rewrite, partial) else self.rewrite
        return func.__name__


@dataclass
class Plan:
    spec: Spec
    profile: TreeProfile
    edits: list[Edit]
    reused: list[str]  # what the tree already has and the port reuses, with reasons

    def files(self) -> list[str]:
        seen: dict[str, None] = {}
        for edit in self.edits:
            seen.setdefault(edit.file, None)
        return list(seen)


def _rw(rewrite, /, **params) -> Callable[[], Any]:
    return partial(rewrite, **params)


class _Planner:
    def __init__(self, spec: Spec, profile: TreeProfile) -> None:
        self.spec = spec
        self.profile = profile
        self.edits: list[Edit] = []
        self.reused: list[str] = []
        self.defaults: dict[str, object] = {}  # dest -> value for pretrain_<name>.py
        self.tests: dict[str, str] = {}  # feature -> expression true when on

    def edit(self, file: str, feature: str, reason: str, rewrite=None, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, rewrite=rewrite, context=context))

    def create(self, file: str, feature: str, reason: str, template: str, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, template=template, context=context))

    # -- switches ----------------------------------------------------------------------------
    def switch(self, feature: str, on: object | None = None) -> Spelling:
        """Reuse the tree's option for a feature, or add porter's. Returns the spelling."""
        found = self.profile.spellings.get(feature)
        if found is not None:
            origin = "the tree's" if found.origin == "tree" else "porter's earlier"
            self.reused.append(f"{feature}: reuses {origin} {found.option}")
            spelling = found
        else:
            spelling = porter_spelling(feature)
            self._check_free(spelling)
            self.edit(
                ARGUMENTS,
                feature,
                f"adds {spelling.option}: no {feature} switch found",
                _rw(A.AddArguments, func=spelling.group, arguments=[A.argument_statement(spelling.option, **dict(spelling.add))]),
            )
        self.tests[feature] = spelling.test
        value = spelling.on if on is None else on
        if value is not None:
            self.defaults[spelling.dest] = value
        return spelling

    def _check_free(self, spelling: Spelling) -> None:
        args = self.profile.arguments
        if spelling.dest in args.dests:
            taken = args.by_dest(spelling.dest)
            raise PorterError(
                f"cannot add {spelling.option}: its dest {spelling.dest!r} is already used",
                file=ARGUMENTS,
                construct=f"a free dest for {spelling.option}",
                found=f"{', '.join(taken.options) if taken else spelling.dest} in {taken.function if taken else 'the parser'}",
                fix="this tree has an option porter does not recognise for this feature; report the variant",
            )
        if spelling.group not in args.group_functions:
            raise PorterError(
                f"cannot add {spelling.option}: the argument group function {spelling.group} is missing",
                file=ARGUMENTS,
                construct=f"def {spelling.group}(parser)",
                found="group functions: " + ", ".join(args.group_functions),
                fix="this tree's arguments.py is laid out differently; report the variant",
            )

    # -- the plan ------------------------------------------------------------------------------
    def build(self) -> Plan:
        spec = self.spec
        checks_func = self.profile.arguments.checks_function
        if checks_func is None:
            raise PorterError(
                "cannot find where the tree checks its arguments",
                file=ARGUMENTS,
                construct="a function with a `for key in defaults:` loop (parse_args or validate_args)",
                found="functions with add_argument: " + ", ".join(self.profile.arguments.group_functions),
                fix="this tree's arguments.py is laid out differently; report the variant",
            )
        checks: list[str] = []
        if spec.wants("swiglu"):
            self._swiglu(checks)
        if spec.wants("rotary"):
            self._rotary(checks)
        if spec.wants("rmsnorm"):
            self._rmsnorm()
        if spec.wants("no_bias"):
            self._no_bias(checks)
        if spec.wants("ffn_rule"):
            spelling = self.switch("ffn_rule", on=spec.ffn_multiple_of)
            self.edit(
                ARGUMENTS, "ffn_rule",
                f"the 4h default becomes int(2/3*4h) rounded up to {spelling.option} (LLaMA: {spec.ffn_multiple_of})",
                _rw(A.FfnHiddenSizeRule, func=checks_func, dest=spelling.dest),
            )
        if spec.wants("sentencepiece"):
            self._sentencepiece()
        if checks:
            self.edit(
                ARGUMENTS, "checks", "validates the new switches where the tree checks its arguments",
                _rw(A.InsertChecks, func=checks_func, checks=checks),
            )
        if spec.norm_eps != 1e-5 or spec.wants("rmsnorm"):
            self.defaults["layernorm_epsilon"] = spec.norm_eps
        self._model()
        return Plan(spec=spec, profile=self.profile, edits=self.edits, reused=self.reused)

    def _swiglu(self, checks: list[str]) -> None:
        self.switch("swiglu")
        test = self.tests["swiglu"]
        checks.append(
            f"""
            if {test}:
                assert not args.openai_gelu, '--openai-gelu cannot be combined with swiglu'
                assert not args.onnx_safe, '--onnx-safe cannot be combined with swiglu'
                # the bias-gelu fusion fuses a gelu: swiglu has none
                args.bias_gelu_fusion = False
            """
        )
        self.defaults["bias_gelu_fusion"] = False
        self.edit(TRANSFORMER, "swiglu", "the MLP's first projection becomes a fused gate+up projection",
                  _rw(T.FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=test))
        self.edit(TRANSFORMER, "swiglu", "the MLP uses swiglu when the switch is on",
                  _rw(T.SetActivation, cls="ParallelMLP", test=test, func_name="swiglu"))
        self.edit(TRANSFORMER, "swiglu", "imports swiglu",
                  _rw(InsertImport, source="from megatron.model.swiglu import swiglu", after=None))
        self.create("megatron/model/swiglu.py", "swiglu", "the SwiGLU activation", "swiglu.py.j2")

    def _rotary(self, checks: list[str]) -> None:
        self.switch("rotary")
        theta = self.switch("rope_theta", on=self.spec.rope_theta)
        test = self.tests["rotary"]
        checks.append(
            f"""
            if {test} and args.max_position_embeddings is None:
                # rotary has no learned position table: the sequence length bounds positions
                args.max_position_embeddings = args.seq_length if args.seq_length is not None else args.encoder_seq_length
            """
        )
        self.edit(TRANSFORMER, "rotary", "imports the rotary embedding",
                  _rw(InsertImport, source="from megatron.model.rotary_embedding import RotaryEmbedding", after=None))
        self.edit(TRANSFORMER, "rotary", "attention builds a rotary embedding when the switch is on",
                  _rw(T.AddRotaryEmbedding, cls="ParallelAttention", test=test,
                      head_dim="self.hidden_size_per_attention_head", theta=f"args.{theta.dest}"))
        self.edit(TRANSFORMER, "rotary", "attention rotates query and key",
                  _rw(T.ApplyRotaryEmbedding, cls="ParallelAttention", func="forward"))
        learned = negate(test)
        self.edit(LANGUAGE_MODEL, "rotary", "no learned position table with rotary",
                  _rw(L.EmbeddingPositionsInit, cls="Embedding", learned_test=learned))
        self.edit(LANGUAGE_MODEL, "rotary", "the embedding adds positions only when it has a table",
                  _rw(L.EmbeddingPositionsForward, cls="Embedding"))
        for method in ("state_dict_for_save_checkpoint", "load_state_dict"):
            self.edit(LANGUAGE_MODEL, "rotary", f"{method} skips the absent position table",
                      _rw(L.GuardPositionsState, cls="Embedding", func=method))
        self.create("megatron/model/rotary_embedding.py", "rotary", "the rotary embedding", "rotary_embedding.py.j2")

    def _rmsnorm(self) -> None:
        self.switch("rmsnorm")
        test = self.tests["rmsnorm"]
        self.edit(MODEL_INIT, "rmsnorm", "exports RMSNorm right after LayerNorm, before gpt_model (circular import)",
                  _rw(InsertImport, source="from .rmsnorm import RMSNorm", after="LayerNorm"))
        for file in (TRANSFORMER, GPT_MODEL, OPTIMIZER):
            self.edit(file, "rmsnorm", "imports RMSNorm beside LayerNorm",
                      _rw(ImportNameAlongside, module="megatron.model", anchor="LayerNorm", name="RMSNorm"))
        for cls in ("ParallelTransformerLayer", "ParallelTransformer"):
            self.edit(TRANSFORMER, "rmsnorm", f"{cls}'s norm sites follow the norm switch",
                      _rw(T.ChooseNormClass, cls=cls, test=test))
        self.edit(GPT_MODEL, "rmsnorm", "the GPT pipe's final norm follows the norm switch",
                  _rw(F.PipeNormChoice, cls="GPTModelPipe", test=test))
        self.edit(OPTIMIZER, "rmsnorm", "RMSNorm weights get no weight decay, like LayerNorm's",
                  _rw(F.NoWeightDecayFor, func="_get_params_for_weight_decay_optimization"))
        self.create("megatron/model/rmsnorm.py", "rmsnorm", "RMSNorm", "rmsnorm.py.j2")

    def _no_bias(self, checks: list[str]) -> None:
        self.switch("no_bias")
        test = self.tests["no_bias"]
        checks.append(
            f"""
            if {test}:
                # the bias-gelu fusion adds a bias: there is none
                args.bias_gelu_fusion = False
            """
        )
        self.defaults["bias_gelu_fusion"] = False
        bias = negate(test)
        self.edit(TRANSFORMER, "no_bias", "MLP linears follow the bias switch",
                  _rw(T.LinearBias, cls="ParallelMLP", attrs=["dense_h_to_4h", "dense_4h_to_h"], bias_expr=bias))
        self.edit(TRANSFORMER, "no_bias", "attention linears follow the bias switch",
                  _rw(T.LinearBias, cls="ParallelAttention", attrs=["query_key_value", "query", "key_value", "dense"], bias_expr=bias))
        self.edit(TRANSFORMER, "no_bias", "the MLP adds its bias only when there is one",
                  _rw(T.NoneSafeBiasAdd, cls="ParallelMLP", func="forward"))
        for func in ("bias_dropout_add", "bias_dropout_add_fused_train", "bias_dropout_add_fused_inference"):
            self.edit(TRANSFORMER, "no_bias", f"{func} takes an Optional bias",
                      _rw(T.OptionalBiasParameter, func=func))
        self.edit(TRANSFORMER, "no_bias", "the layer broadcasts biases only when they exist",
                  _rw(T.NoneSafeExpandAs, cls="ParallelTransformerLayer", func="forward"))

    def _sentencepiece(self) -> None:
        self.switch("tokenizer_model")
        tokenizer_arg = self.profile.arguments.by_option("--tokenizer-type")
        if tokenizer_arg is None:
            raise PorterError(
                "cannot add a tokenizer choice: no --tokenizer-type option",
                file=ARGUMENTS, construct="add_argument('--tokenizer-type', ..., choices=[...])",
                found="no such option", fix="report the variant",
            )
        if self.profile.has_sentencepiece():
            self.reused.append(f"sentencepiece: reuses the tree's {SENTENCEPIECE_CHOICE!r} choice")
        else:
            self.edit(ARGUMENTS, "sentencepiece", f"adds the {SENTENCEPIECE_CHOICE!r} tokenizer choice",
                      _rw(A.ExtendChoices, func=tokenizer_arg.function, option="--tokenizer-type", value=SENTENCEPIECE_CHOICE))
        self.edit(TOKENIZER, "sentencepiece", "build_tokenizer builds the SentencePiece tokenizer",
                  _rw(F.TokenizerBranch, func="build_tokenizer", name=SENTENCEPIECE_CHOICE,
                      body="from .sentencepiece_tokenizer import SentencePieceTokenizer\n"
                           "tokenizer = SentencePieceTokenizer(args.tokenizer_model)"))
        self.edit(GLOBAL_VARS, "sentencepiece", "the tokenizer is built when a tokenizer model file is given",
                  _rw(F.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
        self.create("megatron/tokenizer/sentencepiece_tokenizer.py", "sentencepiece",
                    "the SentencePiece tokenizer", "sentencepiece_tokenizer.py.j2")
        self.defaults["tokenizer_type"] = SENTENCEPIECE_CHOICE

    def _model(self) -> None:
        spec = self.spec
        module = f"megatron/model/{spec.module_name}.py"
        norm = "LayerNorm"
        if spec.wants("rmsnorm"):
            norm = f"RMSNorm if {self.tests['rmsnorm']} else LayerNorm"
        defaults = dict(self.defaults)
        defaults.update(spec.training_defaults)
        unknown = [k for k in spec.training_defaults if k not in self.profile.arguments.dests]
        if unknown:
            raise PorterError(
                f"spec training_defaults name arguments this tree does not have: {', '.join(unknown)}",
                file=spec.path, construct="[training_defaults] keys = argument dests of the tree",
                found=", ".join(unknown),
                fix="remove them from the spec, or use this tree's argument names",
            )
        self.create(module, "model", f"{spec.model_class} and {spec.model_class}Pipe", "model.py.j2",
                    norm_class=norm)
        self.edit(MODEL_INIT, "model", f"exports {spec.model_class} after gpt_model",
                  _rw(InsertImport, source=f"from .{spec.module_name} import {spec.model_class}, {spec.model_class}Pipe",
                      after="GPTModel"))
        self.create(spec.script, "model", f"the {spec.name} entry point with its defaults", "pretrain.py.j2",
                    defaults=defaults)


def make_plan(spec: Spec, profile: TreeProfile) -> Plan:
    return _Planner(spec, profile).build()
