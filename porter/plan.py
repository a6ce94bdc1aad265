"""From a Spec and a TreeProfile to an ordered list of Edits: the only place that decides.

Every edit carries the spec key (feature) it serves and a reason a reviewer can read
("adds --no-bias: no bias switch found"; "reuses --swiglu"). A rewrite edit names a small
libcst transformer and its plain parameters; a create edit names a template and its
context. Nothing here touches files.

Per feature the plan asks the profile three questions: does the tree have a switch for it
(reuse that option; never a second option or dest), does the tree's code implement it
(then nothing is added), and, when porter adds the implementation, what shape the code has
where it goes (which rewrites apply, and with which anchors). A tree whose GPT model already
implements every model feature behind switches (microsoft HEAD) gets a model module and an
entry point wired to those switches, and no rewrite of its model code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from porter.cst.nodes import negate
from porter.edits import arguments as A
from porter.edits import attention as Att
from porter.edits import language_model as L
from porter.edits import model_files as F
from porter.edits import transformer as T
from porter.edits.imports import ImportNameAlongside, InsertImport
from porter.errors import PorterError
from porter.profile import (
    ARGUMENTS,
    GLOBAL_VARS,
    GPT_MODEL,
    LANGUAGE_MODEL,
    MODEL_INIT,
    OPTIMIZER,
    PRETRAIN_GPT,
    TOKENIZER,
    TRANSFORMER,
    TreeProfile,
)
from porter.profile.entry import REUSED_FROM_GPT
from porter.profile.features import SENTENCEPIECE_CHOICE, Spelling, porter_spelling
from porter.spec import Spec

# Features of the model's shape; when the tree implements every one the spec wants, the
# port is a model module wired to the tree's switches.
MODEL_FEATURES = ("swiglu", "rotary", "rmsnorm", "no_bias", "untied")
# Embedding.__init__ positional parameters -> the argument that fills them in the pipe spec.
EMBEDDING_ARGUMENTS = {
    "hidden_size": "args.hidden_size",
    "vocab_size": "args.padded_vocab_size",
    "max_sequence_length": "args.max_position_embeddings",
    "embedding_dropout_prob": "args.hidden_dropout",
}
ROTARY_BASE = 10000.0  # the base of a rotary embedding without a theta switch


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
    style: str = "explicit"  # "explicit": porter adds the features; "flags": the tree's switches
    defaults: dict = field(default_factory=dict)  # dest -> value pretrain_<name>.py sets

    def files(self) -> list[str]:
        seen: dict[str, None] = {}
        for edit in self.edits:
            seen.setdefault(edit.file, None)
        return list(seen)


def _rw(rewrite, /, **params) -> Callable[[], Any]:
    return partial(rewrite, **params)


def _unsupported(message: str, file: str, construct: str, found: str) -> PorterError:
    return PorterError(
        message, file=file, construct=construct, found=found,
        fix="this tree differs from the variants porter knows; run `porter inspect` and port "
        "this point by hand, or report the variant",
    )


class _Planner:
    def __init__(self, spec: Spec, profile: TreeProfile) -> None:
        self.spec = spec
        self.profile = profile
        self.model = profile.model
        self.edits: list[Edit] = []
        self.reused: list[str] = []
        self.defaults: dict[str, object] = {}  # dest -> value for pretrain_<name>.py
        self.tests: dict[str, str] = {}  # feature -> expression true when on
        self.checks: list[str] = []

    def edit(self, file: str, feature: str, reason: str, rewrite=None, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, rewrite=rewrite, context=context))

    def create(self, file: str, feature: str, reason: str, template: str, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, template=template, context=context))

    def reuse(self, feature: str, what: str) -> None:
        self.reused.append(f"{feature}: {what}")

    def has_dest(self, dest: str) -> bool:
        return dest in self.profile.arguments.dests

    # -- switches ----------------------------------------------------------------------------
    def switch(self, feature: str, on: object | None = None) -> Spelling:
        """Reuse the tree's option for a feature, or add porter's. Returns the spelling."""
        found = self.profile.spellings.get(feature)
        if found is not None:
            if found.origin == "tree":
                done = ""
                if found.implemented:
                    done = " and its implementation" + (f" ({found.layout})" if found.layout else "")
                elif found.implemented_by:
                    done = " (porter adds the implementation)"
                self.reuse(feature, f"reuses the tree's {found.option}{done}")
            else:
                self.reuse(feature, f"reuses {found.option}, added by porter earlier")
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
            self.defaults[spelling.dest] = self._typed(spelling, value)
        return spelling

    def _typed(self, spelling: Spelling, value: object) -> object:
        """The default as the tree's option types it: an int option gets an int."""
        argument = self.profile.arguments.by_dest(spelling.dest)
        if argument is not None and argument.type == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def implemented(self, feature: str) -> Spelling | None:
        """The tree's spelling of a feature its own code implements, else None."""
        found = self.profile.spellings.get(feature)
        return found if found is not None and found.origin == "tree" and found.implemented else None

    def _check_free(self, spelling: Spelling) -> None:
        args = self.profile.arguments
        if spelling.option in args.options or spelling.dest in args.dests:
            taken = args.by_option(spelling.option) or args.by_dest(spelling.dest)
            raise PorterError(
                f"cannot add {spelling.option}: its option or dest {spelling.dest!r} is already used",
                file=ARGUMENTS,
                construct=f"a free option and dest for {spelling.option}",
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

    def names_for(self, file: str, feature: str) -> None:
        """Import what the feature's test names (e.g. an enum) into a file that uses it."""
        found = self.profile.spellings.get(feature)
        for source in found.imports if found is not None else ():
            self.edit(file, feature, f"imports what `{self.tests[feature]}` names",
                      _rw(InsertImport, source=source, after=None))

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
        if spec.wants("swiglu"):
            self._swiglu()
        if spec.wants("rotary"):
            self._rotary(checks_func)
        if spec.wants("rmsnorm"):
            self._rmsnorm()
        self._fused_attention()
        if spec.wants("no_bias"):
            self._no_bias()
        if spec.wants("untied"):
            self._untied()
        if spec.wants("ffn_rule"):
            spelling = self.switch("ffn_rule", on=spec.ffn_multiple_of)
            self.edit(
                ARGUMENTS, "ffn_rule",
                f"the default MLP width becomes int(2/3*4h) rounded up to {spelling.option} (LLaMA: {spec.ffn_multiple_of})",
                _rw(A.FfnHiddenSizeRule, func=checks_func, dest=spelling.dest),
            )
        if spec.wants("sentencepiece"):
            self._sentencepiece()
        if self.checks:
            self.edit(
                ARGUMENTS, "checks", f"validates the new switches where the tree checks its arguments ({checks_func})",
                _rw(A.InsertChecks, func=checks_func, checks=self.checks),
            )
        if spec.norm_eps != 1e-5 or spec.wants("rmsnorm"):
            self.defaults["layernorm_epsilon"] = spec.norm_eps
        style = "flags" if self._flag_style() else "explicit"
        if style == "flags":
            self._flags_model()
        else:
            self._model()
        return Plan(spec=spec, profile=self.profile, edits=self.edits, reused=self.reused, style=style,
                    defaults=self._defaults())

    def _flag_style(self) -> bool:
        wanted = [f for f in MODEL_FEATURES if self.spec.wants(f)]
        if not all(self.implemented(f) for f in wanted):
            return False
        # Nothing to add: subclass the tree's GPT classes, unless porter's own template fits too.
        return bool(wanted) or (self.model.parallel_style, self.model.ctor_style) != ("mpu", "init_method")

    # -- features ------------------------------------------------------------------------------
    def _swiglu(self) -> None:
        self.switch("swiglu")
        if self.has_dest("bias_gelu_fusion"):
            self.defaults["bias_gelu_fusion"] = False  # the bias-gelu fusion fuses a gelu
        if self.implemented("swiglu"):
            return
        test = self.tests["swiglu"]
        lines = [f"if {test}:"]
        for dest in ("openai_gelu", "onnx_safe"):
            if self.has_dest(dest):
                lines.append(f"    assert not args.{dest}, '--{dest.replace('_', '-')} cannot be combined with swiglu'")
        if self.has_dest("bias_gelu_fusion"):
            lines += ["    # the bias-gelu fusion fuses a gelu: swiglu has none", "    args.bias_gelu_fusion = False"]
        if len(lines) > 1:
            self.checks.append("\n".join(lines))
        self.names_for(TRANSFORMER, "swiglu")
        self.edit(TRANSFORMER, "swiglu", "the MLP's first projection becomes a fused gate+up projection",
                  _rw(T.FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=test))
        self.edit(TRANSFORMER, "swiglu", "the MLP uses swiglu when the switch is on",
                  _rw(T.SetActivation, cls="ParallelMLP", test=test, func_name="swiglu"))
        self.edit(TRANSFORMER, "swiglu", "imports swiglu",
                  _rw(InsertImport, source="from megatron.model.swiglu import swiglu", after=None))
        self.create("megatron/model/swiglu.py", "swiglu", "the SwiGLU activation", "swiglu.py.j2")

    def _rotary(self, checks_func: str) -> None:
        spec = self.spec
        self.switch("rotary")
        if self.implemented("rotary"):
            theta = self.profile.spellings.get("rope_theta")
            if theta is not None:
                self.switch("rope_theta", on=spec.rope_theta)
            elif spec.rope_theta != ROTARY_BASE:
                raise PorterError(
                    f"the tree's rotary embedding has no theta switch, and the spec asks for {spec.rope_theta:g}",
                    file=TRANSFORMER, construct="a --rope-theta style option of the tree's rotary embedding",
                    found=f"rotary with its fixed base {ROTARY_BASE:g}",
                    fix=f"use position_embedding.rope_theta = {ROTARY_BASE:g} in the spec, or add a theta switch by hand",
                )
            else:
                self.reuse("rope_theta", f"the tree's rotary embedding uses base {ROTARY_BASE:g}, the spec's")
            return
        theta = self.switch("rope_theta", on=spec.rope_theta)
        test = self.tests["rotary"]
        arguments = self.profile.arguments
        if not arguments.forbids_max_positions:
            self.checks.append(
                f"""
                if {test} and args.max_position_embeddings is None:
                    # rotary has no learned position table: the sequence length bounds positions
                    args.max_position_embeddings = args.seq_length if args.seq_length is not None else args.encoder_seq_length
                """
            )
        elif "max_position_embeddings" in arguments.required:
            self.edit(ARGUMENTS, "rotary",
                      "--max-position-embeddings stops being required with rotary: the tree forbids it then",
                      _rw(A.OptionalRequiredArg, func=checks_func, name="max_position_embeddings", test=test))
        else:
            self.reuse("rotary", "the tree's checks already allow rotary without --max-position-embeddings")
        method = self.model.qk_method
        if method is None:
            raise _unsupported("cannot find where attention computes query and key", TRANSFORMER,
                               "a ParallelAttention method that calls self.query_key_value and binds query_layer, key_layer",
                               "no such method")
        self.names_for(TRANSFORMER, "rotary")
        self.edit(TRANSFORMER, "rotary", "imports the rotary embedding",
                  _rw(InsertImport, source="from megatron.model.rotary_embedding import RotaryEmbedding", after=None))
        self.edit(TRANSFORMER, "rotary", "attention builds a rotary embedding when the switch is on",
                  _rw(T.AddRotaryEmbedding, cls="ParallelAttention", test=test,
                      head_dim="self.hidden_size_per_attention_head", theta=f"args.{theta.dest}"))
        where = f"ParallelAttention.{method}" + (" (the projections' half; CoreAttention holds the math)" if self.model.core_attention else "")
        self.edit(TRANSFORMER, "rotary", f"attention rotates query and key in {where}",
                  _rw(T.ApplyRotaryEmbedding, cls="ParallelAttention", func=method))
        self._positions(test)
        self.create("megatron/model/rotary_embedding.py", "rotary", "the rotary embedding", "rotary_embedding.py.j2")

    def _positions(self, rotary_test: str) -> None:
        """No learned position table with rotary, in the Embedding's own terms."""
        gate = self.model.position_gate
        learned = negate(rotary_test)
        if gate is None or gate == learned:  # no gate, or porter's own from an earlier apply
            self.names_for(LANGUAGE_MODEL, "rotary")
            self.edit(LANGUAGE_MODEL, "rotary", "no learned position table with rotary",
                      _rw(L.EmbeddingPositionsInit, cls="Embedding", learned_test=learned))
            self.edit(LANGUAGE_MODEL, "rotary", "the embedding adds positions only when it has a table",
                      _rw(L.EmbeddingPositionsForward, cls="Embedding"))
            state_test = f"{L.POSITIONS} is not None"
        elif gate.startswith("self.") and gate[5:] in self.model.embedding_params:
            self.names_for(LANGUAGE_MODEL, "rotary")
            self.edit(LANGUAGE_MODEL, "rotary", f"reuses the Embedding's {gate} gate: off with rotary",
                      _rw(L.NarrowPositionGate, cls="Embedding", gate=gate, test=rotary_test))
            state_test = gate
        else:
            raise _unsupported("the Embedding gates its position table in a way porter does not know", LANGUAGE_MODEL,
                               "Embedding.__init__ creating self.position_embeddings unconditionally or under a "
                               "`self.<parameter>` flag", f"if {gate}:")
        for method in ("state_dict_for_save_checkpoint", "load_state_dict"):
            self.edit(LANGUAGE_MODEL, "rotary", f"{method} skips the absent position table",
                      _rw(L.GuardPositionsState, cls="Embedding", func=method, test=state_test))

    def _rmsnorm(self) -> None:
        self.switch("rmsnorm")
        if self.implemented("rmsnorm"):
            return
        test = self.tests["rmsnorm"]
        own = "megatron/model/rmsnorm.py" in self.profile.generated or not self.model.rmsnorm_exported
        if own:
            self.edit(MODEL_INIT, "rmsnorm", "exports RMSNorm right after LayerNorm, before gpt_model (circular import)",
                      _rw(InsertImport, source="from .rmsnorm import RMSNorm", after="LayerNorm"))
        else:
            self.reuse("rmsnorm", "the tree's own RMSNorm class (megatron.model exports it)")
        for file in (TRANSFORMER, GPT_MODEL, OPTIMIZER):
            source = self.model.layernorm_imports.get(file)
            if source is None:
                continue
            if source.startswith("from megatron.model import"):
                self.edit(file, "rmsnorm", "imports RMSNorm beside LayerNorm",
                          _rw(ImportNameAlongside, module="megatron.model", anchor="LayerNorm", name="RMSNorm"))
            else:  # e.g. `from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm`
                self.edit(file, "rmsnorm", "imports RMSNorm from its module, after LayerNorm's import (the file's style)",
                          _rw(InsertImport, source="from megatron.model.rmsnorm import RMSNorm", after="LayerNorm"))
        self.names_for(TRANSFORMER, "rmsnorm")
        for cls in ("ParallelTransformerLayer", "ParallelTransformer"):
            self.edit(TRANSFORMER, "rmsnorm", f"{cls}'s norm sites follow the norm switch",
                      _rw(T.ChooseNormClass, cls=cls, test=test))
        self.names_for(GPT_MODEL, "rmsnorm")
        self.edit(GPT_MODEL, "rmsnorm", "the GPT pipe's final norm follows the norm switch",
                  _rw(F.PipeNormChoice, cls="GPTModelPipe", test=test))
        if self.model.layernorm_imports.get(OPTIMIZER) is not None:
            self.edit(OPTIMIZER, "rmsnorm", "RMSNorm weights get no weight decay, like LayerNorm's",
                      _rw(F.NoWeightDecayFor, func="_get_params_for_weight_decay_optimization"))
        if own:
            self.create("megatron/model/rmsnorm.py", "rmsnorm", "RMSNorm", "rmsnorm.py.j2")

    def _fused_attention(self) -> None:
        site = self.profile.attention
        if site is None:
            self.reused.append("attention: keeps the tree's unfused attention (no core attention porter can fuse)")
            return
        self.edit(TRANSFORMER, "attention", "imports the fused attention",
                  _rw(InsertImport, source="from megatron.model.fused_attention import fused_attention, fused_attention_applies", after=None))
        self.edit(TRANSFORMER, "attention", f"{site.cls}.{site.func} calls one fused attention kernel where it computes the same",
                  _rw(Att.FusedCoreAttention, cls=site.cls, func=site.func, softmax=site.softmax, dropout=site.dropout,
                      alpha=site.alpha, cache_test=site.cache_test))
        self.create("megatron/model/fused_attention.py", "attention", "the fused core attention", "fused_attention.py.j2")

    def _no_bias(self) -> None:
        self.switch("no_bias")
        if self.has_dest("bias_gelu_fusion"):
            self.defaults["bias_gelu_fusion"] = False
        if self.implemented("no_bias"):
            return
        test = self.tests["no_bias"]
        if self.has_dest("bias_gelu_fusion"):
            self.checks.append(
                f"""
                if {test}:
                    # the bias-gelu fusion adds a bias: there is none
                    args.bias_gelu_fusion = False
                """
            )
        bias = negate(test)
        self.names_for(TRANSFORMER, "no_bias")
        self.edit(TRANSFORMER, "no_bias", "MLP linears follow the bias switch",
                  _rw(T.LinearBias, cls="ParallelMLP", attrs=["dense_h_to_4h", "dense_4h_to_h"], bias_expr=bias))
        self.edit(TRANSFORMER, "no_bias", "attention linears follow the bias switch",
                  _rw(T.LinearBias, cls="ParallelAttention", attrs=["query_key_value", "query", "key_value", "dense"], bias_expr=bias))
        model = self.model
        if model.mlp_bias_unguarded:
            self.edit(TRANSFORMER, "no_bias", "the MLP adds its bias only when there is one",
                      _rw(T.NoneSafeBiasAdd, cls="ParallelMLP", func="forward"))
        else:
            self.reuse("no_bias", "the MLP adds no bias by hand unchecked (its linear adds its own, or checks for None)")
        for func in model.plain_bias_helpers:
            self.edit(TRANSFORMER, "no_bias", f"{func} takes an Optional bias",
                      _rw(T.OptionalBiasParameter, func=func))
        if model.expand_as_unguarded:
            self.edit(TRANSFORMER, "no_bias", "the layer broadcasts biases only when they exist",
                      _rw(T.NoneSafeExpandAs, cls="ParallelTransformerLayer", func="forward"))
        else:
            self.reuse("no_bias", "the layer's bias path is None-safe already")

    def _untied(self) -> None:
        found = self.profile.spellings.get("untied")
        if self.implemented("untied"):
            self.switch("untied")
        elif found is not None:
            self.reuse("untied", f"the tree's {found.option} is left alone: the generated model unties itself")

    def _sentencepiece(self) -> None:
        tokenizer_arg = self.profile.arguments.by_option("--tokenizer-type")
        if tokenizer_arg is None:
            raise PorterError(
                "cannot add a tokenizer choice: no --tokenizer-type option",
                file=ARGUMENTS, construct="add_argument('--tokenizer-type', ..., choices=[...])",
                found="no such option", fix="report the variant",
            )
        self.switch("tokenizer_model")
        found = self.profile.sentencepiece()
        if found is not None and found[1] == "tree":
            choice = found[0]
            self.reuse("sentencepiece", f"the tree's {choice!r} tokenizer (a choice with its build_tokenizer branch)")
            when = self.profile.tokenizer_built_when
            if when and "tokenizer_model" not in when:
                self.edit(GLOBAL_VARS, "sentencepiece", "the tokenizer is built when a tokenizer model file is given",
                          _rw(F.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
            self.defaults["tokenizer_type"] = choice
            return
        if SENTENCEPIECE_CHOICE in self.profile.tokenizer_choices:
            self.reuse("sentencepiece", f"the {SENTENCEPIECE_CHOICE!r} choice is there already")
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

    # -- generated modules ------------------------------------------------------------------------
    def _defaults(self) -> dict:
        spec = self.spec
        defaults = dict(self.defaults)
        defaults.update(spec.training_defaults)
        unknown = [k for k in spec.training_defaults if not self.has_dest(k)]
        if unknown:
            raise PorterError(
                f"spec training_defaults name arguments this tree does not have: {', '.join(unknown)}",
                file=spec.path, construct="[training_defaults] keys = argument dests of the tree",
                found=", ".join(unknown),
                fix="remove them from the spec, or use this tree's argument names",
            )
        return defaults

    def _entry_context(self) -> dict:
        """pretrain_<name>.py's values, read from the tree's pretrain_gpt.py."""
        entry = self.profile.entry
        if entry is None or entry.pipe_condition is None:
            raise _unsupported("cannot read the tree's GPT entry point", PRETRAIN_GPT,
                               "pretrain_gpt.py with a model_provider that builds GPTModelPipe under an `if`",
                               "no pretrain_gpt.py" if entry is None else "no `if ...: GPTModelPipe(...)` in model_provider")
        missing = [n for n in ("forward_step", "train_valid_test_datasets_provider") if n not in entry.gpt_names]
        if missing:
            raise _unsupported("the tree's pretrain_gpt.py lacks what the generated entry point reuses", PRETRAIN_GPT,
                               ", ".join(REUSED_FROM_GPT), "missing: " + ", ".join(missing))
        if entry.pretrain_params and "extra_args_provider" not in entry.pretrain_params:
            raise _unsupported("the tree's pretrain() takes no extra-args provider, which sets the defaults",
                               "megatron/training.py", "def pretrain(..., extra_args_provider=None, ...)",
                               "pretrain(" + ", ".join(entry.pretrain_params) + ")")
        rotary_cache = entry.rotary_cache if self.implemented("rotary") else None
        imports: list[str] = []
        for expression in (entry.device, entry.config, rotary_cache[1] if rotary_cache else None, *entry.pretrain_positional):
            imports += [i for i in entry.import_for(expression) if i not in imports]
        return dict(
            gpt_names=[n for n in REUSED_FROM_GPT if n in entry.gpt_names],
            imports=imports,
            pipe_condition=entry.pipe_condition,
            config=entry.config,
            device=entry.device,
            mask_adding=entry.mask_adding,
            pipe_setup=list(entry.pipe_setup),
            rotary_cache=rotary_cache,
            pretrain_args=list(entry.pretrain_positional),
            defaults=self._defaults(),
        )

    def _export(self) -> None:
        spec = self.spec
        self.edit(MODEL_INIT, "model", f"exports {spec.model_class} after gpt_model",
                  _rw(InsertImport, source=f"from .{spec.module_name} import {spec.model_class}, {spec.model_class}Pipe",
                      after="GPTModel"))

    def _model(self) -> None:
        spec = self.spec
        model = self.model
        if model.parallel_style != "mpu" or model.ctor_style != "init_method":
            raise _unsupported("porter generates models for trees with `from megatron import mpu` and "
                               "(init_method, ...) constructors only, unless the tree implements every feature",
                               TRANSFORMER, "mpu.ColumnParallelLinear(...) and ParallelMLP(init_method, ...)",
                               f"{model.parallel_style} style, {model.ctor_style} constructors")
        module = f"megatron/model/{spec.module_name}.py"
        norm = "LayerNorm"
        norm_imports = [self.model.layernorm_imports.get(GPT_MODEL) or "from megatron.model import LayerNorm"]
        if spec.wants("rmsnorm"):
            norm = f"RMSNorm if {self.tests['rmsnorm']} else LayerNorm"
            if norm_imports[0].startswith("from megatron.model import"):
                norm_imports = ["from megatron.model import LayerNorm, RMSNorm"]
            else:
                norm_imports.append("from megatron.model.rmsnorm import RMSNorm")
        embedding_args = []
        for name in model.embedding_params:
            if name in EMBEDDING_ARGUMENTS:
                embedding_args.append(EMBEDDING_ARGUMENTS[name])
            elif name == "init_method":
                break
            else:
                raise _unsupported("the Embedding takes a positional parameter porter does not know", LANGUAGE_MODEL,
                                   "Embedding(" + ", ".join(EMBEDDING_ARGUMENTS) + ", init_method, ...)",
                                   "Embedding(" + ", ".join(model.embedding_params) + ")")
        if not spec.wants("untied") and not model.gpt_post_processing:
            raise _unsupported("a tied output needs gpt_model's post_language_model_processing", GPT_MODEL,
                               "def post_language_model_processing(...)", "no such function")
        loss = model.loss_fn or "CrossEntropy"
        self.create(module, "model", f"{spec.model_class} and {spec.model_class}Pipe, in this tree's signatures", "model.py.j2",
                    norm_class=norm,
                    norm_imports=norm_imports,
                    enums_module=model.enums_module or "megatron.model.enums",
                    loss_fn=loss,
                    loss_name=loss.split("(")[0],
                    moe=model.language_model_moe,
                    embedding_args=embedding_args,
                    output_returns_bias=model.column_returns_bias,
                    pipe_keywords=list(model.pipe_keywords))
        self._export()
        self.create(spec.script, "model", f"the {spec.name} entry point with its defaults", "pretrain.py.j2",
                    **self._entry_context())

    def _flags_model(self) -> None:
        spec = self.spec
        switches = [
            (self.tests[f], self.profile.spellings[f].switch)
            for f in MODEL_FEATURES if self.spec.wants(f) and f in self.tests
        ]
        if not spec.final_norm:
            raise _unsupported("the tree's GPT model always has a final norm; the spec has none", GPT_MODEL,
                               "a switch that removes the final norm", "none")
        self.create(f"megatron/model/{spec.module_name}.py", "model",
                    f"{spec.model_class} and {spec.model_class}Pipe: the tree's GPT classes with its switches checked",
                    "model_flags.py.j2", switches=switches)
        self._export()
        self.create(spec.script, "model", f"the {spec.name} entry point: turns the tree's switches on", "pretrain.py.j2",
                    **self._entry_context())


def make_plan(spec: Spec, profile: TreeProfile) -> Plan:
    return _Planner(spec, profile).build()
