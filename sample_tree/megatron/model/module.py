# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Base module with checkpoint and tied-embedding helpers."""

import torch

from megatron import get_args
from megatron import mpu

_FLOAT16_DTYPES = (torch.half, torch.bfloat16)


def param_is_not_shared(param):
    return not getattr(param, 'shared', False)


class MegatronModule(torch.nn.Module):
    """torch Module plus helpers for pipelined models with tied embeddings."""

    def __init__(self, share_word_embeddings=True):
        super(MegatronModule, self).__init__()
        self.share_word_embeddings = share_word_embeddings

    def state_dict_for_save_checkpoint(self, destination=None, prefix='',
                                       keep_vars=False):
        """State dict written to checkpoints; subclasses may nest it."""
        return self.state_dict(destination=destination, prefix=prefix,
                               keep_vars=keep_vars)

    def word_embeddings_weight(self):
        if mpu.is_pipeline_first_stage(ignore_virtual=True):
            return self.language_model.embedding.word_embeddings.weight
        if mpu.is_pipeline_last_stage(ignore_virtual=True):
            if not self.share_word_embeddings:
                raise Exception('the output layer does not share the word '
                                'embeddings on this model')
            return self.word_embeddings.weight
        raise Exception('only the first and last pipeline stages hold '
                        'word embeddings')

    def initialize_word_embeddings(self, init_method_normal):
        """Give the last pipeline stage its own copy of the word embeddings
        (used by the output layer) and make it equal to the first stage's."""
        args = get_args()
        if not self.share_word_embeddings:
            raise Exception('initialize_word_embeddings() needs '
                            'share_word_embeddings=True')
        if args.pipeline_model_parallel_size == 1:
            return
        if mpu.is_pipeline_last_stage():
            assert not mpu.is_pipeline_first_stage()
            self._word_embeddings_for_head_key = 'word_embeddings_for_head'
            self.word_embeddings = mpu.VocabParallelEmbedding(
                args.padded_vocab_size, args.hidden_size,
                init_method=init_method_normal(args.init_method_std))
            self.word_embeddings.weight.data.fill_(0)
            self.word_embeddings.weight.shared = True
        # Zeros on the last stage + all-reduce = copy of the first stage.
        if mpu.is_pipeline_first_stage() or mpu.is_pipeline_last_stage():
            torch.distributed.all_reduce(self.word_embeddings_weight().data,
                                         group=mpu.get_embedding_group())


def conversion_helper(val, conversion):
    """Apply conversion to every leaf of nested tuples/lists."""
    if isinstance(val, (tuple, list)):
        converted = [conversion_helper(v, conversion) for v in val]
        return tuple(converted) if isinstance(val, tuple) else converted
    return conversion(val)


def fp32_to_float16(val, float16_convertor):
    def convert(v):
        if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
            return float16_convertor(v)
        return v
    return conversion_helper(val, convert)


def float16_to_fp32(val):
    def convert(v):
        if isinstance(v, torch.Tensor) and v.dtype in _FLOAT16_DTYPES:
            return v.float()
        return v
    return conversion_helper(val, convert)


class Float16Module(MegatronModule):
    """Runs a module in fp16/bf16 with fp32 inputs and outputs."""

    def __init__(self, module, args):
        super(Float16Module, self).__init__()
        if args.fp16:
            self.add_module('module', module.half())
            self.float16_convertor = lambda v: v.half()
        elif args.bf16:
            self.add_module('module', module.bfloat16())
            self.float16_convertor = lambda v: v.bfloat16()
        else:
            raise Exception('Float16Module needs --fp16 or --bf16')

    def forward(self, *inputs, **kwargs):
        if mpu.is_pipeline_first_stage():
            inputs = fp32_to_float16(inputs, self.float16_convertor)
        outputs = self.module(*inputs, **kwargs)
        if mpu.is_pipeline_last_stage():
            outputs = float16_to_fp32(outputs)
        return outputs

    def state_dict(self, destination=None, prefix='', keep_vars=False):
        return self.module.state_dict(destination=destination, prefix=prefix,
                                      keep_vars=keep_vars)

    def state_dict_for_save_checkpoint(self, destination=None, prefix='',
                                       keep_vars=False):
        return self.module.state_dict_for_save_checkpoint(destination, prefix,
                                                          keep_vars)

    def load_state_dict(self, state_dict, strict=True):
        self.module.load_state_dict(state_dict, strict=strict)
