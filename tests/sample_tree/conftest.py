"""Fixtures for the sample-tree suite: a tiny corpus, a GPT-2 BPE trained on
it, the preprocessed dataset and DeepSpeed configs (all session-scoped and
built without network access).  The helpers live in tests/helpers/training.py
so other suites can reuse them with their own script and tokenizer."""

from pathlib import Path

import pytest

from tests.helpers import training as T


@pytest.fixture(scope='session')
def sample_tree() -> Path:
    return T.SAMPLE_TREE


@pytest.fixture(scope='session')
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('sample_tree_runs')


@pytest.fixture(scope='session')
def corpus(work_dir) -> Path:
    return T.make_corpus(work_dir / 'corpus.jsonl', target_bytes=200_000)


@pytest.fixture(scope='session')
def gpt2_tokenizer_args(corpus, work_dir) -> list:
    # 1000 entries pad to 1024 both at TP=1 (x128) and TP=2 (x256), so the
    # two layouts build identically shaped embeddings.
    vocab, merges = T.train_gpt2_bpe(corpus, work_dir / 'gpt2_bpe',
                                     vocab_size=1000)
    return T.gpt2_tokenizer_args(vocab, merges)


@pytest.fixture(scope='session')
def gpt_data_prefix(sample_tree, corpus, gpt2_tokenizer_args, work_dir) -> str:
    return T.preprocess(sample_tree, corpus, work_dir / 'data' / 'corpus',
                        gpt2_tokenizer_args)


@pytest.fixture(scope='session')
def ds_config(work_dir) -> Path:
    return T.write_ds_config(work_dir / 'ds_mb4.json', micro_batch_size=4)


@pytest.fixture(scope='session')
def gpt_run(sample_tree, gpt_data_prefix, gpt2_tokenizer_args, ds_config,
            work_dir):
    """gpt_run(name, extra_args, nproc=1, train_iters=20) -> losses."""

    def _run(name, extra_args=(), nproc=1, train_iters=20, ds=None,
             micro_batch_size=4):
        args = (T.tiny_gpt_args()
                + T.training_args(gpt_data_prefix, ds or ds_config,
                                  train_iters=train_iters,
                                  micro_batch_size=micro_batch_size)
                + gpt2_tokenizer_args + list(extra_args))
        return T.run_training(sample_tree, 'pretrain_gpt.py', args,
                              nproc=nproc, log_path=work_dir / f'{name}.log')

    return _run
