# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""GPT samples: fixed-length windows over the concatenated documents.

Documents are shuffled and repeated for as many epochs as needed; sample i
is the token window starting at position i * seq_length of that stream
and is seq_length + 1 long (inputs plus the shifted labels).
"""

import time

import numpy as np
import torch

from megatron import print_rank_0
from megatron.data.indexed_dataset import make_dataset as make_indexed_dataset


def build_train_valid_test_datasets(data_prefix, data_impl, splits_string,
                                    train_valid_test_num_samples,
                                    seq_length, seed, skip_warmup):
    """Train/valid/test GPTDatasets from one preprocessed prefix."""
    if len(data_prefix) != 1:
        raise NotImplementedError(
            'the sample tree reads a single --data-path prefix (no blending)')
    return _build_train_valid_test_datasets(data_prefix[0],
                                            data_impl, splits_string,
                                            train_valid_test_num_samples,
                                            seq_length, seed, skip_warmup)


def _build_train_valid_test_datasets(data_prefix, data_impl, splits_string,
                                     train_valid_test_num_samples,
                                     seq_length, seed, skip_warmup):
    indexed_dataset = get_indexed_dataset_(data_prefix, data_impl, skip_warmup)
    total_num_of_documents = indexed_dataset.sizes.shape[0]
    splits = get_train_valid_test_split_(splits_string, total_num_of_documents)

    print_rank_0(' > document split')
    for i, name in enumerate(['train', 'validation', 'test']):
        print_rank_0(f'    {name}: documents [{splits[i]}, {splits[i + 1]})')

    def build_dataset(index, name):
        if splits[index + 1] <= splits[index]:
            return None
        documents = np.arange(splits[index], splits[index + 1], dtype=np.int32)
        return GPTDataset(name, data_prefix, documents, indexed_dataset,
                          train_valid_test_num_samples[index],
                          seq_length, seed)

    return (build_dataset(0, 'train'), build_dataset(1, 'valid'),
            build_dataset(2, 'test'))


def get_indexed_dataset_(data_prefix, data_impl, skip_warmup):
    print_rank_0(' > opening the indexed dataset')
    start = time.time()
    indexed_dataset = make_indexed_dataset(data_prefix, data_impl, skip_warmup)
    assert indexed_dataset is not None, f'cannot read dataset {data_prefix}'
    print_rank_0(f' > indexed dataset ready in {time.time() - start:.4f} s, '
                 f'{indexed_dataset.sizes.shape[0]} documents')
    return indexed_dataset


def get_train_valid_test_split_(splits_string, size):
    """Document boundaries [0, a, b, size] from proportions like "969,30,1"."""
    sep = '/' if '/' in splits_string else ','
    weights = [float(x) for x in splits_string.split(sep) if x.strip()]
    weights = (weights + [0.0, 0.0, 0.0])[:3]
    total = sum(weights)
    assert total > 0.0, f'bad split string {splits_string!r}'
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + int(round(w / total * size)))
    bounds[-1] = size
    bounds = [min(b, size) for b in bounds]
    assert len(bounds) == 4 and bounds == sorted(bounds)
    return bounds


class GPTDataset(torch.utils.data.Dataset):

    def __init__(self, name, data_prefix, documents, indexed_dataset,
                 num_samples, seq_length, seed):
        self.name = name
        self.indexed_dataset = indexed_dataset
        assert np.min(documents) >= 0
        assert np.max(documents) < indexed_dataset.sizes.shape[0]
        self.doc_idx, self.sample_idx, self.shuffle_idx = _build_index_mappings(
            self.name, data_prefix, documents, self.indexed_dataset.sizes,
            num_samples, seq_length, seed)

    def __len__(self):
        return self.sample_idx.shape[0] - 1

    def __getitem__(self, idx):
        idx = self.shuffle_idx[idx]
        doc_f, off_f = self.sample_idx[idx]
        doc_l, off_l = self.sample_idx[idx + 1]
        if doc_f == doc_l:
            sample = self.indexed_dataset.get(self.doc_idx[doc_f], offset=off_f,
                                              length=off_l - off_f + 1)
        else:
            parts = [self.indexed_dataset.get(self.doc_idx[doc_f], offset=off_f)]
            parts += [self.indexed_dataset.get(self.doc_idx[d])
                      for d in range(doc_f + 1, doc_l)]
            parts.append(self.indexed_dataset.get(self.doc_idx[doc_l],
                                                  length=off_l + 1))
            sample = np.concatenate(parts)
        return {'text': np.array(sample, dtype=np.int64)}


def _build_index_mappings(name, data_prefix, documents, sizes,
                          num_samples, seq_length, seed):
    """doc_idx: document order over all epochs; sample_idx[i]: (position in
    doc_idx, token offset) where sample i starts; shuffle_idx: sample order."""
    start = time.time()
    tokens_per_epoch = _num_tokens(documents, sizes)
    assert tokens_per_epoch > seq_length, \
        f'{name} split has only {tokens_per_epoch} tokens'
    num_epochs = _num_epochs(tokens_per_epoch, seq_length, num_samples)
    np_rng = np.random.RandomState(seed=seed)
    doc_idx = _build_doc_idx(documents, num_epochs, np_rng)
    sample_idx = _build_sample_idx(sizes, doc_idx, seq_length)
    shuffle_idx = _build_shuffle_idx(sample_idx.shape[0] - 1, np_rng)
    print_rank_0(f' > {name}: {sample_idx.shape[0] - 1} samples over '
                 f'{num_epochs} epoch(s), built in {time.time() - start:.3f} s')
    return doc_idx, sample_idx, shuffle_idx


def _num_tokens(documents, sizes):
    return int(np.sum(sizes[documents]))


def _num_epochs(tokens_per_epoch, seq_length, num_samples):
    """Fewest epochs giving num_samples windows (each needs one extra
    token beyond its seq_length)."""
    epochs = 1
    while (epochs * tokens_per_epoch - 1) // seq_length < max(num_samples, 1):
        epochs += 1
    return epochs


def _build_doc_idx(documents, num_epochs, np_rng):
    order = []
    for _ in range(num_epochs):
        epoch = np.array(documents, dtype=np.int32)
        np_rng.shuffle(epoch)
        order.append(epoch)
    return np.concatenate(order)


def _build_sample_idx(sizes, doc_idx, seq_length):
    lengths = sizes[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)
    num_samples = (int(ends[-1]) - 1) // seq_length
    starts = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    doc = np.searchsorted(ends, starts, side='right')
    offset = starts - (ends[doc] - lengths[doc])
    return np.stack([doc, offset], axis=1).astype(np.int64)


def _build_shuffle_idx(num_samples, np_rng):
    shuffle_idx = np.arange(num_samples, dtype=np.int64)
    np_rng.shuffle(shuffle_idx)
    return shuffle_idx
