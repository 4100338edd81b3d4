"""Length-grouped training batches in a seeded random order (``length_grouping`` in a training section).

A batch is padded to its longest row, so on a CPU, where every padded token costs as much as a real one, random
batches of rows from 40 to 300 tokens spend a large share of each step on padding (measured on the demo's data:
14% of the SFT tokens, 37% of the DPO tokens, where chosen and rejected are padded to the longest of both). Rows
are sorted by length and cut into batches of the per-device batch size, and the *batches* are shuffled from the
run's seed (and the epoch), so the model does not see its data from the longest to the shortest, as transformers'
``group_by_length`` sampler does when the whole dataset fits in one of its mega-batches. Every row is seen once per
epoch; what changes is only which rows share a batch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class LengthBatchSampler(Sampler[int]):
    """Row indices: rows of similar length in the same batch of ``batch_size``, batches in a shuffled order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Another batch order per epoch (the Trainer calls this when it starts one)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in the order they are trained."""
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], i))
        out = [order[b : b + self.batch_size] for b in range(0, len(order), self.batch_size)]
        random.Random(f"length-batches:{self.seed}:{self.epoch}").shuffle(out)
        return out

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths)


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Tokens the model computes over these batches, padding included (each batch padded to its longest row)."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches if b)


def train_sampler(args: Any, lengths: Sequence[int]) -> LengthBatchSampler:
    """The sampler for a training run whose config sets ``length_grouping``; logs the padding it saves."""
    sampler = LengthBatchSampler(lengths, args.per_device_train_batch_size, args.seed)
    b = sampler.batch_size
    plain = [list(range(i, min(i + b, len(lengths)))) for i in range(0, len(lengths), b)]
    real = sum(lengths)
    log.info(
        "length-grouped batches of %d: %d tokens with padding (%d real; in data order, unsorted: %d)",
        b,
        padded_tokens(lengths, sampler.batches()),
        real,
        padded_tokens(lengths, plain),
    )
    return sampler
