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

import importlib
import inspect
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TREE = REPO_ROOT / 'sample_tree'

# "iteration 3/20 | ... | lm loss: 6.123456E+00 |" (also tolerates the
# right-aligned "iteration        3/      20" form of upstream Megatron).
ITERATION_RE = re.compile(
    r'iteration\s+(\d+)\s*/\s*(\d+)\s*\|.*?lm loss:\s*([-+0-9.eEnaNif]+)')

# Pure-Python stdlib modules with plenty of docstrings; imported only to
# read their documentation.
_CORPUS_MODULES = (
    'argparse', 'ast', 'base64', 'bisect', 'calendar', 'collections',
    'configparser', 'contextlib', 'copy', 'csv', 'dataclasses', 'datetime',
    'decimal', 'difflib', 'email.message', 'enum', 'fnmatch', 'fractions',
    'ftplib', 'functools', 'getopt', 'gettext', 'glob', 'gzip', 'heapq',
    'hmac', 'html.parser', 'http.client', 'http.cookiejar', 'imaplib',
    'inspect', 'ipaddress', 'json', 'logging', 'mailbox', 'mimetypes',
    'netrc', 'numbers', 'optparse', 'os', 'pathlib', 'pickle', 'pickletools',
    'pprint', 'queue', 'random', 're', 'sched', 'secrets', 'shlex', 'shutil',
    'smtplib', 'socket', 'statistics', 'string', 'subprocess', 'tarfile',
    'tempfile', 'textwrap', 'threading', 'timeit', 'tokenize', 'trace',
    'traceback', 'typing', 'unittest.case', 'urllib.parse', 'urllib.request',
    'uuid', 'warnings', 'wave', 'weakref', 'xml.dom.minidom', 'zipfile',
)


class TrainingFailed(RuntimeError):
    pass


class LossList(list):
    """Per-iteration 'lm loss' values (index 0 = iteration 1), with the
    run's full output in ``.log`` and its command in ``.cmd``."""

    log: str = ''
    cmd: Sequence[str] = ()
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_corpus(path: os.PathLike, target_bytes: int = 200_000) -> Path:
    """Write a JSON-lines corpus ({"text": ...} per line) made of the
    docstrings of Python standard-library modules.  No downloads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    seen = set()
    with open(path, 'w', encoding='utf-8') as f:
        for name in _CORPUS_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            docs = [inspect.getdoc(module)]
            for attr in sorted(vars(module)):
                if attr.startswith('_'):
                    continue
                obj = getattr(module, attr, None)
                if inspect.isfunction(obj) or inspect.isclass(obj):
                    docs.append(inspect.getdoc(obj))
                    if inspect.isclass(obj):
                        for meth in sorted(vars(obj)):
                            if not meth.startswith('_'):
                                m = getattr(obj, meth, None)
                                if inspect.isfunction(m):
                                    docs.append(inspect.getdoc(m))
            for doc in docs:
                if not doc or len(doc) < 80 or doc in seen:
                    continue
                seen.add(doc)
                line = json.dumps({'text': doc}) + '\n'
                f.write(line)
                written += len(line)
                if written >= target_bytes:
                    return path
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
                        vocab_size: int = 1000, model_type: str = 'bpe') -> Path:
    """Train a small SentencePiece model (LLaMA-style ids: unk 0, bos 1,
    eos 2, no pad) on the corpus; return the ``.model`` path."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)['text']
             for line in open(corpus_jsonl, encoding='utf-8')]
    prefix = out_dir / 'spm'
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(prefix),
        vocab_size=vocab_size, model_type=model_type,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        byte_fallback=True, character_coverage=1.0,
        num_threads=1, minloglevel=2)
    return prefix.with_suffix('.model')


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
                          timeout=timeout, env=_base_env(1))
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


def _base_env(nproc: int) -> dict:
    env = dict(os.environ)
    env.setdefault('DS_ACCELERATOR', 'cpu')
    env['PYTHONUNBUFFERED'] = '1'
    # Do not oversubscribe the cores when several ranks share a machine.
    cores = os.cpu_count() or 1
    env['OMP_NUM_THREADS'] = str(max(1, cores // max(1, nproc)))
    env.pop('PYTHONPATH', None)
    # DeepSpeed JIT-builds a shared-memory comm op on CPU (~20 s, cached).
    # Single- and multi-process launches invalidate each other's build in a
    # shared cache directory, so keep one cache per process count.
    root = os.environ.get('TORCH_EXTENSIONS_DIR') or os.path.join(
        os.path.expanduser('~'), '.cache', 'torch_extensions')
    env['TORCH_EXTENSIONS_DIR'] = os.path.join(root, f'porter-np{nproc}')
    return env


def parse_losses(output: str) -> dict[int, float]:
    losses = {}
    for match in ITERATION_RE.finditer(output):
        losses[int(match.group(1))] = float(match.group(3))
    return losses


def run_training(tree: os.PathLike, script: str, extra_args: Sequence[str],
                 nproc: int = 1, env: dict | None = None,
                 timeout: float = 600, log_path: os.PathLike | None = None
                 ) -> LossList:
    """Run ``script`` of ``tree`` on CPU with ``nproc`` ranks; return the
    per-iteration losses printed by rank 0.  Raises TrainingFailed (with the
    tail of the log) if the run fails or prints no loss."""
    tree = Path(tree)
    port = free_port()
    run_env = _base_env(nproc)
    run_env.update({'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)})
    if env:
        run_env.update(env)
    if nproc == 1:
        run_env.update({'RANK': '0', 'WORLD_SIZE': '1', 'LOCAL_RANK': '0',
                        'LOCAL_WORLD_SIZE': '1'})
        cmd = [sys.executable, script, *map(str, extra_args)]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               '--nproc_per_node', str(nproc), '--master_addr', '127.0.0.1',
               '--master_port', str(port), script, *map(str, extra_args)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=tree, env=run_env, capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.time() - start
    output = proc.stdout + '\n' + proc.stderr
    if log_path is not None:
        Path(log_path).write_text(' '.join(cmd) + '\n\n' + output)
    losses = parse_losses(proc.stdout)
    if proc.returncode != 0 or not losses:
        raise TrainingFailed(
            f'{" ".join(cmd)}\nexit code {proc.returncode}, '
            f'{len(losses)} losses parsed; output tail:\n{output[-6000:]}')
    result = LossList(losses[i] for i in sorted(losses))
    result.log = output
    result.cmd = cmd
    result.seconds = seconds
    return result


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)
