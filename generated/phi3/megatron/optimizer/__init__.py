# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Optimizer construction.  DeepSpeed wraps what is returned here."""

from torch.optim import AdamW as Adam
from torch.optim import SGD

from megatron import get_args
from megatron.model import LayerNorm, RMSNorm


def _get_params_for_weight_decay_optimization(modules):
    """Two parameter groups: decayed weights, and undecayed norms/biases."""
    args = get_args()

    weight_decay_params = {'params': [], 'name': 'weight_decay_params'}
    no_weight_decay_params = {'params': [], 'weight_decay': 0.0, 'name': 'no_weight_decay_params'}

    for module in modules:
        for module_ in module.modules():
            if isinstance(module_, (LayerNorm, RMSNorm)):
                no_weight_decay_params['params'].extend(
                    p for p in module_._parameters.values() if p is not None)
            else:
                for name, p in module_._parameters.items():
                    if p is None:
                        continue
                    if name == 'bias':
                        no_weight_decay_params['params'].append(p)
                    else:
                        weight_decay_params['params'].append(p)
    return weight_decay_params, no_weight_decay_params


def get_megatron_optimizer(model):
    args = get_args()

    param_groups = _get_params_for_weight_decay_optimization(model)
    # A parameter shared by several modules must be listed only once.
    seen = set()
    for group in param_groups:
        unique = []
        for p in group['params']:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        group['params'] = unique
    param_groups = tuple(g for g in param_groups if g['params'])

    if args.cpu_optimizer:
        assert args.optimizer == 'adam', '--cpu-optimizer needs --optimizer adam'
        if args.cpu_torch_adam:
            cpu_adam_optimizer = Adam
        else:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            cpu_adam_optimizer = DeepSpeedCPUAdam
        optimizer = cpu_adam_optimizer(param_groups,
                                       lr=args.lr,
                                       weight_decay=args.weight_decay)
    elif args.optimizer == 'adam':
        optimizer = Adam(param_groups,
                         lr=args.lr,
                         weight_decay=args.weight_decay,
                         betas=(args.adam_beta1, args.adam_beta2),
                         eps=args.adam_eps)
    elif args.optimizer == 'sgd':
        optimizer = SGD(param_groups,
                        lr=args.lr,
                        weight_decay=args.weight_decay,
                        momentum=args.sgd_momentum)
    else:
        raise Exception(f'{args.optimizer} optimizer is not supported.')

    if args.deepspeed:
        return optimizer

    raise NotImplementedError(
        'the sample tree trains only through DeepSpeed (pass --deepspeed '
        '--deepspeed_config <json>); Megatron\'s own fp16/DDP optimizer '
        'wrappers are not included')
