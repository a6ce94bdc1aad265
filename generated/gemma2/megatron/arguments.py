# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Command-line arguments of the sample tree."""

import argparse
import os

import torch
import deepspeed


def parse_args(extra_args_provider=None, defaults={},
               ignore_unknown_args=False):
    """Build the parser, parse the command line and derive dependent values."""
    parser = argparse.ArgumentParser(
        description='Sample Megatron-DeepSpeed arguments', allow_abbrev=False)

    # Argument groups, one function each.
    parser = _add_network_size_args(parser)
    parser = _add_regularization_args(parser)
    parser = _add_training_args(parser)
    parser = _add_initialization_args(parser)
    parser = _add_learning_rate_args(parser)
    parser = _add_checkpointing_args(parser)
    parser = _add_mixed_precision_args(parser)
    parser = _add_distributed_args(parser)
    parser = _add_validation_args(parser)
    parser = _add_data_args(parser)
    parser = _add_logging_args(parser)
    parser = _add_zero_args(parser)
    parser = _add_activation_checkpoint_args(parser)

    # Script-specific arguments.
    if extra_args_provider is not None:
        parser = extra_args_provider(parser)

    parser = deepspeed.add_config_arguments(parser)

    if ignore_unknown_args:
        args, _ = parser.parse_known_args()
    else:
        args = parser.parse_args()

    # DeepSpeed's pipeline engine is used unless explicitly switched off.
    args.ds_pipeline_enabled = not args.no_pipeline_parallel

    # World layout comes from the launcher's environment.
    args.rank = int(os.getenv('RANK', '0'))
    args.world_size = int(os.getenv('WORLD_SIZE', '1'))
    args.tensor_model_parallel_size = min(args.tensor_model_parallel_size,
                                          args.world_size)
    assert args.world_size % args.tensor_model_parallel_size == 0, \
        f'world size {args.world_size} is not a multiple of the tensor ' \
        f'parallel size {args.tensor_model_parallel_size}'
    args.pipeline_model_parallel_size = min(
        args.pipeline_model_parallel_size,
        args.world_size // args.tensor_model_parallel_size)
    if args.no_pipeline_parallel:
        assert args.pipeline_model_parallel_size == 1, \
            '--no-pipeline-parallel needs a pipeline parallel size of 1'
    model_parallel_size = args.pipeline_model_parallel_size * \
        args.tensor_model_parallel_size
    assert args.world_size % model_parallel_size == 0, \
        f'world size {args.world_size} is not a multiple of tensor x ' \
        f'pipeline parallel size {model_parallel_size}'
    args.data_parallel_size = args.world_size // model_parallel_size
    if args.rank == 0:
        print(f'world size {args.world_size}: data parallel '
              f'{args.data_parallel_size}, tensor parallel '
              f'{args.tensor_model_parallel_size}, pipeline parallel '
              f'{args.pipeline_model_parallel_size}', flush=True)

    # Script defaults only fill in what the command line left unset.
    for key in defaults:
        if getattr(args, key) is not None:
            if args.rank == 0 and getattr(args, key) != defaults[key]:
                print(f'WARNING: {key}={getattr(args, key)} from the command '
                      f'line wins over the script default {defaults[key]}',
                      flush=True)
        else:
            setattr(args, key, defaults[key])

    if args.activation_func_type in ('swiglu', 'geglu'):
        assert not args.openai_gelu, '--openai-gelu cannot be combined with a gated activation'
        assert not args.onnx_safe, '--onnx-safe cannot be combined with a gated activation'
        # the bias-gelu fusion fuses a plain gelu: a gated MLP has none
        args.bias_gelu_fusion = False
    if args.position_embedding_type == 'rotary' and args.max_position_embeddings is None:
        # rotary has no learned position table: the sequence length bounds positions
        args.max_position_embeddings = args.seq_length if args.seq_length is not None else args.encoder_seq_length
    if args.position_embedding_type == 'rotary' and args.reset_position_ids and args.pipeline_model_parallel_size > 1:
        # the position ids reach the first pipeline stage only; rotary needs them in every one
        raise ValueError('--reset-position-ids with rotary positions needs '
                         '--pipeline-model-parallel-size 1')
    if args.num_key_value_heads is not None:
        assert args.num_attention_heads % args.num_key_value_heads == 0, \
        'grouped-query attention: --num-attention-heads must be a multiple of --num-key-value-heads'
        assert args.num_key_value_heads % args.tensor_model_parallel_size == 0, \
        'grouped-query attention: the tensor-parallel size must divide --num-key-value-heads'
    if args.sliding_window is not None:
        assert args.sliding_window >= 0, \
        'sliding-window attention: --sliding-window is the number of positions a query sees (0: all)'
    if args.sliding_window_pattern is not None:
        assert args.sliding_window_pattern >= 2, \
        'sliding-window attention: --sliding-window-pattern N puts every N-th layer out of the window (N >= 2)'
    if args.no_bias:
        # the bias-gelu fusion adds a bias: there is none
        args.bias_gelu_fusion = False

    # Batch sizes.
    assert args.micro_batch_size is not None and args.micro_batch_size > 0
    if args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * args.data_parallel_size
    assert args.global_batch_size > 0
    args.virtual_pipeline_model_parallel_size = None

    # Parameter dtype.
    args.params_dtype = torch.float
    if args.fp16:
        assert not args.bf16
        args.params_dtype = torch.half
    if args.bf16:
        assert not args.fp16
        args.params_dtype = torch.bfloat16
    if args.rank == 0:
        print(f'parameters are kept in {args.params_dtype}', flush=True)

    if args.dataloader_type is None:
        args.dataloader_type = 'single'

    # Progress counters (restored from checkpoints).
    args.consumed_train_samples = 0
    args.consumed_valid_samples = 0
    args.consumed_train_tokens = 0

    # Iteration-based and sample-based schedules are exclusive.
    if args.train_iters:
        assert args.train_samples is None, 'use iterations or samples, not both'
        assert args.lr_decay_samples is None
        assert args.lr_warmup_samples == 0
    if args.train_samples:
        assert args.train_iters is None, 'use iterations or samples, not both'
        assert args.lr_decay_iters is None
        assert args.lr_warmup_iters == 0

    # Model shape.
    required_args = ['num_layers', 'hidden_size', 'num_attention_heads',
                     'max_position_embeddings']
    for req_arg in required_args:
        _check_arg_is_not_none(args, req_arg)

    if args.ffn_hidden_size is None:
        args.ffn_hidden_size = 4 * args.hidden_size

    if args.kv_channels is None:
        assert args.hidden_size % args.num_attention_heads == 0
        args.kv_channels = args.hidden_size // args.num_attention_heads

    if args.seq_length is not None:
        assert args.encoder_seq_length is None
        args.encoder_seq_length = args.seq_length
    else:
        assert args.encoder_seq_length is not None
        args.seq_length = args.encoder_seq_length

    if args.seq_length is not None:
        assert args.max_position_embeddings >= args.seq_length
    if args.decoder_seq_length is not None:
        assert args.max_position_embeddings >= args.decoder_seq_length
    if args.lr is not None:
        assert args.min_lr <= args.lr
    if args.save is not None:
        assert args.save_interval is not None
    if args.fp16_lm_cross_entropy:
        assert args.fp16, '--fp16-lm-cross-entropy needs --fp16'
    if args.fp32_residual_connection:
        assert args.fp16 or args.bf16, \
            '--fp32-residual-connection needs --fp16 or --bf16'
    assert all(n == 1 for n in args.num_experts), \
        'this tree has no mixture-of-experts layers'

    _print_args(args)
    return args


def _print_args(args):
    if args.rank != 0:
        return
    print('-------------------- arguments --------------------', flush=True)
    for name in sorted(vars(args), key=str.lower):
        print(f'  {name} {"." * max(2, 44 - len(name))} {getattr(args, name)}',
              flush=True)
    print('---------------- end of arguments -----------------', flush=True)


def _check_arg_is_not_none(args, arg):
    assert getattr(args, arg) is not None, f'--{arg.replace("_", "-")} is required'


def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--num-layers', type=int, default=None,
                       help='Transformer layer count.')
    group.add_argument('--num-experts', type=int, nargs='+', default=[1, ],
                       help='Experts per MoE layer (only 1 is supported).')
    group.add_argument('--hidden-size', type=int, default=None,
                       help='Width of the residual stream.')
    group.add_argument('--ffn-hidden-size', type=int, default=None,
                       help='MLP inner width; 4 * hidden size when unset.')
    group.add_argument('--num-attention-heads', type=int, default=None,
                       help='Attention heads per layer.')
    group.add_argument('--kv-channels', type=int, default=None,
                       help='Per-head width; hidden size / heads when unset.')
    group.add_argument('--max-position-embeddings', type=int, default=None,
                       help='Rows of the position embedding table.')
    group.add_argument('--make-vocab-size-divisible-by', type=int, default=128,
                       help='Pad the vocabulary to a multiple of this '
                       '(times the tensor parallel size).')
    group.add_argument('--layernorm-epsilon', type=float, default=1e-5,
                       help='Epsilon of the layer norms.')
    group.add_argument('--apply-residual-connection-post-layernorm',
                       action='store_true',
                       help='Take the residual after the layer norm.')
    group.add_argument('--openai-gelu', action='store_true',
                       help='Use the tanh approximation of GeLU.')
    group.add_argument('--onnx-safe', type=bool, required=False,
                       help='Use the erf form of GeLU (ONNX friendly).')
    group.add_argument('--activation-func-type',
                       type=str,
                       default='gelu',
                       choices=['gelu', 'swiglu', 'geglu'],
                       help='Activation of the MLP: gelu, or a gated one on a fused gate+up projection: swiglu (silu(gate) * up) or geglu (gelu(gate) * up, GELU\'s tanh approximation).')
    group.add_argument('--position-embedding-type',
                       type=str,
                       default='learned',
                       choices=['learned', 'rotary'],
                       help='Position embedding: a learned absolute table, or rotary (RoPE) on query and key.')
    group.add_argument('--rope-theta',
                       type=float,
                       default=10000.0,
                       help='Base of the rotary embedding frequencies.')
    group.add_argument('--layernorm-type',
                       type=str,
                       default='layernorm',
                       choices=['layernorm', 'rmsnorm'],
                       help='Norm at every transformer norm site, the final norm included.')
    group.add_argument('--rmsnorm-weight-offset',
                       type=float,
                       default=0.0,
                       help='RMSNorm scales by (offset + weight), in fp32: 0 (LLaMA), 1 (Gemma); the weight starts at 1 - offset.')
    group.add_argument('--norm-placement',
                       type=str,
                       default='pre',
                       choices=['pre', 'sandwich', 'post'],
                       help='Where each layer normalises: before attention and MLP (pre), before and after both, the outputs normalised before each residual add (sandwich: Gemma-2/3), or the outputs only (post: OLMo-2).')
    group.add_argument('--num-key-value-heads',
                       type=int,
                       default=None,
                       help='Key/value heads of grouped-query attention (1: multi-query); default: one per attention head.')
    group.add_argument('--sliding-window',
                       type=int,
                       default=None,
                       help='Sliding-window attention: a query sees only the last N positions, itself included (Mistral: 4096); 0 or unset: all.')
    group.add_argument('--sliding-window-pattern',
                       type=int,
                       default=None,
                       help='Sliding-window attention on all layers but every N-th, which attends to every position (Gemma-2: 2, Gemma-3: 6); unset: the window on every layer.')
    group.add_argument('--attention-softcap',
                       type=float,
                       default=None,
                       help='Soft-capped attention scores, cap * tanh(scores / cap), before the mask and softmax (Gemma-2: 50); unset: none.')
    group.add_argument('--query-pre-attn-scalar',
                       type=int,
                       default=None,
                       help='Attention scores are scaled by 1/sqrt(this number) instead of 1/sqrt(the head size) (Gemma-2/3); unset: the head size.')
    group.add_argument('--no-bias',
                       action='store_true',
                       help='No bias in any linear layer (attention, MLP).')
    group.add_argument('--final-logit-softcap',
                       type=float,
                       default=None,
                       help='Soft-capped logits, cap * tanh(logits / cap), before the loss (Gemma-2: 30); unset: none.')
    group.add_argument('--scale-embeddings',
                       action='store_true',
                       help='Multiply the word embeddings by sqrt(hidden size), the factor in their dtype (Gemma).')
    return parser


def _add_regularization_args(parser):
    group = parser.add_argument_group(title='regularization')
    group.add_argument('--attention-dropout', type=float, default=0.1,
                       help='Dropout on attention probabilities.')
    group.add_argument('--hidden-dropout', type=float, default=0.1,
                       help='Dropout on embeddings and residual branches.')
    group.add_argument('--weight-decay', type=float, default=0.01,
                       help='Weight decay (not applied to biases and norms).')
    group.add_argument('--clip-grad', type=float, default=1.0,
                       help='Global gradient-norm clipping threshold.')
    group.add_argument('--adam-beta1', type=float, default=0.9,
                       help='Adam beta1.')
    group.add_argument('--adam-beta2', type=float, default=0.999,
                       help='Adam beta2.')
    group.add_argument('--adam-eps', type=float, default=1e-08,
                       help='Adam epsilon.')
    group.add_argument('--sgd-momentum', type=float, default=0.9,
                       help='SGD momentum.')
    return parser


def _add_training_args(parser):
    group = parser.add_argument_group(title='training')
    group.add_argument('--micro-batch-size', type=int, default=None,
                       help='Samples per forward pass per model replica.')
    group.add_argument('--global-batch-size', type=int, default=None,
                       help='Samples per optimizer step over all replicas; '
                       'micro batch size * data parallel size when unset.')
    group.add_argument('--checkpoint-activations', action='store_true',
                       help='Recompute transformer layers in backward.')
    group.add_argument('--checkpoint-num-layers', type=int, default=1,
                       help='Layers per recomputed chunk.')
    group.add_argument('--train-iters', type=int, default=None,
                       help='Optimizer steps to train for.')
    group.add_argument('--train-samples', type=int, default=None,
                       help='Samples to train for (instead of --train-iters).')
    group.add_argument('--log-interval', type=int, default=100,
                       help='Iterations between timing reports.')
    group.add_argument('--exit-interval', type=int, default=None,
                       help='Save and stop once the iteration is a multiple '
                       'of this.')
    group.add_argument('--no-masked-softmax-fusion', action='store_false',
                       help='Do not fuse scaling, masking and softmax.',
                       dest='masked_softmax_fusion')
    group.add_argument('--no-bias-gelu-fusion', action='store_false',
                       help='Do not fuse the MLP bias add with GeLU.',
                       dest='bias_gelu_fusion')
    group.add_argument('--no-bias-dropout-fusion', action='store_false',
                       help='Do not fuse bias add, dropout and residual add.',
                       dest='bias_dropout_fusion')
    group.add_argument('--optimizer', type=str, default='adam',
                       choices=['adam', 'sgd'],
                       help='Optimizer.')
    group.add_argument('--dataloader-type', type=str, default=None,
                       choices=['single', 'cyclic'],
                       help='One ordered pass or repeated shuffled passes.')
    group.add_argument('--cpu-optimizer', action='store_true',
                       help='Use a CPU Adam implementation.')
    group.add_argument('--cpu_torch_adam', action='store_true',
                       help='With --cpu-optimizer, use torch AdamW.')
    group.add_argument('--no-pipeline-parallel', action='store_true',
                       help='Use the plain DeepSpeed engine instead of the '
                       'pipeline engine.')
    return parser


def _add_initialization_args(parser):
    group = parser.add_argument_group(title='initialization')
    group.add_argument('--seed', type=int, default=1234,
                       help='Seed for python, numpy and torch.')
    group.add_argument('--init-method-std', type=float, default=0.02,
                       help='Std of the normal weight initialisation.')
    return parser


def _add_learning_rate_args(parser):
    group = parser.add_argument_group(title='learning rate')
    group.add_argument('--lr', type=float, default=None,
                       help='Peak learning rate.')
    group.add_argument('--lr-decay-style', type=str, default='linear',
                       choices=['constant', 'linear', 'cosine'],
                       help='Shape of the decay after warmup.')
    group.add_argument('--lr-decay-iters', type=int, default=None,
                       help='Iterations to decay over (default: train iters).')
    group.add_argument('--lr-decay-samples', type=int, default=None,
                       help='Samples to decay over (default: train samples).')
    group.add_argument('--lr-warmup-fraction', type=float, default=None,
                       help='Warmup length as a fraction of the decay length.')
    group.add_argument('--lr-warmup-iters', type=int, default=0,
                       help='Linear warmup iterations.')
    group.add_argument('--lr-warmup-samples', type=int, default=0,
                       help='Linear warmup samples.')
    group.add_argument('--min-lr', type=float, default=0.0,
                       help='Floor of the learning rate.')
    group.add_argument('--override-lr-scheduler', action='store_true',
                       help='Ignore scheduler values stored in a checkpoint.')
    group.add_argument('--use-checkpoint-lr-scheduler', action='store_true',
                       help='Take scheduler values from the checkpoint.')
    return parser


def _add_checkpointing_args(parser):
    group = parser.add_argument_group(title='checkpointing')
    group.add_argument('--save', type=str, default=None,
                       help='Directory to write checkpoints to.')
    group.add_argument('--save-interval', type=int, default=None,
                       help='Iterations between checkpoints.')
    group.add_argument('--no-save-optim', action='store_true', default=None,
                       help='Leave the optimizer state out of checkpoints.')
    group.add_argument('--no-save-rng', action='store_true', default=None,
                       help='Leave RNG states out of checkpoints.')
    group.add_argument('--load', type=str, default=None,
                       help='Directory to resume from.')
    group.add_argument('--no-load-optim', action='store_true', default=None,
                       help='Do not restore the optimizer state.')
    group.add_argument('--no-load-rng', action='store_true', default=None,
                       help='Do not restore RNG states.')
    group.add_argument('--no-load-lr-state', action='store_true',
                       help='Do not restore the learning-rate scheduler.')
    group.add_argument('--finetune', action='store_true',
                       help='Load weights only and restart at iteration 0.')
    return parser


def _add_mixed_precision_args(parser):
    group = parser.add_argument_group(title='mixed precision')
    group.add_argument('--fp16', action='store_true',
                       help='Keep parameters in fp16.')
    group.add_argument('--bf16', action='store_true',
                       help='Keep parameters in bf16.')
    group.add_argument('--fp32-residual-connection', action='store_true',
                       help='Keep the residual stream in fp32.')
    group.add_argument('--no-query-key-layer-scaling', action='store_false',
                       help='Do not divide Q.K^T by the layer number.',
                       dest='apply_query_key_layer_scaling')
    group.add_argument('--attention-softmax-in-fp32', action='store_true',
                       help='Compute the attention softmax in fp32.')
    group.add_argument('--fp16-lm-cross-entropy', action='store_true',
                       help='Compute the LM cross entropy in fp16.')
    return parser


def _add_distributed_args(parser):
    group = parser.add_argument_group(title='distributed')
    group.add_argument('--tensor-model-parallel-size', type=int, default=1,
                       help='Tensor (intra-layer) parallel degree.')
    group.add_argument('--pipeline-model-parallel-size', type=int, default=1,
                       help='Pipeline (inter-layer) parallel degree.')
    group.add_argument('--distributed-backend', default='nccl',
                       choices=['nccl', 'gloo', 'ccl'],
                       help='torch.distributed backend.')
    group.add_argument('--DDP-impl', default='local',
                       choices=['local', 'torch'],
                       help='Data parallel wrapper outside DeepSpeed.')
    group.add_argument('--local_rank', type=int, default=None,
                       help='Set by some launchers.')
    group.add_argument('--use-cpu-initialization', action='store_true',
                       default=None,
                       help='Initialise full parallel weights on the CPU '
                       'and keep this rank\'s slice.')
    return parser


def _add_validation_args(parser):
    group = parser.add_argument_group(title='validation')
    group.add_argument('--eval-iters', type=int, default=100,
                       help='Batches per evaluation.')
    group.add_argument('--eval-interval', type=int, default=1000,
                       help='Iterations between evaluations.')
    return parser


def _add_data_args(parser):
    group = parser.add_argument_group(title='data and dataloader')
    group.add_argument('--data-path', nargs='*', default=None,
                       help='Prefix of the preprocessed dataset.')
    group.add_argument('--split', type=str, default='969, 30, 1',
                       help='Train/valid/test proportions, e.g. "90,5,5".')
    group.add_argument('--vocab-file', type=str, default=None,
                       help='Tokenizer vocabulary file.')
    group.add_argument('--merge-file', type=str, default=None,
                       help='BPE merges file.')
    group.add_argument('--vocab-extra-ids', type=int, default=0,
                       help='Extra sentinel tokens added to the vocabulary.')
    group.add_argument('--seq-length', type=int, default=None,
                       help='Training sequence length.')
    group.add_argument('--encoder-seq-length', type=int, default=None,
                       help='Alias of --seq-length (use one of them).')
    group.add_argument('--decoder-seq-length', type=int, default=None,
                       help='Decoder sequence length.')
    group.add_argument('--mmap-warmup', action='store_true',
                       help='Read the data files once before training.')
    group.add_argument('--num-workers', type=int, default=2,
                       help='DataLoader worker processes.')
    group.add_argument('--tokenizer-type', type=str,
                       default=None,
                       choices=['BertWordPieceLowerCase',
                                'BertWordPieceCase',
                                'GPT2BPETokenizer',
                                'SentencePieceTokenizer'],
                       help='Tokenizer implementation.')
    group.add_argument('--data-impl', type=str, default='infer',
                       choices=['lazy', 'cached', 'mmap', 'infer'],
                       help='Indexed dataset implementation.')
    group.add_argument('--reset-position-ids', action='store_true',
                       help='Restart position ids after each end-of-document.')
    group.add_argument('--reset-attention-mask', action='store_true',
                       help='Stop attention across end-of-document tokens.')
    group.add_argument('--eod-mask-loss', action='store_true',
                       help='No loss on end-of-document tokens.')
    group.add_argument('--tokenizer-model',
                       type=str,
                       default=None,
                       help='SentencePiece tokenizer model file.')
    group.add_argument('--add-bos-token',
                       action='store_true',
                       help='Start each document with the tokenizer\'s BOS token, as HF encodes it (LLaMA).')
    return parser


def _add_logging_args(parser):
    group = parser.add_argument_group(title='logging')
    group.add_argument('--log-params-norm', action='store_true',
                       help='Add the parameter L2 norm to the log line.')
    group.add_argument('--tensorboard-dir', type=str, default=None,
                       help='Accepted for compatibility; not used.')
    return parser


def _add_zero_args(parser):
    group = parser.add_argument_group('ZeRO configurations', 'configurations')
    group.add_argument('--zero-stage', type=int, default=1.0)
    group.add_argument('--zero-reduce-scatter', action='store_true',
                       help='Use reduce-scatter for gradients.')
    group.add_argument('--zero-contigious-gradients', action='store_true',
                       help='Keep gradients in one contiguous buffer.')
    group.add_argument('--zero-reduce-bucket-size', type=int, default=0.0)
    group.add_argument('--zero-allgather-bucket-size', type=int, default=0.0)
    group.add_argument('--remote-device', type=str, default='none',
                       choices=['none', 'cpu', 'nvme'],
                       help='Where ZeRO-3 keeps parameters at init.')
    group.add_argument('--use-pin-memory', action='store_true',
                       help='Pin host memory for ZeRO-3 parameters.')
    return parser


def _add_activation_checkpoint_args(parser):
    group = parser.add_argument_group('Activation Checkpointing',
                                      'Checkpointing Configurations')
    group.add_argument('--deepspeed-activation-checkpointing',
                       action='store_true',
                       help='Use DeepSpeed\'s activation checkpointing.')
    group.add_argument('--partition-activations', action='store_true',
                       help='Partition checkpointed activations across ranks.')
    group.add_argument('--contigious-checkpointing', action='store_true',
                       help='Keep checkpoints in contiguous memory.')
    group.add_argument('--checkpoint-in-cpu', action='store_true',
                       help='Move checkpointed activations to the CPU.')
    group.add_argument('--synchronize-each-layer', action='store_true',
                       help='Synchronise around every checkpointed layer.')
    group.add_argument('--profile-backward', action='store_true',
                       help='Profile the recomputation.')
    return parser
