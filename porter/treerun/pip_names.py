"""Which pip line installs a package a tree imports: data, read by porter.treerun.failure.

A name on PyPI is not always the project a tree means (argonne-lcf's trees import their lab's
`ezpz`; the `ezpz` on PyPI is an unrelated project), so porter gives a pip line only where it
knows one: an import name whose distribution is named otherwise, a package of porter's own
`train` extra, or one of the packages below, which Megatron-DeepSpeed trees import under
their PyPI names.
"""

# import name -> the name pip knows it by, where they differ
PIP_NAMES = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "cv2": "opencv-python",
             "google": "protobuf", "Crypto": "pycryptodome", "attr": "attrs", "dateutil": "python-dateutil",
             "lm_eval": "lm-eval", "tensorboardX": "tensorboardX"}

# import names that are their own PyPI project, as the trees use them
SAME_ON_PYPI = frozenset({
    "accelerate", "datasets", "deepspeed", "einops", "ftfy", "h5py", "mpi4py", "ninja", "nltk", "numpy",
    "packaging", "pandas", "psutil", "pybind11", "regex", "requests", "safetensors", "scipy", "sentencepiece",
    "six", "tensorboard", "tiktoken", "tokenizers", "torch", "tqdm", "transformers", "wandb", "zstandard",
})
