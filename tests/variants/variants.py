"""Variants of the bundled sample tree, shaped like real forks where issue 13 says porter met them.

CI has no real trees, so each variant is the sample tree (shaped like microsoft/Megatron-DeepSpeed
f01c9e6e) with a few explicit text edits. One function per variant; its docstring names the real
tree whose structure it copies and what it changes. The code the edits write is our own, written
from the structural facts in shared/research/trees.md (and the trees read on disk), never copied.
Every edit asserts it applied exactly once, so a change to the sample tree that moves an anchor
fails here, loudly, instead of silently building a tree that is no longer the variant.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.helpers.trees import copy_sample


def edit(root: Path, rel: str, old: str, new: str) -> None:
    """Replace `old` by `new` in root/rel; `old` must be there exactly once."""
    path = root / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{rel}: expected exactly one {old!r}, found {text.count(old)}"
    path.write_text(text.replace(old, new))


def add(root: Path, rel: str, text: str) -> None:
    """A new file of the variant (one the sample tree does not have)."""
    path = root / rel
    assert not path.exists(), f"{rel} exists in the sample tree already"
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def block(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# -- 1. argument defaults applied in initialize_megatron --------------------------------------------


def defaults_in_initialize(root: Path) -> None:
    """Argument defaults applied outside arguments.py, like OpenLLM-France/Megatron-DeepSpeed a106b248
    (deep-spin 4e33e780 and Eutenacity's Mast e9c879eb are laid out the same way).

    There, `parse_args(extra_args_provider, ignore_unknown_args)` only builds the parser and
    parses; `validate_args(args)` checks and derives (parallel sizes, then `if
    args.ffn_hidden_size is None:` and the other widths) and has no `for key in defaults:` loop:
    `initialize_megatron` parses, applies `args_defaults` itself, calls `validate_args(args)` and
    hands the result to `set_global_variables(args)`. The sample tree does all of it in
    `parse_args(..., defaults={}, ...)`; this variant splits it the same way. (Those forks nest
    the required-argument check and the widths under `if not args.use_dataset_only:`; this
    variant keeps them at the top of validate_args.)
    """
    args_py = "megatron/arguments.py"
    edit(root, args_py,
         "def parse_args(extra_args_provider=None, defaults={},\n"
         "               ignore_unknown_args=False):\n"
         '    """Build the parser, parse the command line and derive dependent values."""\n',
         "def parse_args(extra_args_provider=None, ignore_unknown_args=False):\n"
         '    """Build the parser and parse the command line (validate_args checks the result)."""\n')
    edit(root, args_py,
         "    # DeepSpeed's pipeline engine is used unless explicitly switched off.\n"
         "    args.ds_pipeline_enabled = not args.no_pipeline_parallel\n"
         "\n"
         "    # World layout comes from the launcher's environment.\n"
         "    args.rank = int(os.getenv('RANK', '0'))\n"
         "    args.world_size = int(os.getenv('WORLD_SIZE', '1'))\n",
         "    # World layout comes from the launcher's environment.\n"
         "    args.rank = int(os.getenv('RANK', '0'))\n"
         "    args.world_size = int(os.getenv('WORLD_SIZE', '1'))\n"
         "    return args\n"
         "\n\n"
         "def validate_args(args):\n"
         '    """Check the parsed arguments and derive dependent values; initialize_megatron\n'
         '    has applied the script\'s defaults already."""\n'
         "    # DeepSpeed's pipeline engine is used unless explicitly switched off.\n"
         "    args.ds_pipeline_enabled = not args.no_pipeline_parallel\n")
    edit(root, args_py,
         "    # Script defaults only fill in what the command line left unset.\n"
         "    for key in defaults:\n"
         "        if getattr(args, key) is not None:\n"
         "            if args.rank == 0 and getattr(args, key) != defaults[key]:\n"
         "                print(f'WARNING: {key}={getattr(args, key)} from the command '\n"
         "                      f'line wins over the script default {defaults[key]}',\n"
         "                      flush=True)\n"
         "        else:\n"
         "            setattr(args, key, defaults[key])\n"
         "\n",
         "")

    edit(root, "megatron/initialize.py",
         "from megatron.global_vars import set_global_variables\n",
         "from megatron.arguments import parse_args, validate_args\n"
         "from megatron.global_vars import set_global_variables\n")
    edit(root, "megatron/initialize.py",
         "    set_global_variables(extra_args_provider=extra_args_provider,\n"
         "                         args_defaults=args_defaults,\n"
         "                         ignore_unknown_args=ignore_unknown_args)\n",
         "    args = parse_args(extra_args_provider, ignore_unknown_args)\n"
         "    # The script's defaults fill in what the command line left unset.\n"
         "    for key in args_defaults:\n"
         "        if getattr(args, key, None) is None:\n"
         "            setattr(args, key, args_defaults[key])\n"
         "    validate_args(args)\n"
         "    set_global_variables(args)\n")

    edit(root, "megatron/global_vars.py", "from .arguments import parse_args\n", "")
    edit(root, "megatron/global_vars.py",
         "def set_global_variables(extra_args_provider=None, args_defaults={},\n"
         "                         ignore_unknown_args=False):\n"
         "    args = _parse_args(extra_args_provider=extra_args_provider,\n"
         "                       defaults=args_defaults,\n"
         "                       ignore_unknown_args=ignore_unknown_args)\n",
         "def set_global_variables(args):\n"
         "    global _GLOBAL_ARGS\n"
         "    _ensure_var_is_not_initialized(_GLOBAL_ARGS, 'args')\n"
         "    _GLOBAL_ARGS = args\n")
    edit(root, "megatron/global_vars.py",
         "def _parse_args(extra_args_provider=None, defaults={},\n"
         "                ignore_unknown_args=False):\n"
         "    global _GLOBAL_ARGS\n"
         "    _ensure_var_is_not_initialized(_GLOBAL_ARGS, 'args')\n"
         "    _GLOBAL_ARGS = parse_args(extra_args_provider=extra_args_provider,\n"
         "                              defaults=defaults,\n"
         "                              ignore_unknown_args=ignore_unknown_args)\n"
         "    return _GLOBAL_ARGS\n"
         "\n\n",
         "")


# -- 2. the tree's own pretrain_llama.py and llama_model.py ---------------------------------------

OWN_PRETRAIN_LLAMA = '''
    """Pretrain this tree's own LLaMA (its own entry point, not porter's)."""

    from megatron import get_args
    from megatron.model import LLaMAModel, LLaMAModelPipe
    from megatron.training import pretrain
    from pretrain_gpt import forward_step, get_batch_pipe, train_valid_test_datasets_provider


    def model_provider(pre_process=True, post_process=True):
        args = get_args()
        if args.deepspeed and not args.no_pipeline_parallel:
            model = LLaMAModelPipe(num_tokentypes=0, parallel_output=True)
            model._megatron_batch_fn = get_batch_pipe
            return model
        return LLaMAModel(num_tokentypes=0, parallel_output=True,
                          pre_process=pre_process, post_process=post_process)


    def llama_defaults(parser):
        # flags the tree's LLaMA runs with, set in the entry point
        parser.set_defaults(openai_gelu=False)
        return parser


    if __name__ == "__main__":
        pretrain(train_valid_test_datasets_provider, model_provider, forward_step,
                 extra_args_provider=llama_defaults,
                 args_defaults={'tokenizer_type': 'GPT2BPETokenizer'})
'''

OWN_LLAMA_MODEL = '''
    """This tree's own LLaMA classes: GPT's, under the names its entry point builds."""

    from .gpt_model import GPTModel, GPTModelPipe


    class LLaMAModel(GPTModel):
        """The tree's LLaMA for the plain engine."""


    class LLaMAModelPipe(GPTModelPipe):
        """The tree's LLaMA for DeepSpeed's pipeline engine."""
'''


def own_llama_files(root: Path) -> None:
    """A tree that holds its own LLaMA, like HabanaAI/Model-References 7086aadb (Habana's hand port).

    There the Megatron-DeepSpeed tree has its own `pretrain_llama.py` and
    `megatron/model/llama_model.py` defining `LLaMAModel` and `LLaMAModelPipe`, which
    `megatron/model/__init__.py` exports right after the GPT classes. This variant adds the same
    three things (a small model module of our own: the GPT classes under LLaMA names).
    """
    add(root, "pretrain_llama.py", OWN_PRETRAIN_LLAMA)
    add(root, "megatron/model/llama_model.py", OWN_LLAMA_MODEL)
    edit(root, "megatron/model/__init__.py",
         "from .gpt_model import GPTModel, GPTModelPipe\n",
         "from .gpt_model import GPTModel, GPTModelPipe\n"
         "from .llama_model import LLaMAModel, LLaMAModelPipe\n")


def own_pretrain_llama(root: Path) -> None:
    """A tree that holds its own `pretrain_llama.py` only, like argonne-lcf/Megatron-DeepSpeed
    ffa3456d (its pretrain_llama.py builds the GPT classes; there is no llama_model.py)."""
    add(root, "pretrain_llama.py", OWN_PRETRAIN_LLAMA
        .replace("from megatron.model import LLaMAModel, LLaMAModelPipe",
                 "from megatron.model import GPTModel as LLaMAModel, GPTModelPipe as LLaMAModelPipe"))


# -- 3. BigScience's gate-second GLU ------------------------------------------------------------------

GLU_ACTIVATIONS = '''
    """Gated linear units for the MLP: the first projection is twice the MLP width, and its
    output splits in two halves; the activation applies to the second half, which gates the first."""

    import torch
    import torch.nn.functional as F


    def _gated(activation):
        def glu(x):
            x1, x2 = torch.chunk(x, 2, dim=-1)
            return x1 * activation(x2)
        glu.__name__ = f"glu_{activation.__name__}"
        return glu


    GLU_ACTIVATIONS = {
        "geglu": _gated(F.gelu),
        "liglu": _gated(lambda x: x),
        "reglu": _gated(F.relu),
        "swiglu": _gated(F.silu),
    }
'''


def glu_gate_second(root: Path) -> None:
    """BigScience's GLU, like bigscience-workshop/Megatron-DeepSpeed 8387ae17.

    There `--glu-activation {geglu,liglu,reglu,swiglu}` (choices read from
    `megatron.model.glu_activations.GLU_ACTIVATIONS`, which arguments.py reaches through `import
    megatron`) doubles the width of `ParallelMLP.dense_h_to_4h` and sets `self.activation_func =
    GLU_ACTIVATIONS[args.glu_activation]`, which chunks its input into x1, x2 and returns
    x1 * act(x2): the gate is the SECOND half of the fused projection. parse_args refuses it
    together with the bias-gelu fusion. This variant adds the same: its own glu_activations.py,
    the option, the check, and the MLP's width and activation.
    """
    add(root, "megatron/model/glu_activations.py", GLU_ACTIVATIONS)
    args_py = "megatron/arguments.py"
    edit(root, args_py, "import torch\nimport deepspeed\n", "import torch\nimport deepspeed\nimport megatron\n")
    edit(root, args_py,
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n",
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n"
         "    group.add_argument('--glu-activation', type=str,\n"
         "                       choices=megatron.model.glu_activations.GLU_ACTIVATIONS.keys(),\n"
         "                       help='A gated linear unit in the MLP (its first projection doubles).')\n")
    edit(root, args_py,
         "    # Model shape.\n",
         "    if args.glu_activation is not None and args.bias_gelu_fusion:\n"
         "        raise ValueError('--glu-activation needs --no-bias-gelu-fusion')\n"
         "\n"
         "    # Model shape.\n")
    transformer = "megatron/model/transformer.py"
    edit(root, transformer,
         "from megatron.model.utils import attention_mask_func, openai_gelu, erf_gelu\n",
         "from megatron.model.utils import attention_mask_func, openai_gelu, erf_gelu\n"
         "from megatron.model.glu_activations import GLU_ACTIVATIONS\n")
    edit(root, transformer,
         "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n"
         "            args.hidden_size,\n"
         "            args.ffn_hidden_size,\n",
         "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n"
         "            args.hidden_size,\n"
         "            # a GLU halves the projection's output: twice the width in\n"
         "            2 * args.ffn_hidden_size if args.glu_activation else args.ffn_hidden_size,\n")
    edit(root, transformer,
         "        self.activation_func = F.gelu\n"
         "        if args.openai_gelu:\n",
         "        self.activation_func = F.gelu\n"
         "        if args.glu_activation:\n"
         "            self.activation_func = GLU_ACTIVATIONS[args.glu_activation]\n"
         "        elif args.openai_gelu:\n")


# -- 4. a hand port: a separate gate projection and a no-bias switch that misses it -------------------


def hand_port_separate_gate(root: Path) -> None:
    """Habana's hand port of LLaMA, like HabanaAI/Model-References 7086aadb (its Megatron-DeepSpeed).

    There `--activation-func-type {gelu,swiglu}` and `--no-bias` are registered the tree's own
    way (network-size group, their own help); with swiglu `ParallelMLP.dense_h_to_4h` is the gate
    (silu on its output) and a SECOND ColumnParallelLinear `dense_h_to_4h_swiglu`, as wide, is
    the up projection, multiplied in. `bias = not args.no_bias` goes to every attention and MLP
    linear except `dense_h_to_4h_swiglu` (the hand port's bug: it keeps a bias under --no-bias).
    Habana's MLP input linears add their own bias (skip_bias_add=False), and its layer is
    None-safe where a linear has no bias (`x + bias if bias is not None else x`, `.expand_as`
    only when there is a bias); its scripted bias-dropout-add helpers stay typed Tensor, and its
    LLaMA script passes --no-bias-dropout-fusion. This variant writes the same, in the sample
    tree's idiom (linears return (output, bias)).
    """
    args_py = "megatron/arguments.py"
    edit(root, args_py,
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n",
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n"
         "    group.add_argument('--activation-func-type', type=str, default='gelu',\n"
         "                       choices=['gelu', 'swiglu'],\n"
         "                       help='MLP activation (swiglu: a second input projection).')\n"
         "    group.add_argument('--no-bias', action='store_true',\n"
         "                       help='Attention and MLP linears without biases.')\n")
    edit(root, args_py,
         "    # Model shape.\n",
         "    if args.activation_func_type != 'gelu':\n"
         "        assert not args.openai_gelu, '--openai-gelu needs --activation-func-type gelu'\n"
         "        assert not args.onnx_safe, '--onnx-safe needs --activation-func-type gelu'\n"
         "\n"
         "    # Model shape.\n")

    transformer = "megatron/model/transformer.py"
    edit(root, transformer, block('''
        |        self.dense_h_to_4h = mpu.ColumnParallelLinear(
        |            args.hidden_size,
        |            args.ffn_hidden_size,
        |            gather_output=False,
        |            init_method=init_method,
        |            skip_bias_add=True)
        |
        |        self.bias_gelu_fusion = args.bias_gelu_fusion
        |        self.activation_func = F.gelu
        |        if args.openai_gelu:
        ''').replace("|", ""), block('''
        |        self.use_swiglu = args.activation_func_type == 'swiglu'
        |
        |        # the gate when swiglu is on; its linear adds its own bias
        |        self.dense_h_to_4h = mpu.ColumnParallelLinear(
        |            args.hidden_size,
        |            args.ffn_hidden_size,
        |            bias=not args.no_bias,
        |            gather_output=False,
        |            init_method=init_method,
        |            skip_bias_add=False)
        |
        |        if self.use_swiglu:
        |            # the up projection, multiplied by silu(gate)
        |            self.dense_h_to_4h_swiglu = mpu.ColumnParallelLinear(
        |                args.hidden_size,
        |                args.ffn_hidden_size,
        |                gather_output=False,
        |                init_method=init_method,
        |                skip_bias_add=False)
        |            self.activation_func = F.silu
        |        else:
        |            self.activation_func = F.gelu
        |        if args.openai_gelu:
        ''').replace("|", ""))
    edit(root, transformer, block('''
        |        self.dense_4h_to_h = mpu.RowParallelLinear(
        |            args.ffn_hidden_size,
        |            args.hidden_size,
        |            input_is_parallel=True,
        ''').replace("|", ""), block('''
        |        self.dense_4h_to_h = mpu.RowParallelLinear(
        |            args.ffn_hidden_size,
        |            args.hidden_size,
        |            bias=not args.no_bias,
        |            input_is_parallel=True,
        ''').replace("|", ""))
    edit(root, transformer, block('''
        |        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)
        |
        |        if self.bias_gelu_fusion:
        |            intermediate_parallel = \\
        |                bias_gelu_impl(intermediate_parallel, bias_parallel)
        |        else:
        |            intermediate_parallel = \\
        |                self.activation_func(intermediate_parallel + bias_parallel)
        ''').replace("|", ""), block('''
        |        intermediate_parallel, _ = self.dense_h_to_4h(hidden_states)
        |        intermediate_parallel = self.activation_func(intermediate_parallel)
        |        if self.use_swiglu:
        |            up, _ = self.dense_h_to_4h_swiglu(hidden_states)
        |            intermediate_parallel = intermediate_parallel * up
        ''').replace("|", ""))
    # every attention linear follows --no-bias
    for old in (
        "            self.query_key_value = mpu.ColumnParallelLinear(\n"
        "                args.hidden_size,\n"
        "                3 * projection_size,\n",
        "            self.query = mpu.ColumnParallelLinear(\n"
        "                args.hidden_size,\n"
        "                projection_size,\n",
        "            self.key_value = mpu.ColumnParallelLinear(\n"
        "                args.hidden_size,\n"
        "                2 * projection_size,\n",
    ):
        edit(root, transformer, old, old + "                bias=not args.no_bias,\n")
    old = "        self.dense = mpu.RowParallelLinear(\n            projection_size,\n            args.hidden_size,\n"
    edit(root, transformer, old, old + "            bias=not args.no_bias,\n")
    # the layer's bias path is None-safe
    edit(root, transformer,
         "    out = torch.nn.functional.dropout(x + bias, p=prob, training=training)\n",
         "    x = x + bias if bias is not None else x\n"
         "    out = torch.nn.functional.dropout(x, p=prob, training=training)\n")
    text = (root / transformer).read_text()
    for name in ("attention_bias", "mlp_bias"):
        old = f"{name}.expand_as(residual),"
        assert text.count(old) == (2 if name == "attention_bias" else 1), old
        text = text.replace(old, f"{name}.expand_as(residual) if {name} is not None else None,")
    (root / transformer).write_text(text)


# -- 5. parallel linears that put `_extra_state: None` in the state dict ------------------------------


def extra_state_linears(root: Path) -> None:
    """Parallel linears with extra state, like HabanaAI/Megatron-DeepSpeed 891d6db9.

    There `ColumnParallelLinear` and `RowParallelLinear` (megatron/core/tensor_parallel/layers.py)
    define `get_extra_state()`, which returns None unless Transformer Engine runs on an HPU, so
    `state_dict()` holds a `<prefix>._extra_state: None` entry for every such linear. This variant
    gives the sample tree's two parallel linears the same method.
    """
    method = block('''
        |    def get_extra_state(self):
        |        # state of a fused-kernel backend; this tree has none to keep
        |        return None
        |
        ''').replace("|", "")
    for first_line in ("        input_parallel = copy_to_tensor_model_parallel_region(input_)\n",  # ColumnParallelLinear
                       "        if self.input_is_parallel:\n"):  # RowParallelLinear
        old = "    def forward(self, input_):\n" + first_line
        edit(root, "megatron/mpu/layers.py", old, method + old)


# -- 6. an RMSNorm switch whose class is None without apex ---------------------------------------------


NORM_FALLBACK_NONE = block("""
    try:
        from apex.normalization import MixedFusedRMSNorm
    except ImportError:  # apex is CUDA-only
        MixedFusedRMSNorm = None
""")


def rmsnorm_apex_only(root: Path) -> None:
    """An RMSNorm switch whose class exists only with apex, like OpenLLM-France/Megatron-DeepSpeed
    a106b248 and deep-spin 4e33e780 (microsoft's late-2023 layout).

    There `--normalization {layernorm,rmsnorm}` picks, at every norm site of the transformer and
    for the GPT pipe's final `LayerSpec`, either LayerNorm or apex's `MixedFusedRMSNorm`, called
    `(hidden_size, layernorm_epsilon)` positionally; transformer.py and gpt_model.py each import
    it in a top-level `try:` whose `except ImportError:` binds the name to None, so without apex
    the model cannot be built. This variant adds the same option, imports and sites (the
    decoder's cross-attention norm stays LayerNorm: a GPT has none).
    """
    _apex_rmsnorm_switch(root, NORM_FALLBACK_NONE)


def _apex_rmsnorm_switch(root: Path, norm_import: str, cls: str = "MixedFusedRMSNorm") -> None:
    """microsoft's --normalization switch building `cls`, which the model files import by `norm_import`
    (after their LayerNorm import)."""
    args_py = "megatron/arguments.py"
    edit(root, args_py,
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n",
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n"
         "    group.add_argument('--normalization', type=str, default='layernorm',\n"
         "                       choices=['layernorm', 'rmsnorm'],\n"
         "                       help='The norm at every norm site (rmsnorm needs apex).')\n")
    transformer = "megatron/model/transformer.py"
    edit(root, transformer, "from megatron.model import LayerNorm\n",
         "from megatron.model import LayerNorm\n" + norm_import)
    for site in ("input_layernorm", "post_attention_layernorm"):
        edit(root, transformer,
             f"        self.{site} = LayerNorm(\n"
             "            args.hidden_size,\n"
             "            eps=args.layernorm_epsilon)\n",
             "        if args.normalization == 'rmsnorm':\n"
             f"            self.{site} = {cls}(args.hidden_size, args.layernorm_epsilon)\n"
             "        else:\n"
             f"            self.{site} = LayerNorm(\n"
             "                args.hidden_size,\n"
             "                eps=args.layernorm_epsilon)\n")
    edit(root, transformer,
         "            self.final_layernorm = LayerNorm(\n"
         "                args.hidden_size,\n"
         "                eps=args.layernorm_epsilon)\n",
         "            if args.normalization == 'rmsnorm':\n"
         f"                self.final_layernorm = {cls}(args.hidden_size, args.layernorm_epsilon)\n"
         "            else:\n"
         "                self.final_layernorm = LayerNorm(\n"
         "                    args.hidden_size,\n"
         "                    eps=args.layernorm_epsilon)\n")
    gpt_model = "megatron/model/gpt_model.py"
    edit(root, gpt_model, "from megatron.model import LayerNorm\n",
         "from megatron.model import LayerNorm\n" + norm_import)
    edit(root, gpt_model,
         "        self.specs.append(\n"
         "            LayerSpec(LayerNorm,\n"
         "                      args.hidden_size,\n"
         "                      eps=args.layernorm_epsilon))\n",
         "        if args.normalization == 'rmsnorm':\n"
         f"            self.specs.append(LayerSpec({cls}, args.hidden_size, args.layernorm_epsilon))\n"
         "        else:\n"
         "            self.specs.append(\n"
         "                LayerSpec(LayerNorm,\n"
         "                          args.hidden_size,\n"
         "                          eps=args.layernorm_epsilon))\n")


# -- 8. apex imported at start-up, unconditionally -----------------------------------------------


def apex_at_startup(root: Path) -> None:
    """apex imported at start-up with no fallback, like microsoft/Megatron-DeepSpeed 69e3c6a0 (and
    9e72d571, BigScience 8387ae17): the optimizer module takes `FusedAdam as Adam` and `FusedSGD as
    SGD` from apex.optimizers, megatron/utils.py computes the parameters' norm with apex's
    `multi_tensor_applier(amp_C.multi_tensor_l2norm, ...)`, and microsoft's --normalization switch
    builds apex's `MixedFusedRMSNorm`, which megatron/model/__init__.py exports as RMSNorm (as
    llm-jp 9f3e45c7 does on CUDA) and transformer.py and gpt_model.py import from there.
    On a CPU machine (no apex) the tree stops at its first import unless porter stands in.
    """
    _apex_rmsnorm_switch(root, "from megatron.model import RMSNorm\n", cls="RMSNorm")
    edit(root, "megatron/model/__init__.py", "    from torch.nn import LayerNorm\n",
         "    from torch.nn import LayerNorm\nfrom apex.normalization import MixedFusedRMSNorm as RMSNorm\n")
    optimizer = "megatron/optimizer/__init__.py"
    edit(root, optimizer, "from torch.optim import AdamW as Adam\nfrom torch.optim import SGD\n",
         "from apex.optimizers import FusedAdam as Adam\nfrom apex.optimizers import FusedSGD as SGD\n")
    utils = "megatron/utils.py"
    edit(root, utils, "import torch\n", "import amp_C\nimport torch\nfrom apex.multi_tensor_apply import multi_tensor_applier\n")
    edit(root, utils,
         "            if param_is_not_tensor_parallel_duplicate(p):\n"
         "                total += p.detach().float().norm().cpu() ** 2\n",
         "            if param_is_not_tensor_parallel_duplicate(p):\n"
         "                norm, _ = multi_tensor_applier(amp_C.multi_tensor_l2norm, torch.zeros(1, dtype=torch.int),\n"
         "                                               [[p.detach()]], False)\n"
         "                total += norm.cpu() ** 2\n")


# the tree's own torch RMSNorm (megatron/model/rmsnorm.py) of the variants that have one
OWN_RMSNORM = '''
    import torch


    class RMSNorm(torch.nn.Module):
        """This tree's own RMSNorm: x / rms(x) in float32, times the weight."""

        def __init__(self, dim, eps=1e-6):
            super().__init__()
            self.eps = eps
            self.weight = torch.nn.Parameter(torch.ones(dim))

        def forward(self, x):
            scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
            return (x.float() * scale).type_as(x) * self.weight
'''


# -- 9. the tree's own rmsnorm.py beside apex's RMSNorm with a None fallback -----------------------


def own_rmsnorm_apex_fallback(root: Path) -> None:
    """A tree that holds its own megatron/model/rmsnorm.py (a torch RMSNorm) while gpt_model.py and
    transformer.py import apex's `MixedFusedRMSNorm` with a None fallback, like llm-jp/Megatron-DeepSpeed
    9f3e45c7 (microsoft's late-2023 layout with a torch RMSNorm module of its own). porter cannot
    write its RMSNorm at the path the tree uses.
    """
    rmsnorm_apex_only(root)
    add(root, "megatron/model/rmsnorm.py", OWN_RMSNORM)


# -- 7. a q | k | v thirds split next to a per-group split method ----------------------------------


def blocked_qkv_thirds(root: Path) -> None:
    """Attention that cuts the fused QKV output into q | k | v thirds, like microsoft/Megatron-DeepSpeed
    f4157bea (its FPDT rework of ParallelAttention.forward: a width of `shape[-1] // 3`, three
    slices reshaped to heads), while the class keeps a per-group split method (`split_tensor`:
    `torch.split(x, [np/ng, 1, 1], dim=-2)` on a [sq, b, ng, np/ng + 2, hn] view) that forward no
    longer calls. Here every head has its own key and value (np/ng = 1); porter must split per
    group again (an explained repair), and verify must read the repaired layout.
    """
    transformer = "megatron/model/transformer.py"
    edit(root, transformer,
         "        self.num_attention_heads_per_partition = mpu.divide(\n"
         "            args.num_attention_heads, world_size)\n\n"
         "        if attention_type == AttnType.self_attn:\n",
         "        self.num_attention_heads_per_partition = mpu.divide(\n"
         "            args.num_attention_heads, world_size)\n"
         "        # query heads per key/value head\n"
         "        self.num_key_value_groups = 1\n\n"
         "        if attention_type == AttnType.self_attn:\n")
    edit(root, transformer,
         "    def forward(self, hidden_states, attention_mask, layer_past=None,\n"
         "                get_key_value=False, encoder_output=None):\n"
         "        # input: [sq, b, h]\n",
         "    def split_tensor(self, mixed_x_layer):\n"
         '        """[sq, b, ng, np/ng + 2, hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn]."""\n'
         "        queries, keys, values = torch.split(mixed_x_layer, [self.num_key_value_groups, 1, 1], dim=-2)\n"
         "        return queries.flatten(2, 3), keys.squeeze(-2), values.squeeze(-2)\n"
         "\n"
         "    def forward(self, hidden_states, attention_mask, layer_past=None,\n"
         "                get_key_value=False, encoder_output=None):\n"
         "        # input: [sq, b, h]\n")
    edit(root, transformer,
         "            # -> [sq, b, np, 3 * hn]\n"
         "            new_tensor_shape = mixed_x_layer.size()[:-1] + \\\n"
         "                (self.num_attention_heads_per_partition,\n"
         "                 3 * self.hidden_size_per_attention_head)\n"
         "            mixed_x_layer = mixed_x_layer.view(*new_tensor_shape)\n"
         "\n"
         "            # -> 3 x [sq, b, np, hn]\n"
         "            (query_layer,\n"
         "             key_layer,\n"
         "             value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)\n",
         "            # q | k | v blocks of the projection, each [sq, b, np, hn]\n"
         "            sq, b = mixed_x_layer.shape[0], mixed_x_layer.shape[1]\n"
         "            third = mixed_x_layer.shape[-1] // 3\n"
         "            query_layer = mixed_x_layer[:, :, :third].reshape(sq, b, -1, self.hidden_size_per_attention_head)\n"
         "            key_layer = mixed_x_layer[:, :, third:2 * third].reshape(\n"
         "                sq, b, -1, self.hidden_size_per_attention_head)\n"
         "            value_layer = mixed_x_layer[:, :, 2 * third:].reshape(sq, b, -1, self.hidden_size_per_attention_head)\n")


# -- 11. a boolean SwiGLU switch of the tree's own, its gated unit doubling one fused projection --------


def own_swiglu_flag(root: Path) -> None:
    """A tree with its own `--swiglu`, like microsoft/Megatron-DeepSpeed since NVIDIA's July 2023 rebase
    (HEAD 2025: a store_true `--swiglu` in the network-size group; `ParallelMLP.__init__` doubles
    `dense_h_to_4h` when the gated linear unit is on, `gated_linear_unit`, and its
    `self.activation_func` choice gains an `elif args.swiglu:` branch whose function chunks the
    projection's output in two and returns silu(first half) * second half, with no bias-gelu
    fusion). microsoft builds its layers from a config object; this variant keeps the sample
    tree's mpu constructors and reads the unit from the switch.
    """
    args_py = "megatron/arguments.py"
    edit(root, args_py,
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n",
         "    group.add_argument('--onnx-safe', type=bool, required=False,\n"
         "                       help='Use the erf form of GeLU (ONNX friendly).')\n"
         "    group.add_argument('--swiglu', action='store_true',\n"
         "                       help='A SiLU-gated linear unit in the MLP (its first projection doubles).')\n")
    transformer = "megatron/model/transformer.py"
    edit(root, transformer,
         "class ParallelMLP(MegatronModule):\n",
         "def silu_gated(x):\n"
         '    """The first half of the last dimension, through SiLU, gates the second half."""\n'
         "    gate, up = torch.chunk(x, 2, dim=-1)\n"
         "    return F.silu(gate) * up\n"
         "\n\n"
         "class ParallelMLP(MegatronModule):\n")
    edit(root, transformer,
         "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n"
         "            args.hidden_size,\n"
         "            args.ffn_hidden_size,\n",
         "        # a gated linear unit projects to [gate; up], twice the MLP width\n"
         "        gated_linear_unit = args.swiglu\n"
         "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n"
         "            args.hidden_size,\n"
         "            2 * args.ffn_hidden_size if gated_linear_unit else args.ffn_hidden_size,\n")
    edit(root, transformer,
         "        elif args.onnx_safe:\n"
         "            self.activation_func = erf_gelu\n",
         "        elif args.onnx_safe:\n"
         "            self.activation_func = erf_gelu\n"
         "        elif args.swiglu:\n"
         "            self.bias_gelu_fusion = False\n"
         "            self.activation_func = silu_gated\n")


# -- 10. the layer's norms chosen per norm type in nested if/elif/else ---------------------------------

def norm_type_branches(root: Path) -> None:
    """The layer's norms built per norm type in if/elif/else branches, like microsoft/Megatron-DeepSpeed
    at its 2024-25 head (also argonne-lcf, llm-jp, Mast, OpenLLM-France, deep-spin).

    There ParallelTransformerLayer.__init__ assigns `self.input_layernorm` and
    `self.post_attention_layernorm` in every branch of `if args.normalization == 'layernorm':`
    (itself split by `if get_accelerator().device_name() == 'cuda':`, the fused LayerNorm with
    more keywords, else a plain one) `else:` RMSNorm, a torch RMSNorm of the tree's own
    (megatron/model/rmsnorm.py) that megatron.model exports beside LayerNorm. This variant has the
    same nesting, its RMSNorm under an `elif` and an `else:` that raises for an unknown type;
    the CUDA branch passes eps by position (the sample tree's fused LayerNorm takes no more).
    """
    add(root, "megatron/model/rmsnorm.py", OWN_RMSNORM)
    edit(root, "megatron/model/__init__.py", "from .gpt_model import GPTModel, GPTModelPipe\n",
         "from .rmsnorm import RMSNorm\nfrom .gpt_model import GPTModel, GPTModelPipe\n")
    _apex_rmsnorm_switch(root, "from megatron.model import RMSNorm\n", cls="RMSNorm")
    for site in ("input_layernorm", "post_attention_layernorm"):
        edit(root, "megatron/model/transformer.py",
             "        if args.normalization == 'rmsnorm':\n"
             f"            self.{site} = RMSNorm(args.hidden_size, args.layernorm_epsilon)\n"
             "        else:\n"
             f"            self.{site} = LayerNorm(\n"
             "                args.hidden_size,\n"
             "                eps=args.layernorm_epsilon)\n",
             "        if args.normalization == 'layernorm':\n"
             "            if get_accelerator().device_name() == 'cuda':\n"
             f"                self.{site} = LayerNorm(args.hidden_size, args.layernorm_epsilon)\n"
             "            else:\n"
             f"                self.{site} = LayerNorm(\n"
             "                    args.hidden_size,\n"
             "                    eps=args.layernorm_epsilon)\n"
             "        elif args.normalization == 'rmsnorm':\n"
             f"            self.{site} = RMSNorm(args.hidden_size, args.layernorm_epsilon)\n"
             "        else:\n"
             "            raise ValueError(f'unknown normalization {args.normalization}')\n")


# -- 12. the GPT model's logits, where a flags port caps them: a chunked-loss branch beside them ----------


def chunked_logits_loss(root: Path) -> None:
    """The GPT model's post-processing as microsoft/Megatron-DeepSpeed HEAD lays it out, where its own GPT
    classes carry a port (the "flags" port: no generated model module, so a cap of the logits goes into
    megatron/model/gpt_model.py): `post_language_model_processing` computes the logits under the `else:`
    of an `if` whose branch takes the loss of the hidden states in chunks and returns it without ever
    holding the logits (microsoft's FPDT sequence-parallel loss), and GPTModelPipe's head is the tied
    embedding with a `forward_fn` of __init__ calling parallel_lm_logits, followed by its fp32 conversion.
    The sample tree has the second as it is; this variant adds the first (the chunked loss is our own:
    the cross entropy of the logits one chunk of positions at a time, switched on by an attribute).
    """
    gpt = "megatron/model/gpt_model.py"
    edit(root, gpt,
         "    output = parallel_lm_logits(\n"
         "        lm_output,\n"
         "        logit_weights,\n"
         "        parallel_output)\n",
         "    if getattr(get_args(), 'chunked_logits_loss', False):\n"
         "        # the loss of the hidden states a chunk of positions at a time, never all the logits at once\n"
         "        losses = [mpu.vocab_parallel_cross_entropy(\n"
         "            parallel_lm_logits(hidden, logit_weights, parallel_output).float(), chunk)\n"
         "            for hidden, chunk in zip(lm_output.split(4, dim=1), labels.split(4, dim=1))]\n"
         "        return torch.cat(losses, dim=1)\n"
         "    else:\n"
         "        output = parallel_lm_logits(\n"
         "            lm_output,\n"
         "            logit_weights,\n"
         "            parallel_output)\n")


# -- 13. a rotary embedding of the tree's own, built once and handed to every layer ---------------------

HANDED_ROTARY = '''
    """This tree's rotary embedding: built once by the language model, its angles handed to every layer."""

    import torch

    # cos and sin of the last angles, kept between calls (computed again for another length)
    cos_cached = None
    sin_cached = None


    class RotaryEmbedding(torch.nn.Module):
        def __init__(self, dim, theta=10000):
            super().__init__()
            self.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))

        def forward(self, max_seq_len, offset=0):
            positions = torch.arange(max_seq_len, device=self.inv_freq.device).float() + offset
            angles = torch.outer(positions, self.inv_freq)
            return torch.cat((angles, angles), dim=-1)[:, None, None, :]  # [s, 1, 1, dim]


    def _rotate_half(x):
        first, second = x.chunk(2, dim=-1)
        return torch.cat((-second, first), dim=-1)


    def apply_rotary_pos_emb(t, freqs):
        """t [s, b, np, hn] rotated by the angles freqs [s, 1, 1, hn]."""
        global cos_cached, sin_cached
        if cos_cached is None or sin_cached is None or t.shape[0] != cos_cached.shape[0]:
            cos_cached = freqs[:t.shape[0]].cos().to(t.dtype)
            sin_cached = freqs[:t.shape[0]].sin().to(t.dtype)
        return t * cos_cached + _rotate_half(t) * sin_cached
'''


def handed_rotary(root: Path) -> None:
    """A rotary embedding of the tree's own, built once and its angles handed to every layer, like
    microsoft/Megatron-DeepSpeed HEAD: `--use-rotary-position-embeddings` and
    `--rotary-position-embeddings-theta` (dest rope_theta); the language model builds
    `self.rotary_pos_emb = RotaryEmbedding(head size, theta=args.rope_theta)` once and hands its angles
    (`rotary_pos_emb=`) to the transformer, which hands them to every layer and the layer to its
    attention, whose forward rotates query and key with `apply_rotary_pos_emb`; the pipe's layers read
    `args.rotary_pos_emb` (the entry point's). Its apply_rotary_pos_emb caches cos and sin in module
    globals and computes them again only for another length, as microsoft's does. The activation-
    checkpointed path and the cross attention do not rotate here; the learned position table stays.
    """
    add(root, "megatron/model/rotary_pos_embedding.py", HANDED_ROTARY)
    edit(root, "megatron/arguments.py",
         "    group.add_argument('--num-layers', type=int, default=None,\n",
         "    group.add_argument('--use-rotary-position-embeddings', action='store_true',\n"
         "                       help='Rotary positions on query and key.')\n"
         "    group.add_argument('--rotary-position-embeddings-theta', type=int, default=10000, dest='rope_theta',\n"
         "                       help='Base of the rotary embedding.')\n"
         "    group.add_argument('--num-layers', type=int, default=None,\n")
    lm = "megatron/model/language_model.py"
    edit(root, lm, "from megatron.model.transformer import ParallelTransformer\n",
         "from megatron.model.transformer import ParallelTransformer\n"
         "from .rotary_pos_embedding import RotaryEmbedding\n")
    edit(root, lm,
         "            num_experts=self.num_experts)\n"
         "        self._encoder_key = 'encoder'\n",
         "            num_experts=self.num_experts)\n"
         "        self._encoder_key = 'encoder'\n"
         "        # rotary positions: built once, the angles handed to every layer\n"
         "        self.use_rotary_position_embeddings = args.use_rotary_position_embeddings\n"
         "        if args.use_rotary_position_embeddings:\n"
         "            self.seq_length = args.seq_length\n"
         "            head = args.kv_channels or args.hidden_size // args.num_attention_heads\n"
         "            self.rotary_pos_emb = RotaryEmbedding(head, theta=args.rope_theta)\n")
    edit(root, lm,
         "            encoder_output, *moe_losses = self.encoder(\n"
         "                encoder_input,\n"
         "                enc_attn_mask,\n"
         "                layer_past=layer_past,\n"
         "                get_key_value=get_key_value)\n",
         "            rotary_pos_emb = None\n"
         "            if self.use_rotary_position_embeddings:\n"
         "                rotary_pos_emb = self.rotary_pos_emb(self.seq_length)\n"
         "            encoder_output, *moe_losses = self.encoder(\n"
         "                encoder_input,\n"
         "                enc_attn_mask,\n"
         "                layer_past=layer_past,\n"
         "                get_key_value=get_key_value,\n"
         "                rotary_pos_emb=rotary_pos_emb)\n")
    transformer = "megatron/model/transformer.py"
    edit(root, transformer, "from megatron.model.utils import attention_mask_func, openai_gelu, erf_gelu\n",
         "from megatron.model.utils import attention_mask_func, openai_gelu, erf_gelu\n"
         "from megatron.model.rotary_pos_embedding import apply_rotary_pos_emb\n")
    edit(root, transformer,
         "    def forward(self, hidden_states, attention_mask, layer_past=None,\n"
         "                get_key_value=False, encoder_output=None):\n"
         "        # input: [sq, b, h]\n",
         "    def forward(self, hidden_states, attention_mask, layer_past=None,\n"
         "                get_key_value=False, encoder_output=None, rotary_pos_emb=None):\n"
         "        # input: [sq, b, h]\n")
    edit(root, transformer,
         "        # ---- incremental decoding cache ------------------------------------\n",
         "        # rotary positions, the angles the language model handed over\n"
         "        if rotary_pos_emb is not None:\n"
         "            query_layer = apply_rotary_pos_emb(query_layer, rotary_pos_emb)\n"
         "            key_layer = apply_rotary_pos_emb(key_layer, rotary_pos_emb)\n"
         "\n"
         "        # ---- incremental decoding cache ------------------------------------\n")
    edit(root, transformer,
         "                layer_past=None, get_key_value=False):\n"
         "        # hidden_states: [s, b, h]\n",
         "                layer_past=None, get_key_value=False, rotary_pos_emb=None):\n"
         "        # hidden_states: [s, b, h]\n")
    edit(root, transformer,
         "                           layer_past=layer_past,\n"
         "                           get_key_value=get_key_value)\n",
         "                           layer_past=layer_past,\n"
         "                           get_key_value=get_key_value,\n"
         "                           rotary_pos_emb=rotary_pos_emb)\n")
    edit(root, transformer,
         "            attention_mask = self._args.attn_mask\n"
         "            return super().forward(hidden_states, attention_mask, **kwargs)[0]\n",
         "            attention_mask = self._args.attn_mask\n"
         "            rotary_pos_emb = self._args.rotary_pos_emb if self._args.use_rotary_position_embeddings else None\n"
         "            return super().forward(hidden_states, attention_mask, rotary_pos_emb=rotary_pos_emb, **kwargs)[0]\n")
    edit(root, transformer,
         "                get_key_value=False, encoder_output=None,\n"
         "                enc_dec_attn_mask=None):\n",
         "                get_key_value=False, encoder_output=None,\n"
         "                enc_dec_attn_mask=None, rotary_pos_emb=None):\n")
    edit(root, transformer,
         "                    layer_past=past,\n"
         "                    get_key_value=get_key_value)\n",
         "                    layer_past=past,\n"
         "                    get_key_value=get_key_value,\n"
         "                    rotary_pos_emb=rotary_pos_emb)\n")


# -- the tree's own switch for the linears' bias ----------------------------------------------------


def own_bias_switch(root: Path) -> None:
    """A tree that implements "no bias in the linears" itself, Megatron-LM's way, like
    microsoft/Megatron-DeepSpeed f4157bea (HabanaAI/Megatron-DeepSpeed 891d6db9 and argonne-lcf
    ffa3456d alike): `--disable-bias-linear` (store_false, dest `add_bias_linear`) in the training
    group; every tensor-parallel linear of the MLP and the attention takes `bias=args.add_bias_linear`;
    the bias path lets a None bias through (the MLP adds its first projection's bias only when there
    is one, the layer broadcasts a bias only when there is one, the bias-dropout-add helpers take an
    Optional bias and add it only when there is one).
    """
    edit(root, "megatron/arguments.py",
         "    group = parser.add_argument_group(title='training')\n",
         "    group = parser.add_argument_group(title='training')\n"
         "    group.add_argument('--disable-bias-linear', action='store_false', dest='add_bias_linear',\n"
         "                       help='No bias in the linear layers of the attention and the MLP.')\n")
    transformer = "megatron/model/transformer.py"
    mlp_in = "            init_method=init_method,\n            skip_bias_add=True)"
    mlp_out = "            init_method=output_layer_init_method,\n            skip_bias_add=True)\n\n    def forward(self, hidden_states):"
    fused = "                3 * projection_size,\n                gather_output=False,\n                init_method=init_method)"
    query = "                projection_size,\n                gather_output=False,\n                init_method=init_method)"
    key_value = "                2 * projection_size,\n                gather_output=False,\n                init_method=init_method)"
    dense = "            init_method=output_layer_init_method,\n            skip_bias_add=True)\n\n    def forward(self, hidden_states, attention_mask"
    for linear in (mlp_in, mlp_out, fused, query, key_value, dense):
        head, _, tail = linear.partition(")")
        last = head.rsplit("\n", 1)[-1]
        pad = last[: len(last) - len(last.lstrip())]
        edit(root, transformer, linear, f"{head},\n{pad}bias=args.add_bias_linear){tail}")
    edit(root, transformer,
         "            intermediate_parallel = \\\n                self.activation_func(intermediate_parallel + bias_parallel)\n",
         "            if bias_parallel is not None:\n"
         "                intermediate_parallel = intermediate_parallel + bias_parallel\n"
         "            intermediate_parallel = self.activation_func(intermediate_parallel)\n")
    edit(root, transformer,
         "    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor\n"
         "    out = torch.nn.functional.dropout(x + bias, p=prob, training=training)\n",
         "    # type: (Tensor, Optional[Tensor], Tensor, float, bool) -> Tensor\n"
         "    if bias is not None:\n"
         "        x = x + bias\n"
         "    out = torch.nn.functional.dropout(x, p=prob, training=training)\n")
    edit(root, transformer, "import math\n", "import math\nfrom typing import Optional\n")
    path = root / transformer
    text = path.read_text()
    scripted = "    # type: (Tensor, Tensor, Tensor, float) -> Tensor\n"
    assert text.count(scripted) == 2
    text = text.replace(scripted, "    # type: (Tensor, Optional[Tensor], Tensor, float) -> Tensor\n")
    for name, count in (("attention_bias", 2), ("mlp_bias", 1)):
        assert text.count(f"{name}.expand_as(residual),") == count
        text = text.replace(f"{name}.expand_as(residual),", f"{name}.expand_as(residual) if {name} is not None else None,")
    path.write_text(text)


VARIANTS: dict[str, Callable[[Path], None]] = {
    "defaults_in_initialize": defaults_in_initialize,
    "own_llama_files": own_llama_files,
    "own_pretrain_llama": own_pretrain_llama,
    "glu_gate_second": glu_gate_second,
    "hand_port_separate_gate": hand_port_separate_gate,
    "extra_state_linears": extra_state_linears,
    "rmsnorm_apex_only": rmsnorm_apex_only,
    "blocked_qkv_thirds": blocked_qkv_thirds,
    "apex_at_startup": apex_at_startup,
    "own_rmsnorm_apex_fallback": own_rmsnorm_apex_fallback,
    "own_swiglu_flag": own_swiglu_flag,
    "norm_type_branches": norm_type_branches,
    "chunked_logits_loss": chunked_logits_loss,
    "handed_rotary": handed_rotary,
    "own_bias_switch": own_bias_switch,
}


def make_variant(name: str, dest: Path) -> Path:
    """A copy of the sample tree at dest, changed into the named variant."""
    copy_sample(dest)
    VARIANTS[name](dest)
    return dest
