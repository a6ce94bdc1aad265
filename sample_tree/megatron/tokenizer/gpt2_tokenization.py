# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""A small byte-level BPE reading GPT-2 style vocab.json + merges.txt.

Text is split into words with the usual GPT-2 pattern, each word's UTF-8
bytes are mapped to printable characters, and merges are applied in rank
order.
"""

import json
from functools import lru_cache

try:
    import regex as _re
    _WORD_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"""
                     r"""| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
except ImportError:      # stdlib fallback: close to the above for ASCII text
    import re as _re
    _WORD_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+"""
                     r"""| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


@lru_cache()
def bytes_to_unicode():
    """Map every byte 0..255 to a printable unicode character.

    Bytes that are already printable (and not space) stand for themselves;
    the rest are moved to code points from 256 upwards.
    """
    keep = [b for b in range(256)
            if chr(b).isprintable() and not chr(b).isspace() and b != 0xAD]
    table = {}
    shifted = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def get_pairs(word):
    return {(a, b) for a, b in zip(word, word[1:])}


class GPT2Tokenizer(object):

    def __init__(self, vocab_file, merges_file, errors='replace',
                 special_tokens=None, max_len=None):
        self.max_len = max_len if max_len is not None else int(1e12)
        with open(vocab_file, encoding='utf-8') as f:
            self.encoder = json.load(f)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.errors = errors
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        merges = []
        with open(merges_file, encoding='utf-8') as f:
            for line in f:
                line = line.rstrip('\n')
                if not line or line.startswith('#version'):
                    continue
                merges.append(tuple(line.split(' ')))
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.cache = {}
        self.pat = _re.compile(_WORD_PATTERN)
        self.special_tokens = {}
        self.special_tokens_decoder = {}
        self.set_special_tokens(special_tokens or [])

    def __len__(self):
        return len(self.encoder) + len(self.special_tokens)

    def set_special_tokens(self, special_tokens):
        start = len(self.encoder)
        self.special_tokens = {t: start + i for i, t in enumerate(special_tokens)}
        self.special_tokens_decoder = {i: t for t, i in self.special_tokens.items()}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            ranked = [(self.bpe_ranks[p], p) for p in get_pairs(word)
                      if p in self.bpe_ranks]
            if not ranked:
                break
            _, (first, second) = min(ranked)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = ' '.join(word)
        self.cache[token] = out
        return out

    def tokenize(self, text):
        pieces = []
        for chunk in self.pat.findall(text):
            mapped = ''.join(self.byte_encoder[b] for b in chunk.encode('utf-8'))
            pieces.extend(self.bpe(mapped).split(' '))
        return pieces

    def convert_tokens_to_ids(self, tokens):
        ids = []
        for t in tokens:
            if t in self.special_tokens:
                ids.append(self.special_tokens[t])
            elif t in self.encoder:
                ids.append(self.encoder[t])
            else:
                # A symbol without a vocabulary entry: fall back to bytes.
                ids.extend(self.encoder[c] for c in t if c in self.encoder)
        return ids

    def encode(self, text):
        return self.convert_tokens_to_ids(self.tokenize(text))

    def decode(self, tokens):
        text = ''.join(self.special_tokens_decoder.get(t) or self.decoder[t]
                       for t in tokens)
        raw = bytes(self.byte_decoder[c] for c in text if c in self.byte_decoder)
        return raw.decode('utf-8', errors=self.errors)
