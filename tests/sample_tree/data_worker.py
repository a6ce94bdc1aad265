"""Run by test_sample_tree_data.py in a subprocess: checks of the sample
tree's dataset format, GPT sample windows and masks.  Prints DATA-OK."""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])  # the sample tree

from megatron.data import indexed_dataset  # noqa: E402
from megatron.data.gpt_dataset import (GPTDataset,  # noqa: E402
                                       get_train_valid_test_split_)
from megatron.utils import get_ltor_masks_and_position_ids  # noqa: E402


def check_indexed_dataset(tmp):
    prefix = str(Path(tmp) / 'ds')
    docs = [[[1, 2, 3], [4, 5]], [[6]], [[7, 8, 9, 10]], [[11, 12], [13]]]
    builder = indexed_dataset.make_builder(prefix + '.bin', 'mmap',
                                           vocab_size=100)
    for doc in docs:
        for seq in doc:
            builder.add_item(torch.IntTensor(seq))
        builder.end_document()
    builder.finalize(prefix + '.idx')

    ds = indexed_dataset.make_dataset(prefix, 'infer', skip_warmup=True)
    flat = [seq for doc in docs for seq in doc]
    assert len(ds) == len(flat)
    assert ds.sizes.tolist() == [len(s) for s in flat]
    assert ds.doc_idx.tolist() == [0, 2, 3, 4, 6]
    for i, seq in enumerate(flat):
        assert ds[i].tolist() == seq
    assert ds.get(3, offset=1, length=2).tolist() == [8, 9]
    assert ds.dtype == np.uint16
    return ds


def check_gpt_windows(ds):
    seq_length = 3
    documents = np.arange(len(ds), dtype=np.int32)
    gpt = GPTDataset('train', 'unused', documents, ds, num_samples=10,
                     seq_length=seq_length, seed=7)
    assert len(gpt) >= 10
    stream = np.concatenate([ds[int(d)] for d in gpt.doc_idx])
    for i in range(len(gpt)):
        # Undo the shuffle to find which window this is.
        window = int(gpt.shuffle_idx[i])
        sample = gpt[i]['text']
        assert sample.dtype == np.int64 and len(sample) == seq_length + 1
        start = window * seq_length
        assert sample.tolist() == stream[start:start + seq_length + 1].tolist()
    assert sorted(gpt.shuffle_idx.tolist()) == list(range(len(gpt)))


def check_masks():
    eod = 0
    data = torch.tensor([[5, 6, 0, 7, 8, 0, 9]])
    mask, loss_mask, pos = get_ltor_masks_and_position_ids(
        data, eod, reset_position_ids=True, reset_attention_mask=True,
        eod_mask_loss=True)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2, 0]]
    assert loss_mask.tolist() == [[1, 1, 0, 1, 1, 0, 1]]
    allowed = ~mask[0, 0]
    # Token 4 (second document) sees tokens 3..4 only.
    assert allowed[4].tolist() == [False, False, False, True, True, False, False]
    plain, _, pos = get_ltor_masks_and_position_ids(data, eod, False, False, False)
    assert plain.shape == (1, 1, 7, 7) and plain.dtype == torch.bool
    assert torch.equal(~plain[0, 0], torch.tril(torch.ones(7, 7)).bool())
    assert pos.tolist() == [list(range(7))]


def check_split():
    assert get_train_valid_test_split_('969, 30, 1', 1000) == [0, 969, 999, 1000]
    assert get_train_valid_test_split_('98,1,1', 462)[-1] == 462
    assert get_train_valid_test_split_('100', 10) == [0, 10, 10, 10]


if __name__ == '__main__':
    with tempfile.TemporaryDirectory() as tmp:
        check_gpt_windows(check_indexed_dataset(tmp))
    check_masks()
    check_split()
    print('DATA-OK', flush=True)
