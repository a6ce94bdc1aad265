# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Embeddings + transformer stack = the GPT language model body."""

import torch
import torch.nn.functional as F

from megatron import get_args
from megatron import mpu
from .module import MegatronModule
from megatron.model.enums import AttnMaskType
from megatron.model.transformer import ParallelTransformer
from megatron.model.utils import init_method_normal, scaled_init_method_normal
from megatron.model.rotary_embedding import use_positions


def parallel_lm_logits(input_, word_embeddings_weight, parallel_output,
                       bias=None):
    """Logits against the (vocab-split) embedding matrix.

    Returns this rank's vocabulary slice when parallel_output is set,
    otherwise the full logits gathered from all tensor-parallel ranks.
    """
    input_parallel = mpu.copy_to_tensor_model_parallel_region(input_)
    logits_parallel = F.linear(input_parallel, word_embeddings_weight, bias)
    if parallel_output:
        return logits_parallel
    return mpu.gather_from_tensor_model_parallel_region(logits_parallel)


def get_language_model(num_tokentypes, add_pooler,
                       encoder_attn_mask_type, init_method=None,
                       scaled_init_method=None, add_decoder=False,
                       decoder_attn_mask_type=AttnMaskType.causal,
                       pre_process=True, post_process=True, num_experts=[1]):
    """Build the language model; also return its checkpoint key."""
    args = get_args()

    if init_method is None:
        init_method = init_method_normal(args.init_method_std)
    if scaled_init_method is None:
        scaled_init_method = scaled_init_method_normal(args.init_method_std,
                                                       args.num_layers)

    language_model = TransformerLanguageModel(
        init_method,
        scaled_init_method,
        encoder_attn_mask_type,
        num_tokentypes=num_tokentypes,
        add_decoder=add_decoder,
        decoder_attn_mask_type=decoder_attn_mask_type,
        add_pooler=add_pooler,
        pre_process=pre_process,
        post_process=post_process,
        num_experts=num_experts)
    language_model_key = 'language_model'

    return language_model, language_model_key


class Embedding(MegatronModule):
    """Word (vocab-parallel) + learned position (+ optional token-type)
    embeddings, followed by dropout.  Output: [b, s, h]."""

    def __init__(self,
                 hidden_size,
                 vocab_size,
                 max_sequence_length,
                 embedding_dropout_prob,
                 init_method,
                 num_tokentypes=0):
        super(Embedding, self).__init__()

        self.hidden_size = hidden_size
        self.init_method = init_method
        self.num_tokentypes = num_tokentypes

        self.word_embeddings = mpu.VocabParallelEmbedding(
            vocab_size, self.hidden_size,
            init_method=self.init_method)
        self._word_embeddings_key = 'word_embeddings'
        args = get_args()

        if args.position_embedding_type != 'rotary':
            self.position_embeddings = torch.nn.Embedding(
                max_sequence_length, self.hidden_size)
            self._position_embeddings_key = 'position_embeddings'
            self.init_method(self.position_embeddings.weight)
        else:
            self.position_embeddings = None

        self._tokentype_embeddings_key = 'tokentype_embeddings'
        if self.num_tokentypes > 0:
            self.tokentype_embeddings = torch.nn.Embedding(
                self.num_tokentypes, self.hidden_size)
            self.init_method(self.tokentype_embeddings.weight)
        else:
            self.tokentype_embeddings = None

        self.embedding_dropout = torch.nn.Dropout(embedding_dropout_prob)

    def forward(self, input_ids, position_ids, tokentype_ids=None):
        # the rotary embedding rotates by these positions (rotary_embedding.use_positions)
        use_positions(position_ids)
        words_embeddings = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            position_embeddings = self.position_embeddings(position_ids)
            embeddings = words_embeddings + position_embeddings
        else:
            embeddings = words_embeddings
        if tokentype_ids is not None:
            assert self.tokentype_embeddings is not None
            embeddings = embeddings + self.tokentype_embeddings(tokentype_ids)
        else:
            assert self.tokentype_embeddings is None

        embeddings = self.embedding_dropout(embeddings)

        return embeddings

    def state_dict_for_save_checkpoint(self, destination=None, prefix='',
                                       keep_vars=False):
        state_dict_ = {}
        state_dict_[self._word_embeddings_key] = \
            self.word_embeddings.state_dict(prefix=prefix, keep_vars=keep_vars)
        if self.position_embeddings is not None:
            state_dict_[self._position_embeddings_key] = \
                self.position_embeddings.state_dict(prefix=prefix,
                                                    keep_vars=keep_vars)
        if self.num_tokentypes > 0:
            state_dict_[self._tokentype_embeddings_key] = \
                self.tokentype_embeddings.state_dict(prefix=prefix,
                                                     keep_vars=keep_vars)
        return state_dict_

    @staticmethod
    def _sub_dict(state_dict, key, marker):
        """Nested entry key or, for flat dicts, entries containing marker."""
        if key in state_dict:
            return state_dict[key]
        return {k.split(marker)[1]: v for k, v in state_dict.items()
                if marker in k}

    def load_state_dict(self, state_dict, strict=True):
        self.word_embeddings.load_state_dict(
            self._sub_dict(state_dict, self._word_embeddings_key,
                           'word_embeddings.'), strict=strict)
        if self.position_embeddings is not None:
            self.position_embeddings.load_state_dict(
                self._sub_dict(state_dict, self._position_embeddings_key,
                               'position_embeddings.'), strict=strict)
        if self.num_tokentypes > 0:
            sub = self._sub_dict(state_dict, self._tokentype_embeddings_key,
                                 'tokentype_embeddings.')
            if sub:
                self.tokentype_embeddings.load_state_dict(sub, strict=strict)
            else:
                print('WARNING: no token-type embeddings in the checkpoint',
                      flush=True)


class EmbeddingPipe(Embedding):
    """Embedding stage for the pipeline engine.

    Inputs are (input_ids, position_ids, attention_mask[, tokentype_ids]).
    The mask is precomputed in args.attn_mask so only the embeddings flow
    to the next stage.
    """

    def forward(self, inputs, **kwargs):
        if not hasattr(self, '_args'):
            self._args = get_args()

        input_ids = inputs[0]
        position_ids = inputs[1]
        tokentype_ids = inputs[3] if len(inputs) == 4 else None

        embeddings = super().forward(input_ids, position_ids,
                                     tokentype_ids=tokentype_ids)

        # Only the precomputed-mask mode is supported: a per-batch mask would
        # have to travel through the pipeline with the activations.
        assert hasattr(self._args, 'attn_mask'), \
            'set args.attn_mask in model_provider before using EmbeddingPipe'
        return embeddings

    @property
    def word_embeddings_weight(self):
        """Handle the pipeline engine uses to tie input and output embeddings."""
        return self.word_embeddings.weight


class TransformerLanguageModel(MegatronModule):
    """Embedding (first stage) + transformer encoder stack."""

    def __init__(self,
                 init_method,
                 output_layer_init_method,
                 encoder_attn_mask_type,
                 num_tokentypes=0,
                 add_decoder=False,
                 decoder_attn_mask_type=AttnMaskType.causal,
                 add_pooler=False,
                 pre_process=True,
                 post_process=True,
                 num_experts=[1]):
        super(TransformerLanguageModel, self).__init__()
        args = get_args()

        self.pre_process = pre_process
        self.post_process = post_process
        self.hidden_size = args.hidden_size
        self.num_tokentypes = num_tokentypes
        self.init_method = init_method
        self.encoder_attn_mask_type = encoder_attn_mask_type
        self.add_decoder = add_decoder
        self.decoder_attn_mask_type = decoder_attn_mask_type
        self.add_pooler = add_pooler
        self.num_experts = num_experts
        assert not add_decoder, 'this tree has no encoder-decoder models'
        assert not add_pooler, 'this tree has no pooler'

        if self.pre_process:
            self.embedding = Embedding(self.hidden_size,
                                       args.padded_vocab_size,
                                       args.max_position_embeddings,
                                       args.hidden_dropout,
                                       self.init_method,
                                       self.num_tokentypes)
            self._embedding_key = 'embedding'

        self.encoder = ParallelTransformer(
            self.init_method,
            output_layer_init_method,
            self_attn_mask_type=self.encoder_attn_mask_type,
            pre_process=self.pre_process,
            post_process=self.post_process,
            num_experts=self.num_experts)
        self._encoder_key = 'encoder'

    def set_input_tensor(self, input_tensor):
        self.encoder.set_input_tensor(input_tensor)

    def forward(self, enc_input_ids, enc_position_ids, enc_attn_mask,
                dec_input_ids=None, dec_position_ids=None, dec_attn_mask=None,
                enc_dec_attn_mask=None, tokentype_ids=None, layer_past=None,
                get_key_value=False, pooling_sequence_index=0,
                enc_hidden_states=None, output_enc_hidden=False):

        if self.pre_process:
            encoder_input = self.embedding(enc_input_ids, enc_position_ids,
                                           tokentype_ids=tokentype_ids)
        else:
            encoder_input = None

        if enc_hidden_states is None:
            encoder_output, *moe_losses = self.encoder(
                encoder_input,
                enc_attn_mask,
                layer_past=layer_past,
                get_key_value=get_key_value)
        else:
            encoder_output = enc_hidden_states.to(encoder_input.dtype)
            moe_losses = []

        return (encoder_output, *moe_losses)

    def state_dict_for_save_checkpoint(self, destination=None, prefix='',
                                       keep_vars=False):
        state_dict_ = {}
        if self.pre_process:
            state_dict_[self._embedding_key] = \
                self.embedding.state_dict_for_save_checkpoint(
                    destination, prefix, keep_vars)
        state_dict_[self._encoder_key] = \
            self.encoder.state_dict_for_save_checkpoint(
                destination, prefix, keep_vars)
        return state_dict_

    def load_state_dict(self, state_dict, strict=True):
        if self.pre_process:
            if self._embedding_key in state_dict:
                sub = state_dict[self._embedding_key]
            else:
                sub = {k: v for k, v in state_dict.items()
                       if '_embeddings' in k}
            self.embedding.load_state_dict(sub, strict=strict)

        if self._encoder_key in state_dict:
            sub = state_dict[self._encoder_key]
        else:
            sub = {k.split('encoder.', 1)[1]: v for k, v in state_dict.items()
                   if 'encoder.' in k}
        self.encoder.load_state_dict(sub, strict=strict)
