"""dataloaders.sampler: length-grouped batches cover every sample exactly once per epoch across
ranks, give every rank the same number of steps, replay exactly, and cut padding (against a
naive padding count and against shuffled batches of the same sizes)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dataloaders.sampler import length_grouped_batches, padding_fraction


def lengths_like_bx(n: int = 834, seed: int = 0) -> list[int]:
    """Six samples per clip (labels and paraphrases), clips of 32..96 frames."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(32, 97, size=n // 6 + 1)
    return [int(clips[i // 6]) for i in range(n)]


def naive_padding(batches, lengths) -> float:
    padded = real = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        for i in batch:
            padded += longest
            real += lengths[i]
    return (padded - real) / padded


@pytest.mark.parametrize("n, batch_size, world", [(834, 16, 1), (834, 16, 2), (835, 16, 3), (7, 4, 2),
                                                  (5, 16, 4), (100, 10, 1)])
def test_every_sample_once_across_ranks_and_equal_steps(n, batch_size, world):
    lengths = lengths_like_bx(n)
    for epoch in (0, 1):
        per_rank = [length_grouped_batches(lengths, batch_size, world=world, rank=r, seed=3, epoch=epoch)
                    for r in range(world)]
        counts = Counter(i for batches in per_rank for b in batches for i in b)
        assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}
        assert len({len(batches) for batches in per_rank}) == 1  # DDP: the same number of steps
        sizes = [len(b) for batches in per_rank for b in batches]
        assert max(sizes) <= batch_size and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_drop_last_keeps_whole_rounds_of_full_batches():
    lengths = lengths_like_bx(835)
    per_rank = [length_grouped_batches(lengths, 16, world=2, rank=r, seed=0, epoch=0, drop_last=True)
                for r in range(2)]
    assert all(len(b) == 16 for batches in per_rank for b in batches)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 835 // 32 * 32


def test_same_seed_and_epoch_replay_exactly_and_epochs_differ():
    lengths = lengths_like_bx()
    first = length_grouped_batches(lengths, 16, seed=1, epoch=4)
    assert first == length_grouped_batches(lengths, 16, seed=1, epoch=4)  # a resume replays the epoch
    assert first != length_grouped_batches(lengths, 16, seed=1, epoch=5)
    assert first != length_grouped_batches(lengths, 16, seed=2, epoch=4)


def test_padding_falls_against_shuffled_batches():
    lengths = lengths_like_bx()
    grouped = length_grouped_batches(lengths, 16, seed=0, epoch=0)
    order = np.random.default_rng(0).permutation(len(lengths))
    shuffled = [order[i:i + 16].tolist() for i in range(0, len(order), 16)]
    assert padding_fraction(grouped, lengths) == pytest.approx(naive_padding(grouped, lengths), abs=1e-12)
    assert padding_fraction(shuffled, lengths) == pytest.approx(naive_padding(shuffled, lengths), abs=1e-12)
    assert padding_fraction(grouped, lengths) < 0.05 < 0.15 < padding_fraction(shuffled, lengths)


def test_batch_order_is_shuffled_not_sorted():
    lengths = lengths_like_bx()
    longest = [max(lengths[i] for i in b) for b in length_grouped_batches(lengths, 16, seed=0, epoch=0)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rank"):
        length_grouped_batches([1, 2, 3], 2, world=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches([1, 2, 3], 0)
