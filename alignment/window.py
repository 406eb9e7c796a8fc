"""Sliding-window matching: the best same-length window of a reference, by correlation.

For a query ``q (L, D)`` and a reference ``r (T, D)`` with ``L <= T``, the summed squared distance
of the window starting at ``s`` is

    SSD(s) = sum_t |q_t|^2 + sum_t |r_{s+t}|^2 - 2 sum_t <q_t, r_{s+t}>,

the last term being a cross-correlation over time summed over the D channels: one real FFT of
each sequence, a product summed over channels in the frequency domain, one inverse FFT. The
window energies come from a cumulative sum. No loop over starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft


@dataclass
class WindowMatch:
    """Best window ``reference[start:start + length]`` and the SSD of every start ``(T - L + 1,)``."""

    start: int
    length: int
    cost: float
    costs: np.ndarray


def cross_correlation(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``out[s] = sum_{t, d} query[t, d] * reference[s + t, d]`` for ``s = 0 .. T - L``."""
    length, t_ref = query.shape[0], reference.shape[0]
    size = sfft.next_fast_len(t_ref + length - 1, real=True)
    fq = sfft.rfft(query[::-1], n=size, axis=0)       # (F, D) reversed query: convolution = correlation
    fr = sfft.rfft(reference, n=size, axis=0)         # (F, D)
    full = sfft.irfft((fq * fr).sum(axis=1), n=size)  # (size,) full convolution, channels summed
    return full[length - 1: t_ref]                    # (T - L + 1,) valid part


def window_costs(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Summed squared distance of ``query (L, D)`` to each window of ``reference (T, D)``."""
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"window matching expects (L, D) and (T, D); found {query.shape}, "
                         f"{reference.shape}")
    length, t_ref = query.shape[0], reference.shape[0]
    if not 1 <= length <= t_ref:
        raise ValueError(f"the query ({length} frames) must be 1..{t_ref} frames long "
                         f"(the reference's length)")
    energy_r = np.concatenate([[0.0], np.cumsum((reference ** 2).sum(axis=1))])  # (T + 1,)
    window_energy = energy_r[length:] - energy_r[:-length]                       # (T - L + 1,)
    ssd = (query ** 2).sum() + window_energy - 2.0 * cross_correlation(query, reference)
    return np.maximum(ssd, 0.0)


def best_window(query: np.ndarray, reference: np.ndarray) -> WindowMatch:
    """The start of the same-length window of ``reference`` closest to ``query`` (first on ties)."""
    costs = window_costs(query, reference)
    start = int(np.argmin(costs))
    return WindowMatch(start=start, length=int(np.asarray(query).shape[0]), cost=float(costs[start]),
                       costs=costs)
