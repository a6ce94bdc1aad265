"""Before/after tests of the language-model, export, optimizer and tokenizer rewrites."""

from functools import partial

from porter.differences.rmsnorm.rewrites import NoWeightDecayFor, PipeNormChoice
from porter.differences.rotary.rewrites import EmbeddingPositionsForward, EmbeddingPositionsInit, GuardPositionsState
from porter.differences.tokenizer.rewrites import TokenizerBranch
from porter.edits.imports import ImportNameAlongside, InsertImport

EMBEDDING = '''
class Embedding(MegatronModule):
    def __init__(self, hidden_size, vocab_size, max_sequence_length, embedding_dropout_prob, init_method):
        super(Embedding, self).__init__()
        args = get_args()
        self.word_embeddings = mpu.VocabParallelEmbedding(vocab_size, hidden_size)
        # Position embedding (serial).
        self.position_embeddings = torch.nn.Embedding(
            max_sequence_length, hidden_size)
        self._position_embeddings_key = 'position_embeddings'
        self.init_method(self.position_embeddings.weight)
        self.embedding_dropout = torch.nn.Dropout(embedding_dropout_prob)

    def forward(self, input_ids, position_ids, tokentype_ids=None):
        words_embeddings = self.word_embeddings(input_ids)
        position_embeddings = self.position_embeddings(position_ids)
        embeddings = words_embeddings + position_embeddings
        return self.embedding_dropout(embeddings)

    def state_dict_for_save_checkpoint(self, destination=None, prefix='', keep_vars=False):
        state_dict_ = {}
        state_dict_[self._position_embeddings_key] \\
            = self.position_embeddings.state_dict(
                destination, prefix, keep_vars)
        return state_dict_
'''


def test_position_table_only_when_learned(check):
    learned = "args.position_embedding_type != 'rotary'"
    after = EMBEDDING.replace(
        "        # Position embedding (serial).\n"
        "        self.position_embeddings = torch.nn.Embedding(\n"
        "            max_sequence_length, hidden_size)\n"
        "        self._position_embeddings_key = 'position_embeddings'\n"
        "        self.init_method(self.position_embeddings.weight)\n",
        "        # Position embedding (serial).\n"
        f"        if {learned}:\n"
        "            self.position_embeddings = torch.nn.Embedding(\n"
        "                max_sequence_length, hidden_size)\n"
        "            self._position_embeddings_key = 'position_embeddings'\n"
        "            self.init_method(self.position_embeddings.weight)\n"
        "        else:\n"
        "            self.position_embeddings = None\n",
    )
    check(partial(EmbeddingPositionsInit, cls="Embedding", learned_test=learned), EMBEDDING, after)


def test_forward_adds_positions_only_when_there_is_a_table(check):
    after = EMBEDDING.replace(
        "        position_embeddings = self.position_embeddings(position_ids)\n"
        "        embeddings = words_embeddings + position_embeddings\n",
        "        if self.position_embeddings is not None:\n"
        "            position_embeddings = self.position_embeddings(position_ids)\n"
        "            embeddings = words_embeddings + position_embeddings\n"
        "        else:\n"
        "            embeddings = words_embeddings\n",
    )
    check(partial(EmbeddingPositionsForward, cls="Embedding"), EMBEDDING, after)


def test_checkpoint_guard_moves_backslash_continuations_too(check):
    after = EMBEDDING.replace(
        "        state_dict_[self._position_embeddings_key] \\\n"
        "            = self.position_embeddings.state_dict(\n"
        "                destination, prefix, keep_vars)\n",
        "        if self.position_embeddings is not None:\n"
        "            state_dict_[self._position_embeddings_key] \\\n"
        "                = self.position_embeddings.state_dict(\n"
        "                    destination, prefix, keep_vars)\n",
    )
    check(partial(GuardPositionsState, cls="Embedding", func="state_dict_for_save_checkpoint"), EMBEDDING, after)


INIT = '''
from deepspeed.accelerator.real_accelerator import get_accelerator
if get_accelerator().device_name() == 'cuda':
    from .fused_layer_norm import MixedFusedLayerNorm as LayerNorm
else:
    from torch.nn import LayerNorm
from .gpt_model import GPTModel, GPTModelPipe
from .language_model import get_language_model
'''


def test_exports_respect_the_circular_import_order(check):
    after = INIT.replace(
        "    from torch.nn import LayerNorm\n",
        "    from torch.nn import LayerNorm\nfrom .rmsnorm import RMSNorm\n",
    ).replace(
        "from .gpt_model import GPTModel, GPTModelPipe\n",
        "from .gpt_model import GPTModel, GPTModelPipe\nfrom .llama_model import LLaMAModel, LLaMAModelPipe\n",
    )

    class Both:
        def apply(self, module, path):
            module = InsertImport("from .rmsnorm import RMSNorm", after="LayerNorm").apply(module, path)
            return InsertImport("from .llama_model import LLaMAModel, LLaMAModelPipe", after="GPTModel").apply(module, path)

    check(Both, INIT, after)


def test_import_name_alongside(check):
    source = "from megatron import get_args\nfrom megatron.model import LayerNorm\n"
    after = "from megatron import get_args\nfrom megatron.model import LayerNorm, RMSNorm\n"
    check(partial(ImportNameAlongside, module="megatron.model", anchor="LayerNorm", name="RMSNorm"), source, after)


OPTIMIZER = '''
def _get_params_for_weight_decay_optimization(modules):
    for module in modules:
        for module_ in module.modules():
            if isinstance(module_, LayerNorm):
                no_weight_decay_params['params'].extend(list(module_._parameters.values()))
'''


def test_rmsnorm_gets_no_weight_decay(check):
    after = OPTIMIZER.replace("isinstance(module_, LayerNorm)", "isinstance(module_, (LayerNorm, RMSNorm))")
    check(partial(NoWeightDecayFor, func="_get_params_for_weight_decay_optimization"), OPTIMIZER, after)


GPT_PIPE = '''
class GPTModelPipe(PipelineModule, MegatronModule):
    def __init__(self, num_tokentypes=0, parallel_output=True):
        args = get_args()
        self.specs.append(
            LayerSpec(LayerNorm,
                      args.hidden_size,
                      eps=args.layernorm_epsilon))
'''


def test_gpt_pipe_final_norm_follows_the_switch(check):
    after = GPT_PIPE.replace("LayerSpec(LayerNorm,", "LayerSpec(RMSNorm if args.layernorm_type == 'rmsnorm' else LayerNorm,")
    check(partial(PipeNormChoice, cls="GPTModelPipe", test="args.layernorm_type == 'rmsnorm'"), GPT_PIPE, after)


TOKENIZER = '''
def build_tokenizer(args):
    assert args.vocab_file is not None
    if args.tokenizer_type == 'BertWordPieceLowerCase':
        tokenizer = _BertWordPieceTokenizer(vocab_file=args.vocab_file)
    elif args.tokenizer_type == 'GPT2BPETokenizer':
        tokenizer = _GPT2BPETokenizer(args.vocab_file, args.merge_file)
    else:
        raise NotImplementedError('{} tokenizer is not implemented.'.format(args.tokenizer_type))
    return tokenizer
'''


def test_tokenizer_choice_gets_a_branch(check):
    after = TOKENIZER.replace(
        "    assert args.vocab_file is not None\n",
        "    if args.tokenizer_type != 'SentencePieceTokenizer':\n        assert args.vocab_file is not None\n",
    ).replace(
        "    else:\n",
        "    elif args.tokenizer_type == 'SentencePieceTokenizer':\n"
        "        from .sentencepiece_tokenizer import SentencePieceTokenizer\n"
        "        tokenizer = SentencePieceTokenizer(args.tokenizer_model)\n"
        "    else:\n",
    )
    body = "from .sentencepiece_tokenizer import SentencePieceTokenizer\ntokenizer = SentencePieceTokenizer(args.tokenizer_model)"
    check(partial(TokenizerBranch, func="build_tokenizer", name="SentencePieceTokenizer", body=body), TOKENIZER, after)


def test_checkpoint_guard_splits_a_dict_literal(check):
    source = '''
class Embedding(MegatronModule):
    def state_dict_for_save_checkpoint(self, destination=None, prefix='', keep_vars=False):
        state_dict_ = {
            self._word_embeddings_key: self.word_embeddings.state_dict(prefix=prefix),
            self._position_embeddings_key: self.position_embeddings.state_dict(prefix=prefix),
        }
        return state_dict_
'''
    after = '''
class Embedding(MegatronModule):
    def state_dict_for_save_checkpoint(self, destination=None, prefix='', keep_vars=False):
        state_dict_ = {
            self._word_embeddings_key: self.word_embeddings.state_dict(prefix=prefix),
        }
        if self.position_embeddings is not None:
            state_dict_[self._position_embeddings_key] = self.position_embeddings.state_dict(prefix=prefix)
        return state_dict_
'''
    check(partial(GuardPositionsState, cls="Embedding", func="state_dict_for_save_checkpoint"), source, after)


def test_checkpoint_guard_refuses_to_hide_a_binding_used_later(refuses):
    source = '''
class Embedding(MegatronModule):
    def state_dict_for_save_checkpoint(self, destination=None, prefix='', keep_vars=False):
        state_dict_ = dict(position=self.position_embeddings.state_dict(prefix=prefix))
        return state_dict_
'''
    error = refuses(partial(GuardPositionsState, cls="Embedding", func="state_dict_for_save_checkpoint"), source)
    assert "state_dict_" in error.found
