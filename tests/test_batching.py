"""Length-grouped training batches: every row once per epoch, rows of similar length together, batches in a seeded
order that is neither the data's nor sorted by length."""

from __future__ import annotations

import random

import pytest

from saro.train.batching import LengthBatchSampler, padded_tokens


def _lengths(n: int = 200, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(30, 320) for _ in range(n)]


def test_every_row_once_and_less_padding_than_random_batches() -> None:
    lengths = _lengths()
    s = LengthBatchSampler(lengths, batch_size=4, seed=3)
    order = list(s)
    assert sorted(order) == list(range(len(lengths))) and len(s) == len(lengths)
    batches = s.batches()
    assert [i for b in batches for i in b] == order
    assert all(len(b) == 4 for b in batches)
    random_batches = [
        order_r[i : i + 4] for order_r in [random.Random(1).sample(range(200), 200)] for i in range(0, 200, 4)
    ]
    assert padded_tokens(lengths, batches) < 0.9 * padded_tokens(lengths, random_batches)
    assert padded_tokens(lengths, batches) >= sum(lengths)
    # within a batch the rows are neighbours in length order
    ranks = {i: r for r, i in enumerate(sorted(range(200), key=lambda i: (lengths[i], i)))}
    assert all(max(ranks[i] for i in b) - min(ranks[i] for i in b) == 3 for b in batches)


def test_batch_order_is_shuffled_seeded_and_changes_per_epoch() -> None:
    lengths = _lengths()
    a = LengthBatchSampler(lengths, 4, seed=0)
    assert (
        a.batches() == LengthBatchSampler(lengths, 4, seed=0).batches()
    )  # a resumed run sees the same order
    firsts = [lengths[b[0]] for b in a.batches()]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # not a length curriculum
    assert a.batches() != LengthBatchSampler(lengths, 4, seed=1).batches()
    before = a.batches()
    a.set_epoch(1)
    assert a.batches() != before and sorted(map(sorted, a.batches())) == sorted(map(sorted, before))


def test_last_batch_may_be_short_and_bad_size_is_refused() -> None:
    s = LengthBatchSampler([5, 1, 3, 2, 4], batch_size=2)
    assert sorted(len(b) for b in s.batches()) == [1, 2, 2]
    assert sorted(s) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        LengthBatchSampler([1], batch_size=0)
