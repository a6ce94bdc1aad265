"""Profile detection of the GPT entry point, tokenizer factory and enums, on our own snippets."""

import textwrap

import libcst as cst

from porter.profile.entry import builds_tokenizer_when, read_entry, tokenizer_branches
from porter.profile.enums import enum_classes, find_uses


def parse(source: str) -> cst.Module:
    return cst.parse_module(textwrap.dedent(source))


HABANA = parse('''
from megatron import get_args
from megatron.global_vars import get_current_device

def model_provider(pre_process=True, post_process=True):
    args = get_args()
    if args.deepspeed and not args.no_pipeline_parallel:
        model = GPTModelPipe(num_tokentypes=0, parallel_output=True)
        model._megatron_batch_fn = get_batch_pipe
        current_device = get_current_device()
        attention_mask = torch.tril(torch.ones((1, args.seq_length, args.seq_length), device=current_device))
        if args.mask_tensor_adding:
            args.attn_mask = attention_mask * -10000.0
        else:
            args.attn_mask = attention_mask.to(torch.bool)
    else:
        model = GPTModel(num_tokentypes=0, parallel_output=True)
    return model

def get_batch_pipe(data):
    pass

def forward_step(data_iterator, model, teacher_model=None):
    pass

def train_valid_test_datasets_provider(train_val_test_num_samples):
    pass

if __name__ == "__main__":
    pretrain(train_valid_test_datasets_provider, model_provider, forward_step,
             args_defaults={'tokenizer_type': 'GPT2BPETokenizer'})
''')


def test_habana_device_helper_is_read_through_its_local_variable():
    entry = read_entry(HABANA, None)
    assert entry.pipe_condition == "args.deepspeed and not args.no_pipeline_parallel"
    assert entry.device == "get_current_device()"
    assert entry.import_for(entry.device) == ["from megatron.global_vars import get_current_device"]
    assert entry.mask_adding and entry.config is None and entry.pipe_setup == ()
    assert entry.pretrain_positional == ("train_valid_test_datasets_provider", "model_provider", "forward_step")


MICROSOFT_HEAD = parse('''
from megatron.core.enums import ModelType
from megatron.utils import average_losses_across_data_parallel_group, update_rotary_pos_emb
from megatron.arguments import core_transformer_config_from_args
from deepspeed.accelerator.real_accelerator import get_accelerator

def model_provider(pre_process=True, post_process=True):
    args = get_args()
    config = core_transformer_config_from_args(args)
    with deepspeed.zero.Init(enabled=args.zero_stage == 3):
        if args.deepspeed and not args.no_pipeline_parallel:
            model = GPTModelPipe(config=config, num_tokentypes=0, parallel_output=True)
            attention_mask = torch.tril(torch.ones(
                (1, args.seq_length, args.seq_length), device=get_accelerator().current_device_name()))
            args.attn_mask = attention_mask.to(torch.bool)
            if args.use_rotary_position_embeddings:
                update_rotary_pos_emb(args.seq_length)
        else:
            model = GPTModel(config=config, num_tokentypes=0)
    return model

if __name__ == "__main__":
    pretrain(train_valid_test_datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step,
             data_post_process=data_post_process)
''')
TRAINING = parse('''
def pretrain(train_valid_test_dataset_provider, model_provider, model_type, forward_step_func,
             process_non_loss_data_func=None, extra_args_provider=None, args_defaults={}):
    pass
''')


def test_microsoft_head_config_rotary_cache_and_model_type():
    entry = read_entry(MICROSOFT_HEAD, TRAINING)
    assert entry.config == "core_transformer_config_from_args(args)"
    assert entry.rotary_cache == ("args.use_rotary_position_embeddings", "update_rotary_pos_emb(args.seq_length)")
    assert entry.import_for(entry.rotary_cache[1]) == ["from megatron.utils import update_rotary_pos_emb"]
    assert "ModelType.encoder_or_decoder" in entry.pretrain_positional
    assert entry.import_for("ModelType.encoder_or_decoder") == ["from megatron.core.enums import ModelType"]
    assert entry.pretrain_params[2] == "model_type"


BIGSCIENCE = parse('''
def model_provider(pre_process=True, post_process=True):
    args = get_args()
    if args.deepspeed:
        args.pretrain_causal_attention = True
        model = GPTModelPipe(num_tokentypes=0, parallel_output=True, attn_mask_type=AttnMaskType.causal)
        model._megatron_batch_fn = get_batch_pipe
    else:
        model = GPTModel(num_tokentypes=0, parallel_output=True)
    return model

@record
def main():
    pretrain(train_valid_test_datasets_provider, model_provider, forward_step)
''')


def test_bigscience_sets_a_flag_and_precomputes_no_mask():
    entry = read_entry(BIGSCIENCE, None)
    assert entry.pipe_condition == "args.deepspeed"
    assert entry.pipe_setup == ("args.pretrain_causal_attention = True",)
    assert entry.device is None
    assert "main" in entry.gpt_names


TOKENIZER = parse('''
def build_tokenizer(args):
    if args.tokenizer_type == 'GPT2BPETokenizer':
        tokenizer = _GPT2BPETokenizer(args.vocab_file, args.merge_file)
    elif args.tokenizer_type == 'GPTSentencePieceTokenizer':
        tokenizer = _GPTSentencePieceTokenizer(args.tokenizer_model)
    return tokenizer
''')


def test_tokenizer_branches_and_when_the_tokenizer_is_built():
    assert sorted(tokenizer_branches(TOKENIZER)) == ["GPT2BPETokenizer", "GPTSentencePieceTokenizer"]
    always = parse("def set_global_variables(args):\n    set_args(args)\n    _ = _build_tokenizer(args)\n")
    when = parse("def set_global_variables(args):\n    if args.vocab_file:\n        _ = _build_tokenizer(args)\n")
    assert builds_tokenizer_when(always) == ""
    assert builds_tokenizer_when(when) == "args.vocab_file"


def test_a_defined_but_unused_enum_is_not_a_feature(tmp_path):
    (tmp_path / "megatron").mkdir()
    enums = "import enum\n\nclass PositionEmbeddingType(enum.Enum):\n    rotary = 1\n    absolute = 2\n"
    (tmp_path / "megatron" / "enums.py").write_text(enums)
    (tmp_path / "megatron" / "arguments.py").write_text("import argparse\n# rotary position embeddings: none here\n")
    assert enum_classes(cst.parse_module(enums)) == {"PositionEmbeddingType": ("rotary", "absolute")}
    assert find_uses(tmp_path, "PositionEmbeddingType", "megatron/enums.py") == ()
    (tmp_path / "megatron" / "arguments.py").write_text("from megatron.enums import PositionEmbeddingType\n")
    assert find_uses(tmp_path, "PositionEmbeddingType", "megatron/enums.py") == ("megatron/arguments.py",)
