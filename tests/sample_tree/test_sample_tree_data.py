"""Dataset format, GPT windows, masks and splits of the sample tree."""

import subprocess
import sys
from pathlib import Path

from tests.helpers.training import SAMPLE_TREE, environment


def test_data_pipeline():
    worker = Path(__file__).with_name('data_worker.py')
    proc = subprocess.run([sys.executable, str(worker), str(SAMPLE_TREE)],
                          cwd=SAMPLE_TREE, env=environment(SAMPLE_TREE, 1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'DATA-OK' in proc.stdout, \
        (proc.stdout + proc.stderr)[-5000:]


_BPE_CHECK = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from tokenizers import ByteLevelBPETokenizer
from megatron.tokenizer.gpt2_tokenization import GPT2Tokenizer
vocab, merges, corpus = sys.argv[2:5]
ref = ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False)
ours = GPT2Tokenizer(vocab, merges)
texts = [json.loads(line)['text'] for line in open(corpus, encoding='utf-8')]
texts.append('Ünïcödé naïve café, 日本語 — 123,456.78\t tabs  \n\n  end')
for text in texts:
    ids = ours.encode(text)
    assert ids == ref.encode(text).ids, text[:80]
    assert ours.decode(ids) == text
print('BPE-OK', len(texts))
'''


def test_gpt2_bpe_matches_tokenizers_library(gpt2_tokenizer_args, corpus):
    vocab = gpt2_tokenizer_args[gpt2_tokenizer_args.index('--vocab-file') + 1]
    merges = gpt2_tokenizer_args[gpt2_tokenizer_args.index('--merge-file') + 1]
    proc = subprocess.run(
        [sys.executable, '-c', _BPE_CHECK, str(SAMPLE_TREE), vocab, merges,
         str(corpus)],
        cwd=SAMPLE_TREE, env=environment(SAMPLE_TREE, 1), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0 and 'BPE-OK' in proc.stdout, \
        (proc.stdout + proc.stderr)[-5000:]
