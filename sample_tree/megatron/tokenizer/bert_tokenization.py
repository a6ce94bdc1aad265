# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""A minimal WordPiece tokenizer (one token per line in the vocab file)."""

import unicodedata


def _is_punctuation(ch):
    return unicodedata.category(ch).startswith('P') or \
        (ch.isascii() and not ch.isalnum() and not ch.isspace())


class FullTokenizer(object):
    """Whitespace/punctuation split, optional lower-casing, then greedy
    longest-match WordPiece with ## continuation pieces."""

    def __init__(self, vocab_file, do_lower_case=True, max_chars_per_word=100):
        self.vocab = {}
        with open(vocab_file, encoding='utf-8') as f:
            for line in f:
                token = line.rstrip('\n')
                if token and token not in self.vocab:
                    self.vocab[token] = len(self.vocab)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.max_chars_per_word = max_chars_per_word
        self.unk_token = '[UNK]'

    def vocab_size(self):
        return len(self.vocab)

    def _basic_split(self, text):
        if self.do_lower_case:
            text = unicodedata.normalize('NFD', text.lower())
            text = ''.join(c for c in text if unicodedata.category(c) != 'Mn')
        words, current = [], []
        for ch in text:
            if ch.isspace() or _is_punctuation(ch):
                if current:
                    words.append(''.join(current))
                    current = []
                if not ch.isspace():
                    words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append(''.join(current))
        return words

    def _wordpiece(self, word):
        if len(word) > self.max_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else '##' + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text):
        return [p for w in self._basic_split(text) for p in self._wordpiece(w)]

    def convert_tokens_to_ids(self, tokens):
        unk = self.vocab.get(self.unk_token, 0)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        return [self.inv_vocab[i] for i in ids]

    def convert_tokens_to_string(self, tokens):
        return ' '.join(tokens).replace(' ##', '')
