# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Token datasets on disk: <prefix>.bin + <prefix>.idx.

This tree uses its own simple format (not Megatron's):

* .bin: all sequences' token ids back to back, in one numpy dtype.
* .idx: header, then arrays sizes (int32, tokens per sequence),
  pointers (int64, element offset of each sequence in .bin) and
  doc_idx (int64, index of the first sequence of each document, plus a
  final entry equal to the number of sequences).

Header: 8-byte magic, uint64 version, uint8 dtype code, uint64 number of
sequences, uint64 number of doc_idx entries.
"""

import os
import struct

import numpy as np
import torch

_MAGIC = b'PORTRIDX'
_VERSION = 1
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
           6: np.float32, 7: np.float64, 8: np.uint16}
_HEADER = struct.Struct('<8sQBQQ')


def code(dtype):
    for k, v in _DTYPES.items():
        if np.dtype(v) == np.dtype(dtype):
            return k
    raise ValueError(f'unsupported dtype {dtype}')


def best_fitting_dtype(vocab_size=None):
    if vocab_size is not None and vocab_size < 65500:
        return np.uint16
    return np.int32


def get_available_dataset_impl():
    return ['lazy', 'cached', 'mmap']


def index_file_path(prefix_path):
    return prefix_path + '.idx'


def data_file_path(prefix_path):
    return prefix_path + '.bin'


def infer_dataset_impl(path):
    if not MMapIndexedDataset.exists(path):
        return None
    with open(index_file_path(path), 'rb') as f:
        if f.read(len(_MAGIC)) == _MAGIC:
            return 'mmap'
    print('Dataset index is not in this tree\'s format.', flush=True)
    return None


def make_builder(out_file, impl, vocab_size=None):
    # All implementations share the one on-disk format.
    return MMapIndexedDatasetBuilder(out_file,
                                     dtype=best_fitting_dtype(vocab_size))


def make_dataset(path, impl, skip_warmup=False):
    if not MMapIndexedDataset.exists(path):
        print(f'Dataset does not exist: {path}', flush=True)
        return None
    if impl == 'infer':
        impl = infer_dataset_impl(path)
    if impl in get_available_dataset_impl():
        return MMapIndexedDataset(path, skip_warmup)
    print(f'Unknown dataset implementation: {impl}', flush=True)
    return None


def dataset_exists(path, impl):
    return MMapIndexedDataset.exists(path)


class MMapIndexedDataset(torch.utils.data.Dataset):
    """Memory-mapped reader; ds[i] is sequence i as a numpy array."""

    def __init__(self, path, skip_warmup=False):
        super().__init__()
        self._path = path
        with open(index_file_path(path), 'rb') as f:
            magic, version, dtype_code, n_seq, n_doc = \
                _HEADER.unpack(f.read(_HEADER.size))
            assert magic == _MAGIC, f'{path}.idx is not in this tree\'s format'
            assert version == _VERSION, f'unknown index version {version}'
            self._dtype = _DTYPES[dtype_code]
            self._sizes = np.frombuffer(f.read(4 * n_seq), dtype=np.int32)
            self._pointers = np.frombuffer(f.read(8 * n_seq), dtype=np.int64)
            self._doc_idx = np.frombuffer(f.read(8 * n_doc), dtype=np.int64)
        if not skip_warmup:
            with open(data_file_path(path), 'rb') as f:
                while f.read(1 << 24):
                    pass
        if os.path.getsize(data_file_path(path)) == 0:
            self._bin = np.zeros(0, dtype=self._dtype)
        else:
            self._bin = np.memmap(data_file_path(path), dtype=self._dtype,
                                  mode='r')

    def __len__(self):
        return len(self._sizes)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self[i] for i in range(*idx.indices(len(self)))]
        return self.get(idx)

    def get(self, idx, offset=0, length=None):
        """Tokens [offset, offset + length) of sequence idx."""
        size = int(self._sizes[idx])
        if length is None:
            length = size - offset
        start = int(self._pointers[idx]) + offset
        return np.array(self._bin[start:start + length])

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return int(self._sizes[index])

    @property
    def doc_idx(self):
        return self._doc_idx

    def get_doc_idx(self):
        return self._doc_idx

    @property
    def dtype(self):
        return self._dtype

    @property
    def supports_prefetch(self):
        return False

    @staticmethod
    def exists(path):
        return os.path.exists(index_file_path(path)) and \
            os.path.exists(data_file_path(path))


class MMapIndexedDatasetBuilder(object):
    """Append sequences with add_item, close documents with
    end_document, write the index with finalize."""

    def __init__(self, out_file, dtype=np.int64):
        self._data_file = open(out_file, 'wb')
        self._dtype = dtype
        self._sizes = []
        self._doc_idx = [0]

    def add_item(self, tensor):
        arr = np.asarray(tensor.numpy() if torch.is_tensor(tensor) else tensor,
                         dtype=self._dtype)
        self._data_file.write(arr.tobytes(order='C'))
        self._sizes.append(arr.size)

    def end_document(self):
        self._doc_idx.append(len(self._sizes))

    def merge_file_(self, another_file):
        other = MMapIndexedDataset(another_file, skip_warmup=True)
        assert np.dtype(other.dtype) == np.dtype(self._dtype)
        base = len(self._sizes)
        for i in range(len(other)):
            self.add_item(other.get(i))
        self._doc_idx.extend(int(d) + base for d in other.doc_idx[1:])

    def finalize(self, index_file):
        self._data_file.close()
        sizes = np.asarray(self._sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            pointers[1:] = np.cumsum(sizes[:-1], dtype=np.int64)
        doc_idx = np.asarray(self._doc_idx, dtype=np.int64)
        with open(index_file, 'wb') as f:
            f.write(_HEADER.pack(_MAGIC, _VERSION, code(self._dtype),
                                 len(sizes), len(doc_idx)))
            f.write(sizes.tobytes(order='C'))
            f.write(pointers.tobytes(order='C'))
            f.write(doc_idx.tobytes(order='C'))
