"""Naive pure-Python references for the alignment algorithms (tests and benchmarks only).

Each function is the textbook double loop with no vectorisation, written independently of
:mod:`alignment.dtw` and :mod:`alignment.window` so that they can check each other. The
conventions (tie order diagonal > up > left, band ``|i - j| <= w``, exclusive subsequence end) are
those documented in :mod:`alignment.dtw`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

Matrix = list[list[float]]


def naive_local_cost(x: Sequence[Sequence[float]], y: Sequence[Sequence[float]],
                     metric: str = "sqeuclidean") -> Matrix:
    """Local cost by explicit loops over frames and dimensions."""
    out: Matrix = []
    for a in x:
        row = []
        for b in y:
            if metric == "cosine":
                dot = sum(float(p) * float(q) for p, q in zip(a, b))
                na = math.sqrt(sum(float(p) ** 2 for p in a))
                nb = math.sqrt(sum(float(q) ** 2 for q in b))
                row.append(1.0 - (dot / (na * nb) if na > 0 and nb > 0 else 0.0))
            else:
                sq = sum((float(p) - float(q)) ** 2 for p, q in zip(a, b))
                row.append(math.sqrt(sq) if metric == "euclidean" else sq)
        out.append(row)
    return out


def naive_dtw(cost: Matrix, band: Optional[int] = None, penalty: float = 0.0) -> tuple[float, Matrix]:
    """Full DTW: ``(total cost, accumulated matrix)``; cells outside the band stay ``inf``."""
    t1, t2 = len(cost), len(cost[0])
    inf = math.inf
    acc = [[inf] * t2 for _ in range(t1)]
    for i in range(t1):
        for j in range(t2):
            if band is not None and abs(i - j) > band:
                continue
            c = float(cost[i][j])
            if i == 0 and j == 0:
                acc[i][j] = c
                continue
            best = inf
            if i > 0 and j > 0:
                best = min(best, acc[i - 1][j - 1])
            if i > 0:
                best = min(best, acc[i - 1][j] + penalty)
            if j > 0:
                best = min(best, acc[i][j - 1] + penalty)
            acc[i][j] = c + best
    return acc[t1 - 1][t2 - 1], acc


def naive_subsequence_dtw(cost: Matrix, penalty: float = 0.0) -> tuple[float, int, int, Matrix]:
    """Subsequence DTW: ``(cost, start, end_exclusive, accumulated)`` with open begin/end on columns."""
    t1, t2 = len(cost), len(cost[0])
    inf = math.inf
    acc = [[inf] * t2 for _ in range(t1)]
    for j in range(t2):
        acc[0][j] = float(cost[0][j])
    for i in range(1, t1):
        for j in range(t2):
            best = acc[i - 1][j] + penalty
            if j > 0:
                best = min(best, acc[i - 1][j - 1], acc[i][j - 1] + penalty)
            acc[i][j] = float(cost[i][j]) + best
    end = min(range(t2), key=lambda j: (acc[t1 - 1][j], j))
    path = naive_backtrack(acc, end, subsequence=True, penalty=penalty)
    return acc[t1 - 1][end], path[0][1], end + 1, acc


def naive_backtrack(acc: Matrix, end_col: Optional[int] = None, subsequence: bool = False,
                    penalty: float = 0.0) -> list[tuple[int, int]]:
    """Trace a path back from ``(T1-1, end_col)`` (default last column), ties diagonal > up > left."""
    i = len(acc) - 1
    j = len(acc[0]) - 1 if end_col is None else end_col
    path = [(i, j)]
    while i > 0 or (j > 0 and not subsequence):
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            options = [(acc[i - 1][j - 1], 0), (acc[i - 1][j] + penalty, 1),
                       (acc[i][j - 1] + penalty, 2)]
            _, move = min(options)
            if move == 0:
                i, j = i - 1, j - 1
            elif move == 1:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return path[::-1]


def naive_window_costs(query: Sequence[Sequence[float]],
                       reference: Sequence[Sequence[float]]) -> list[float]:
    """Summed squared distance of ``query`` to every same-length window of ``reference``."""
    length = len(query)
    costs = []
    for s in range(len(reference) - length + 1):
        total = 0.0
        for t in range(length):
            total += sum((float(p) - float(q)) ** 2 for p, q in zip(query[t], reference[s + t]))
        costs.append(total)
    return costs
