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
    if args.multi_latent_attention:
        assert args.kv_lora_rank and args.qk_head_dim and args.qk_pos_emb_head_dim and args.v_head_dim, \
        'latent attention: --kv-lora-rank, --qk-head-dim, --qk-pos-emb-head-dim, --v-head-dim are needed'
        assert args.qk_pos_emb_head_dim % 2 == 0, \
        'latent attention: --qk-pos-emb-head-dim must be even (rotary pairs)'
    if args.no_bias:
        # the bias-gelu fusion adds a bias: there is none
        args.bias_gelu_fusion = False
    if max(args.num_experts) > 1:
        assert len(args.num_experts) in (1, args.num_layers), \
        'mixture of experts: --num-experts takes one count for every layer, or one per layer'
        assert args.no_pipeline_parallel, \
        'mixture of experts: the model runs on the plain DeepSpeed engine; pass --no-pipeline-parallel'
        assert all(n % args.moe_expert_parallel_size == 0 for n in args.num_experts), \
        'mixture of experts: --moe-expert-parallel-size must divide the expert counts'
        assert args.data_parallel_size % args.moe_expert_parallel_size == 0, \
        'mixture of experts: --moe-expert-parallel-size must divide the data-parallel size'
        assert 1 <= args.topk <= min(n for n in args.num_experts if n > 1), \
        'mixture of experts: --topk must be 1 or more (and no more than the experts)'

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
    group.add_argument('--rope-scaling-type',
                       type=str,
                       default='none',
                       choices=['none', 'llama3', 'linear', 'yarn', 'longrope'],
                       help='Rotary frequency scaling for long contexts: none, llama3 (LLaMA-3.1), linear, yarn or longrope (Phi-3.5).')
    group.add_argument('--rope-scaling-factor',
                       type=float,
                       default=8.0,
                       help='Rotary scaling: how much slower the long wavelengths turn (LLaMA-3.1: 8).')
    group.add_argument('--rope-scaling-low-freq-factor',
                       type=float,
                       default=1.0,
                       help='Rotary scaling: wavelengths beyond original context / this are scaled (LLaMA-3.1: 1).')
    group.add_argument('--rope-scaling-high-freq-factor',
                       type=float,
                       default=4.0,
                       help='Rotary scaling: wavelengths below original context / this are kept (LLaMA-3.1: 4).')
    group.add_argument('--rope-scaling-original-max-positions',
                       type=int,
                       default=8192,
                       help='Rotary scaling: the context the model was first trained on.')
    group.add_argument('--rope-scaling-attention-factor',
                       type=float,
                       default=None,
                       help="Rotary scaling (yarn, longrope): the factor on cos and sin; default from the factor (and yarn's mscale, longrope's original context).")
    group.add_argument('--rope-scaling-beta-fast',
                       type=float,
                       default=32.0,
                       help='Rotary scaling (yarn): rotations of the original context below which frequencies are kept.')
    group.add_argument('--rope-scaling-beta-slow',
                       type=float,
                       default=1.0,
                       help='Rotary scaling (yarn): rotations above which frequencies are interpolated.')
    group.add_argument('--rope-scaling-mscale',
                       type=float,
                       default=None,
                       help='Rotary scaling (yarn): mscale of the attention factor (with mscale_all_dim).')
    group.add_argument('--rope-scaling-mscale-all-dim',
                       type=float,
                       default=None,
                       help='Rotary scaling (yarn): mscale_all_dim of the attention factor (with mscale).')
    group.add_argument('--rope-scaling-truncate',
                       type=int,
                       default=1,
                       help='Rotary scaling (yarn): 1 rounds the interpolation range to whole dimensions, 0 does not.')
    group.add_argument('--layernorm-type',
                       type=str,
                       default='layernorm',
                       choices=['layernorm', 'rmsnorm'],
                       help='Norm at every transformer norm site, the final norm included.')
    group.add_argument('--multi-latent-attention',
                       action='store_true',
                       help='Multi-head latent attention (DeepSeek): keys and values from a compressed latent.')
    group.add_argument('--kv-lora-rank',
                       type=int,
                       default=None,
                       help='Latent attention: numbers per token in the compressed key/value latent.')
    group.add_argument('--q-lora-rank',
                       type=int,
                       default=None,
                       help='Latent attention: numbers in the compressed query (default: a plain query projection).')
    group.add_argument('--qk-head-dim',
                       type=int,
                       default=None,
                       help='Latent attention: the part of each query and key head without rotary.')
    group.add_argument('--qk-pos-emb-head-dim',
                       type=int,
                       default=None,
                       help='Latent attention: the rotary part of each query head and of the key all heads share.')
    group.add_argument('--v-head-dim',
                       type=int,
                       default=None,
                       help='Latent attention: the size of each value head.')
    group.add_argument('--no-bias',
                       action='store_true',
                       help='No bias in any linear layer (attention, MLP).')
    group.add_argument('--topk',
                       type=int,
                       default=1,
                       help='Experts each token is routed to (top-k of the router).')
    group.add_argument('--moe-norm-topk-prob',
                       action='store_true',
                       help='The router weighs each token\'s top-k experts by their probabilities renormalised to sum to 1 (else by the probabilities).')
    group.add_argument('--moe-ffn-hidden-size',
                       type=int,
                       default=None,
                       help='Each expert\'s MLP width (default: --ffn-hidden-size).')
    group.add_argument('--expert-interval',
                       type=int,
                       default=1,
                       help='Experts in every expert-interval-th layer (layer number divisible by it); a dense MLP in the others.')
    group.add_argument('--moe-dense-layers',
                       type=int,
                       nargs='*',
                       default=[],
                       help='Layers (0-based) that keep a dense MLP whatever --num-experts says.')
    group.add_argument('--moe-router-score-function',
                       type=str,
                       default='softmax',
                       choices=['softmax', 'sigmoid'],
                       help='The router\'s expert scores: softmax over the experts, or each logit\'s sigmoid.')
    group.add_argument('--moe-router-enable-expert-bias',
                       action='store_true',
                       help='A correction bias per expert, added to the scores to choose the experts (not to weigh them).')
    group.add_argument('--moe-router-num-groups',
                       type=int,
                       default=None,
                       help='Expert groups: each token chooses among the experts of its best --moe-router-group-topk groups.')
    group.add_argument('--moe-router-group-topk',
                       type=int,
                       default=None,
                       help='Groups each token chooses its experts in.')
    group.add_argument('--moe-router-group-score',
                       type=str,
                       default='max',
                       choices=['max', 'top2_sum'],
                       help='A group\'s score: its best expert\'s, or the sum of its two best (biased) ones.')
    group.add_argument('--moe-router-topk-scaling-factor',
                       type=float,
                       default=1.0,
                       help='The routed experts\' weights times this (routed_scaling_factor).')
    group.add_argument('--moe-router-load-balancing-type',
                       type=str,
                       default='aux_loss',
                       choices=['aux_loss', 'seq_aux_loss'],
                       help='The load-balancing loss: pooled over the layers (aux_loss), or DeepSeek\'s per sequence and layer (seq_aux_loss); weighed by --moe-loss-coeff.')
    group.add_argument('--moe-shared-expert-intermediate-size',
                       type=int,
                       default=None,
                       help='Shared experts: a dense MLP this wide beside the routed experts of every MoE layer.')
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
    group.add_argument('--moe-loss-coeff',
                       type=float,
                       default=0.01,
                       help='Weight of the router load-balancing loss in the training loss.')
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
    group.add_argument('--moe-expert-parallel-size',
                       type=int,
                       default=1,
                       help='Ranks the experts of a layer are sharded over (of the data-parallel ones).')
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
                                'TokenizerJson'],
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
