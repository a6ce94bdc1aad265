# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Tokenizer selection and the common tokenizer interface."""

from abc import ABC
from abc import abstractmethod

from .bert_tokenization import FullTokenizer as FullBertTokenizer
from .gpt2_tokenization import GPT2Tokenizer


def build_tokenizer(args):
    """Instantiate args.tokenizer_type and set args.padded_vocab_size."""
    if args.rank == 0:
        print(f'> building {args.tokenizer_type} tokenizer ...', flush=True)

    if args.tokenizer_type != 'SentencePieceTokenizer':
        assert args.vocab_file is not None
    if args.tokenizer_type == 'BertWordPieceLowerCase':
        tokenizer = _BertWordPieceTokenizer(vocab_file=args.vocab_file,
                                            lower_case=True,
                                            vocab_extra_ids=args.vocab_extra_ids)
    elif args.tokenizer_type == 'BertWordPieceCase':
        tokenizer = _BertWordPieceTokenizer(vocab_file=args.vocab_file,
                                            lower_case=False,
                                            vocab_extra_ids=args.vocab_extra_ids)
    elif args.tokenizer_type == 'GPT2BPETokenizer':
        assert args.merge_file is not None
        tokenizer = _GPT2BPETokenizer(args.vocab_file, args.merge_file)
    elif args.tokenizer_type == 'SentencePieceTokenizer':
        from .sentencepiece_tokenizer import SentencePieceTokenizer
        tokenizer = SentencePieceTokenizer(args.tokenizer_model, add_bos=getattr(args, 'add_bos_token', False))
    else:
        raise NotImplementedError(
            f'{args.tokenizer_type} tokenizer is not implemented.')

    args.padded_vocab_size = _vocab_size_with_padding(tokenizer.vocab_size,
                                                      args)

    return tokenizer


def _vocab_size_with_padding(orig_vocab_size, args):
    """Round the vocabulary up so every tensor-parallel slice is equal and
    a multiple of --make-vocab-size-divisible-by."""
    multiple = args.make_vocab_size_divisible_by * \
        args.tensor_model_parallel_size
    padded = -(-orig_vocab_size // multiple) * multiple
    if args.rank == 0:
        print(f' > padded vocab (size: {orig_vocab_size}) with '
              f'{padded - orig_vocab_size} dummy tokens (new size: {padded})',
              flush=True)
    return padded


class AbstractTokenizer(ABC):
    """What the rest of the code needs from a tokenizer."""

    def __init__(self, name):
        self.name = name
        super().__init__()

    @property
    @abstractmethod
    def vocab_size(self):
        pass

    @property
    @abstractmethod
    def vocab(self):
        """token string -> id"""
        pass

    @property
    @abstractmethod
    def inv_vocab(self):
        """id -> token string"""
        pass

    @abstractmethod
    def tokenize(self, text):
        pass

    def detokenize(self, token_ids):
        raise NotImplementedError(f'{self.name} cannot detokenize')

    def _missing(self, what):
        raise NotImplementedError(f'{self.name} has no {what} token')

    @property
    def cls(self):
        self._missing('CLS')

    @property
    def sep(self):
        self._missing('SEP')

    @property
    def pad(self):
        self._missing('PAD')

    @property
    def eod(self):
        self._missing('EOD')

    @property
    def mask(self):
        self._missing('MASK')


class _BertWordPieceTokenizer(AbstractTokenizer):
    """WordPiece with the BERT special tokens."""

    def __init__(self, vocab_file, lower_case=True, vocab_extra_ids=0):
        super().__init__('WordPiece (lower-cased)' if lower_case else 'WordPiece (cased)')
        self.tokenizer = FullBertTokenizer(vocab_file, do_lower_case=lower_case)
        self.cls_id = self.tokenizer.vocab['[CLS]']
        self.sep_id = self.tokenizer.vocab['[SEP]']
        self.pad_id = self.tokenizer.vocab['[PAD]']
        self.mask_id = self.tokenizer.vocab['[MASK]']
        for token in ['[BOS]', '[EOS]'] + \
                [f'<extra_id_{i}>' for i in range(vocab_extra_ids)]:
            self.add_token(token)

    def add_token(self, token):
        if token not in self.vocab:
            self.inv_vocab[self.vocab_size] = token
            self.vocab[token] = self.vocab_size

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size()

    @property
    def vocab(self):
        return self.tokenizer.vocab

    @property
    def inv_vocab(self):
        return self.tokenizer.inv_vocab

    def tokenize(self, text):
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))

    def detokenize(self, token_ids):
        return self.tokenizer.convert_tokens_to_string(
            self.tokenizer.convert_ids_to_tokens(token_ids))

    @property
    def cls(self):
        return self.cls_id

    @property
    def sep(self):
        return self.sep_id

    @property
    def pad(self):
        return self.pad_id

    @property
    def mask(self):
        return self.mask_id


class _GPT2BPETokenizer(AbstractTokenizer):
    """Byte-level BPE; <|endoftext|> is the end-of-document token."""

    def __init__(self, vocab_file, merge_file):
        super().__init__('GPT2 BPE')
        self.tokenizer = GPT2Tokenizer(vocab_file, merge_file, errors='replace',
                                       special_tokens=[], max_len=None)
        self.eod_id = self.tokenizer.encoder['<|endoftext|>']

    @property
    def vocab_size(self):
        return len(self.tokenizer.encoder)

    @property
    def vocab(self):
        return self.tokenizer.encoder

    @property
    def inv_vocab(self):
        return self.tokenizer.decoder

    def tokenize(self, text):
        return self.tokenizer.encode(text)

    def detokenize(self, token_ids):
        return self.tokenizer.decode(token_ids)

    @property
    def eod(self):
        return self.eod_id
