# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Tokenize a JSON-lines corpus into this tree's indexed dataset format.

Each input line is a JSON object; the text under every --json-keys key is
tokenized with build_tokenizer (so any tokenizer the tree knows works)
and written to <output-prefix>_<key>_document.{bin,idx}
(..._sentence with --split-sentences).
"""

import argparse
import json
import multiprocessing
import os
import re
import sys
sys.path.append(os.path.abspath(os.path.join(os.path.dirname(__file__),
                                             os.path.pardir)))
import time

import torch

from megatron.arguments import _add_data_args
from megatron.tokenizer import build_tokenizer
from megatron.data import indexed_dataset


class IdentitySplitter(object):
    def tokenize(self, *text):
        return text


class SimpleSentenceSplitter(object):
    """Split after ., ! or ? followed by whitespace (no NLTK needed)."""

    def __init__(self, keep_newlines=False):
        self.keep_newlines = keep_newlines

    def tokenize(self, text):
        pieces = re.split(r'(?<=[.!?])(\s+)', text)
        sentences = []
        for i in range(0, len(pieces), 2):
            sentence = pieces[i]
            gap = pieces[i + 1] if i + 1 < len(pieces) else ''
            if self.keep_newlines and '\n' in gap:
                sentence += '\n'
            if sentence.strip():
                sentences.append(sentence)
        return sentences


class Encoder(object):
    def __init__(self, args):
        self.args = args

    def initializer(self):
        # One tokenizer per worker process, kept on the class.
        Encoder.tokenizer = build_tokenizer(self.args)
        if self.args.split_sentences:
            Encoder.splitter = SimpleSentenceSplitter(self.args.keep_newlines)
        else:
            Encoder.splitter = IdentitySplitter()

    def encode(self, json_line):
        data = json.loads(json_line)
        ids = {}
        for key in self.args.json_keys:
            doc_ids = []
            for sentence in Encoder.splitter.tokenize(data[key]):
                sentence_ids = Encoder.tokenizer.tokenize(sentence)
                if len(sentence_ids) > 0:
                    doc_ids.append(sentence_ids)
            if len(doc_ids) > 0 and self.args.append_eod:
                doc_ids[-1].append(Encoder.tokenizer.eod)
            ids[key] = doc_ids
        return ids, len(json_line)


def get_args():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    group = parser.add_argument_group(title='input data')
    group.add_argument('--input', type=str, required=True,
                       help='JSON-lines input file.')
    group.add_argument('--json-keys', nargs='+', default=['text'],
                       help='Keys of the JSON objects to tokenize.')
    group.add_argument('--split-sentences', action='store_true',
                       help='Store each sentence as its own sequence.')
    group.add_argument('--keep-newlines', action='store_true',
                       help='Keep newlines at sentence ends when splitting.')

    group = parser.add_argument_group(title='tokenizer')
    group.add_argument('--append-eod', action='store_true',
                       help='End every document with the end-of-document token.')
    # --tokenizer-type, --vocab-file, --merge-file (and any tokenizer option a
    # port adds there) are the training script's own data arguments, so
    # build_tokenizer sees here exactly what it sees during training.
    parser = _add_data_args(parser)

    group = parser.add_argument_group(title='output data')
    group.add_argument('--output-prefix', type=str, required=True,
                       help='Output path without the suffix.')
    group.add_argument('--dataset-impl', type=str, default='mmap',
                       choices=['lazy', 'cached', 'mmap'])

    group = parser.add_argument_group(title='runtime')
    group.add_argument('--workers', type=int, default=1,
                       help='Worker processes.')
    group.add_argument('--log-interval', type=int, default=100,
                       help='Documents between progress reports.')
    args = parser.parse_args()
    args.keep_empty = False
    if args.tokenizer_type is None:
        parser.error('--tokenizer-type is required')

    # build_tokenizer reads these training arguments.
    args.rank = 0
    args.make_vocab_size_divisible_by = 128
    args.tensor_model_parallel_size = 1

    return args


def main():
    args = get_args()
    startup_start = time.time()

    encoder = Encoder(args)
    tokenizer = build_tokenizer(args)
    level = 'sentence' if args.split_sentences else 'document'
    print(f'vocabulary: {tokenizer.vocab_size} tokens')
    print(f'writing to {args.output_prefix}_*')

    builders = {}
    output_idx_files = {}
    for key in args.json_keys:
        stem = f'{args.output_prefix}_{key}_{level}'
        output_idx_files[key] = stem + '.idx'
        builders[key] = indexed_dataset.make_builder(
            stem + '.bin', impl=args.dataset_impl,
            vocab_size=tokenizer.vocab_size)

    with open(args.input, 'r', encoding='utf-8') as fin:
        if args.workers > 1:
            pool = multiprocessing.Pool(args.workers,
                                        initializer=encoder.initializer)
            encoded_docs = pool.imap(encoder.encode, fin, 25)
        else:
            encoder.initializer()
            encoded_docs = map(encoder.encode, fin)

        proc_start = time.time()
        total_bytes = 0
        print(f'startup took {proc_start - startup_start:.2f} s')
        for i, (doc, bytes_processed) in enumerate(encoded_docs, start=1):
            total_bytes += bytes_processed
            for key, sentences in doc.items():
                if len(sentences) == 0:
                    continue
                for sentence in sentences:
                    builders[key].add_item(torch.IntTensor(sentence))
                builders[key].end_document()
            if i % args.log_interval == 0:
                elapsed = time.time() - proc_start
                print(f'{i} documents done ({i / elapsed:.1f}/s, '
                      f'{total_bytes / elapsed / 2**20:.2f} MB/s)',
                      file=sys.stderr)

    for key in args.json_keys:
        builders[key].finalize(output_idx_files[key])


if __name__ == '__main__':
    main()
