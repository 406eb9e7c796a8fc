"""Training batches of one epoch, grouped by clip length, exact across ranks and resumable.

Clips in a batch are padded to the longest one; with shuffled batches a quarter of BX's frames
are padding. :func:`length_grouped_batches` shuffles the samples, sorts them by length inside
windows of ``window`` global batches, cuts the sorted windows into batches and shuffles the
batch order, so that a batch holds clips of about the same length while the epoch's order stays
random. Everything is drawn from ``(seed, epoch)`` alone: replaying an epoch (a resume in the
middle of it) gives the same batches.

Across ``world`` processes every sample is in exactly one batch of one rank, and every rank gets
the same number of batches (DDP steps together): the samples are cut into a multiple of
``world`` batches whose sizes differ by at most one (so a batch may hold one sample less than
``batch_size``). With ``drop_last`` the samples beyond the last whole round of ``world`` full
batches are left out instead.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["length_grouped_batches", "padding_fraction"]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, world: int = 1, rank: int = 0,
                           seed: int = 0, epoch: int = 0, drop_last: bool = False,
                           window: int = 50) -> list[list[int]]:
    """This rank's batches (lists of sample indices) of one epoch; see the module docstring."""
    if batch_size < 1 or world < 1 or not 0 <= rank < world or window < 1:
        raise ValueError(f"need batch_size >= 1, world >= 1, 0 <= rank < world, window >= 1; got "
                         f"batch_size={batch_size}, world={world}, rank={rank}, window={window}")
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(len(lengths))  # (N,)
    round_size = batch_size * world
    if drop_last:
        order = order[:len(order) // round_size * round_size]
    if len(order) < world:
        return []
    span = round_size * window
    parts = [order[i:i + span] for i in range(0, len(order), span)]
    order = np.concatenate([part[np.argsort(-lengths[part], kind="stable")] for part in parts])  # longest first
    n_batches = math.ceil(math.ceil(len(order) / batch_size) / world) * world
    batches = np.array_split(order, n_batches)  # contiguous runs of similar length, sizes differ by <= 1
    shuffled = [batches[i] for i in rng.permutation(n_batches)]
    return [b.tolist() for b in shuffled[rank::world]]


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded frames that are padding when each batch is padded to its longest clip."""
    lengths = np.asarray(lengths, dtype=np.int64)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches if len(b))
    return 1.0 - real / padded if padded else 0.0
