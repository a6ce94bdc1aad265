"""porter: port new transformer architectures into a Megatron-DeepSpeed source tree."""

__version__ = "0.1.0"
