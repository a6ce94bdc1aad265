"""The size of the tiny models runs in a tree use: smoke trains one, verify compares one with HF."""

from __future__ import annotations

from dataclasses import dataclass

from porter.spec import Spec


@dataclass(frozen=True)
class RunShape:
    """A tiny model and its batch: the numbers the tree's command line needs, and the vocabulary.

    `batch_size` is the sequences of one micro-batch. porter.smoke.config.SmokeConfig and
    porter.verify.reference.TinyConfig extend it with what their runs add.
    """

    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    vocab_size: int = 256
    seq_length: int = 32
    batch_size: int = 2
    seed: int = 1234


def tiny_spec(spec: Spec, shape: RunShape) -> Spec:
    """The spec at a tiny size: each difference picks values that show it (2 key/value heads
    of 4, a sliding window shorter than the sequence, ...); the spec's own sizes are a real
    model's and give way."""
    values: dict = {}
    for difference in spec.differences:
        values.update(difference.tiny(spec, shape))
    return spec.with_values(**values)
