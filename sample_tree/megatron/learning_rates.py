# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Learning-rate schedule: linear warmup, then constant/linear/cosine decay."""

import math

from megatron import print_rank_0


class AnnealingLR(object):
    """Step-counted schedule.  step(increment) advances by increment
    samples (Megatron counts samples, not optimizer steps)."""

    def __init__(self, optimizer, max_lr, min_lr,
                 warmup_steps, decay_steps, decay_style,
                 use_checkpoint_lr_scheduler=True,
                 override_lr_scheduler=False):
        self.optimizer = optimizer
        self.max_lr = float(max_lr)
        self.min_lr = min_lr
        assert 0.0 <= self.min_lr <= self.max_lr
        self.warmup_steps = warmup_steps
        self.num_steps = 0
        self.decay_steps = decay_steps
        assert self.decay_steps > 0
        assert self.warmup_steps < self.decay_steps
        self.decay_style = decay_style
        self.override_lr_scheduler = override_lr_scheduler
        self.use_checkpoint_lr_scheduler = use_checkpoint_lr_scheduler
        assert not (override_lr_scheduler and use_checkpoint_lr_scheduler), \
            'choose one of override / use-checkpoint for the lr scheduler'
        self.step(0)
        print_rank_0(f'> learning rate decay style: {self.decay_style}')

    def get_lr(self):
        if self.warmup_steps > 0 and self.num_steps <= self.warmup_steps:
            return self.max_lr * self.num_steps / self.warmup_steps
        if self.decay_style == 'constant':
            return self.max_lr
        if self.num_steps > self.decay_steps:
            return self.min_lr
        progress = (self.num_steps - self.warmup_steps) / \
            (self.decay_steps - self.warmup_steps)
        if self.decay_style == 'linear':
            coeff = 1.0 - progress
        elif self.decay_style == 'cosine':
            coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            raise Exception(f'{self.decay_style} decay style is not supported.')
        return self.min_lr + coeff * (self.max_lr - self.min_lr)

    def step(self, increment, token_num=None):
        self.num_steps += increment
        new_lr = self.get_lr()
        for group in self.optimizer.param_groups:
            group['lr'] = new_lr

    def state_dict(self):
        return {'max_lr': self.max_lr,
                'warmup_steps': self.warmup_steps,
                'num_steps': self.num_steps,
                'decay_style': self.decay_style,
                'decay_steps': self.decay_steps,
                'min_lr': self.min_lr}

    def _check_and_set(self, cls_value, sd_value, name):
        if self.override_lr_scheduler:
            print_rank_0(f' > overriding {name} with {cls_value}')
            return cls_value
        if not self.use_checkpoint_lr_scheduler:
            assert cls_value == sd_value, \
                f'AnnealingLR: {name} is {cls_value} here but {sd_value} ' \
                f'in the checkpoint'
        print_rank_0(f' > using checkpoint value {sd_value} for {name}')
        return sd_value

    def load_state_dict(self, sd):
        self.max_lr = self._check_and_set(self.max_lr, sd['max_lr'],
                                          'max_lr')
        self.min_lr = self._check_and_set(self.min_lr, sd['min_lr'],
                                          'min_lr')
        self.warmup_steps = self._check_and_set(
            self.warmup_steps, sd['warmup_steps'], 'warmup_steps')
        self.decay_steps = self._check_and_set(
            self.decay_steps, sd['decay_steps'], 'decay_steps')
        self.decay_style = self._check_and_set(
            self.decay_style, sd['decay_style'], 'decay_style')
        self.num_steps = 0
        self.step(sd['num_steps'])
