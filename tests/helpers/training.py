"""Helpers for tests that really train a Megatron-DeepSpeed tree on CPU.

They are deliberately generic: the script, tokenizer arguments, model
arguments and process count are all parameters, so suites for ported
models (e.g. LLaMA) can reuse them with their own script and tokenizer.

Typical use::

    corpus = make_corpus(tmp / 'corpus.jsonl')
    vocab, merges = train_gpt2_bpe(corpus, tmp / 'tok')
    tok_args = gpt2_tokenizer_args(vocab, merges)
    prefix = preprocess(tree, corpus, tmp / 'data' / 'corpus', tok_args)
    ds = write_ds_config(tmp / 'ds.json', micro_batch_size=4)
    losses = run_training(tree, 'pretrain_gpt.py',
                          tiny_gpt_args() + training_args(prefix, ds) + tok_args,
                          nproc=1)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from porter.corpus import stdlib_docstrings
from porter.corpus import train_sentencepiece as porter_train_sentencepiece
from porter.treerun.process import environment, free_port  # noqa: F401  (free_port: re-exported for tests)
from porter.treerun.script import launch

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TREE = REPO_ROOT / 'sample_tree'


class TrainingFailed(RuntimeError):
    pass


class LossList(list):
    """Per-iteration 'lm loss' values (index 0 = iteration 1), with the
    run's full output in ``.log`` and its command in ``.cmd``."""

    log: str = ''
    cmd: Sequence[str] = ()
    seconds: float = 0.0


def make_corpus(path: os.PathLike, target_bytes: int = 200_000) -> Path:
    """A JSON-lines corpus ({"text": ...} per line): porter's own standard-library docstrings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        for doc in stdlib_docstrings(target_bytes):
            f.write(json.dumps({'text': doc}) + '\n')
    return path


def train_gpt2_bpe(corpus_jsonl: os.PathLike, out_dir: os.PathLike,
                   vocab_size: int = 1000) -> tuple[Path, Path]:
    """Train a GPT-2 style byte-level BPE (vocab.json + merges.txt) with
    ``<|endoftext|>`` as a special token, using the `tokenizers` package."""
    from tokenizers import ByteLevelBPETokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)['text']
             for line in open(corpus_jsonl, encoding='utf-8')]
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=['<|endoftext|>'],
                            show_progress=False)
    tok.save_model(str(out_dir))
    return out_dir / 'vocab.json', out_dir / 'merges.txt'


def gpt2_tokenizer_args(vocab: os.PathLike, merges: os.PathLike) -> list[str]:
    return ['--tokenizer-type', 'GPT2BPETokenizer',
            '--vocab-file', str(vocab), '--merge-file', str(merges)]


def train_sentencepiece(corpus_jsonl: os.PathLike, out_dir: os.PathLike,
                        vocab_size: int = 1000) -> Path:
    """A small SentencePiece model (unk 0, bos 1, eos 2, no pad) trained on the corpus."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / 'corpus.txt'
    text.write_text('\n'.join(json.loads(line)['text'].replace('\n', ' ')
                              for line in open(corpus_jsonl, encoding='utf-8')) + '\n')
    return porter_train_sentencepiece(text, out_dir / 'spm', vocab_size)


def sentencepiece_tokenizer_args(model: os.PathLike,
                                 tokenizer_type: str = 'SentencePieceTokenizer'
                                 ) -> list[str]:
    return ['--tokenizer-type', tokenizer_type, '--tokenizer-model', str(model)]


def preprocess(tree: os.PathLike, input_jsonl: os.PathLike,
               output_prefix: os.PathLike, tokenizer_args: Sequence[str],
               json_key: str = 'text', extra_args: Sequence[str] = (),
               timeout: float = 300) -> str:
    """Run ``tools/preprocess_data.py`` of ``tree``; return the data prefix
    to pass as ``--data-path``."""
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, 'tools/preprocess_data.py',
           '--input', str(input_jsonl), '--output-prefix', str(output_prefix),
           '--json-keys', json_key, '--append-eod', '--workers', '1',
           *tokenizer_args, *extra_args]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                          timeout=timeout, env=environment(Path(tree), 1))
    if proc.returncode != 0:
        raise TrainingFailed(f'preprocess failed ({proc.returncode}):\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return f'{output_prefix}_{json_key}_document'


def write_ds_config(path: os.PathLike, micro_batch_size: int,
                    gradient_accumulation_steps: int = 1, zero_stage: int = 0,
                    gradient_clipping: float = 1.0, **extra) -> Path:
    """Minimal fp32 DeepSpeed config; the optimizer comes from Megatron."""
    config = {
        'train_micro_batch_size_per_gpu': micro_batch_size,
        'gradient_accumulation_steps': gradient_accumulation_steps,
        'gradient_clipping': gradient_clipping,
        'zero_optimization': {'stage': zero_stage},
        'fp16': {'enabled': False},
        'bf16': {'enabled': False},
        'steps_per_print': 10 ** 9,
        'wall_clock_breakdown': False,
    }
    config.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def tiny_gpt_args(num_layers: int = 2, hidden_size: int = 64,
                  num_attention_heads: int = 4, seq_length: int = 64,
                  max_position_embeddings: int | None = None) -> list[str]:
    """Model-shape arguments of a tiny GPT."""
    return ['--num-layers', str(num_layers), '--hidden-size', str(hidden_size),
            '--num-attention-heads', str(num_attention_heads),
            '--seq-length', str(seq_length),
            '--max-position-embeddings',
            str(max_position_embeddings or seq_length)]


def training_args(data_prefix: str, ds_config: os.PathLike,
                  train_iters: int = 20, micro_batch_size: int = 4,
                  lr: float = 1e-3, seed: int = 1234, eval_iters: int = 1,
                  split: str = '98,1,1') -> list[str]:
    """Data/optimizer/DeepSpeed arguments shared by all CPU runs."""
    return ['--data-path', str(data_prefix), '--data-impl', 'mmap',
            '--split', split,
            '--micro-batch-size', str(micro_batch_size),
            '--train-iters', str(train_iters),
            '--lr', str(lr), '--min-lr', str(lr / 10),
            '--lr-decay-style', 'cosine', '--lr-warmup-iters', '2',
            '--weight-decay', '0.01', '--clip-grad', '1.0',
            '--seed', str(seed),
            '--log-interval', '1',
            '--eval-iters', str(eval_iters), '--eval-interval', '1000',
            '--num-workers', '0',
            '--distributed-backend', 'gloo',
            '--deepspeed', '--deepspeed_config', str(ds_config)]


def run_training(tree: os.PathLike, script: str, extra_args: Sequence[str],
                 nproc: int = 1, env: dict | None = None,
                 timeout: float = 600, log_path: os.PathLike | None = None
                 ) -> LossList:
    """Run ``script`` of ``tree`` on CPU with ``nproc`` ranks (porter.treerun.script.launch); return the
    per-iteration losses printed by rank 0.  Raises TrainingFailed (with the tail of the log) if
    the run fails or prints no loss."""
    run = launch(Path(tree), script, [str(a) for a in extra_args], nproc=nproc, env=env, timeout=timeout)
    if log_path is not None:
        Path(log_path).write_text(' '.join(run.command) + '\n\n' + run.log)
    args = [str(a) for a in extra_args]
    steps = min(int(args[args.index(option) + 1]) for option in ('--train-iters', '--exit-interval') if option in args) \
        if '--train-iters' in args else None
    # a run that logged its last step and failed only at its exit trained (porter smoke says so too)
    finished = run.returncode == 0 or (steps is not None and run.ended_after_training(steps) is not None)
    if not finished or not run.losses:
        raise TrainingFailed(
            f'{" ".join(run.command)}\nexit code {run.returncode}, '
            f'{len(run.losses)} losses parsed; output tail:\n{run.log[-6000:]}')
    result = LossList(run.losses[i] for i in sorted(run.losses))
    result.log = run.log
    result.cmd = run.command
    result.seconds = run.seconds
    return result


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)
