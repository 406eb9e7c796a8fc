"""Exact dynamic time warping: full, batched and subsequence DTW, with an optional Sakoe-Chiba band.

Conventions (shared by every function here and by :mod:`alignment.reference`):

* A warping path goes from ``(0, 0)`` to ``(T1 - 1, T2 - 1)`` with steps ``(1, 1)``, ``(1, 0)`` and
  ``(0, 1)``; the cost is the sum of the local costs of its cells (no step weights).
* The accumulated cost is ``D[i, j] = C[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])``.
* An optional ``penalty >= 0`` is added to every non-diagonal step (expansion or compression):
  ``D[i, j] = C[i, j] + min(D[i-1, j-1], D[i-1, j] + p, D[i, j-1] + p)``; it discourages the
  degenerate paths that map many frames onto one (``p = 0`` is plain DTW).
* Ties (equal predecessors) are broken in the order diagonal, then up ``(i-1, j)``, then left
  ``(i, j-1)``, both when tracing a path back and when tracking where a subsequence starts.
* Sakoe-Chiba band of radius ``w``: only cells with ``|i - j| <= w`` are allowed. When
  ``w < |T1 - T2|`` no path exists and the cost is ``inf``.
* Subsequence DTW (open begin and end on the reference ``y``): ``D[0, j] = C[0, j]`` for every
  ``j``; the end is the first ``j`` minimising ``D[T1 - 1, j]``. ``start`` and ``end`` are frame
  indices into the reference with **exclusive** end (``reference[start:end]`` is the matched
  segment), the convention of the data's ``aligned_std_{start,end}_frame``.

The recurrence is vectorised over anti-diagonals (all cells ``i + j = d`` depend only on diagonals
``d - 1`` and ``d - 2``) and over the batch, in float64, so every accumulated value is computed with
exactly the same floating-point operations as the naive double loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np

Metric = Literal["sqeuclidean", "euclidean", "cosine"]
METRICS = ("sqeuclidean", "euclidean", "cosine")


# --------------------------------------------------------------------------------------------
# local costs
# --------------------------------------------------------------------------------------------
def local_cost(x: np.ndarray, y: np.ndarray, metric: Metric = "sqeuclidean") -> np.ndarray:
    """Pairwise local cost between the frames of ``x`` and ``y``.

    ``x (T1, D)`` and ``y (T2, D)`` give ``(T1, T2)``; ``x (N, T1, D)`` and ``y (N, T2, D)`` give
    ``(N, T1, T2)``. Cosine distance is ``1 - cos``; a zero vector has similarity 0 (cost 1).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown DTW metric {metric!r}; expected one of {METRICS}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != y.ndim or x.ndim not in (2, 3) or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"local_cost expects (T1, D) and (T2, D) or (N, T1, D) and (N, T2, D); "
                         f"found {x.shape} and {y.shape}")
    if metric == "cosine":
        cross = x @ np.swapaxes(y, -1, -2)             # (.., T1, T2)
        nx = np.linalg.norm(x, axis=-1)[..., :, None]  # (.., T1, 1)
        ny = np.linalg.norm(y, axis=-1)[..., None, :]  # (.., 1, T2)
        denom = nx * ny
        sim = np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
        return 1.0 - sim
    # |x - y|^2 = [x, |x|^2, 1] . [-2y, 1, |y|^2]: one matrix product, one clamp
    dim = x.shape[-1]
    xa = np.empty(x.shape[:-1] + (dim + 2,))           # (.., T1, D + 2)
    xa[..., :dim] = x
    xa[..., dim] = np.einsum("...td,...td->...t", x, x)
    xa[..., dim + 1] = 1.0
    ya = np.empty(y.shape[:-1] + (dim + 2,))           # (.., T2, D + 2)
    ya[..., :dim] = -2.0 * y
    ya[..., dim] = 1.0
    ya[..., dim + 1] = np.einsum("...td,...td->...t", y, y)
    sq = xa @ np.swapaxes(ya, -1, -2)                  # (.., T1, T2)
    np.maximum(sq, 0.0, out=sq)
    return np.sqrt(sq, out=sq) if metric == "euclidean" else sq


# --------------------------------------------------------------------------------------------
# the anti-diagonal engine
# --------------------------------------------------------------------------------------------
@dataclass
class _Accumulated:
    """What :func:`_accumulate` returns (all per batch item)."""

    cost: np.ndarray                 # (N,) DTW cost (full) or best subsequence cost
    end: np.ndarray                  # (N,) exclusive end on the reference (subsequence) else T2
    start: np.ndarray                # (N,) start on the reference (subsequence) else 0
    acc: Optional[np.ndarray]        # (N, T1, T2) accumulated cost, when kept


def _diagonal_range(d: int, t1: int, t2: int, band: Optional[int]) -> tuple[int, int]:
    """Rows ``i`` (inclusive range) of the cells ``(i, d - i)`` inside the matrix and the band."""
    lo, hi = max(0, d - t2 + 1), min(d, t1 - 1)
    if band is not None:
        lo = max(lo, -((band - d) // 2))  # ceil((d - band) / 2)
        hi = min(hi, (d + band) // 2)
    return lo, hi


def _batch_last(cost: np.ndarray) -> np.ndarray:
    """``(N, T1, T2) -> (T1, T2, N)`` contiguous float64: the layout :func:`_accumulate` reads."""
    return np.ascontiguousarray(np.asarray(cost, dtype=np.float64).transpose(1, 2, 0))  # (T1, T2, N)


def local_cost_batch_last(x: np.ndarray, y: np.ndarray, metric: Metric = "sqeuclidean") -> np.ndarray:
    """:func:`local_cost` of ``x (N, T1, D)`` and ``y (N, T2, D)`` laid out as ``(T1, T2, N)``.

    For the Euclidean costs the norms, the factor -2 and the clamp are applied while the matrix
    product is transposed, so the batch costs one product and a few passes over the output.
    """
    if metric == "cosine":
        return _batch_last(local_cost(x, y, metric))
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cross = x @ np.swapaxes(y, -1, -2)                                   # (N, T1, T2)
    out = np.empty(cross.shape[1:] + cross.shape[:1])                    # (T1, T2, N)
    np.multiply(cross.transpose(1, 2, 0), -2.0, out=out)                 # (N, T1, T2) -> (T1, T2, N)
    out += np.einsum("ntd,ntd->tn", x, x)[:, None, :]                    # |x_i|^2: (T1, 1, N)
    out += np.einsum("ntd,ntd->tn", y, y)[None, :, :]                    # |y_j|^2: (1, T2, N)
    np.maximum(out, 0.0, out=out)
    return np.sqrt(out, out=out) if metric == "euclidean" else out


def _accumulate(cost_t: np.ndarray, len1: np.ndarray, len2: np.ndarray, *, subsequence: bool,
                band: Optional[int], keep: bool, penalty: float = 0.0) -> _Accumulated:
    """Run the DTW recurrence on a padded batch of local costs laid out ``cost_t (T1, T2, N)``.

    Work arrays keep the batch last so that each diagonal step reads and writes contiguous rows.
    Diagonal buffers are indexed by row ``i`` shifted by one (slot 0 is a permanent ``inf``), so the
    three predecessors of the cells of diagonal ``d`` are plain slices of the two previous buffers.
    """
    t1, t2, n = cost_t.shape
    inf = np.inf
    flat = cost_t.reshape(t1 * t2, n)  # (T1, T2, N) -> (T1*T2, N)
    bufs = [np.full((t1 + 1, n), inf) for _ in range(3)]  # diagonals d-2, d-1, d: (1 + T1, N)
    starts = [np.zeros((t1 + 1, n), dtype=np.int64) for _ in range(3)] if subsequence else None
    n_diag = t1 + t2 - 1
    last_row = np.full((n_diag, n), inf)  # D[n, len1[n]-1, d - (len1[n]-1)] by diagonal d
    last_start = np.zeros((n_diag, n), dtype=np.int64) if subsequence else None
    history = np.full((n_diag, t1 + 1, n), inf) if keep else None  # (T1+T2-1, 1 + T1, N)
    items = np.arange(n)
    last_slot = len1  # slot of row len1 - 1
    step = max(t2 - 1, 1)

    for d in range(n_diag):
        prev2, prev1, cur = bufs
        lo, hi = _diagonal_range(d, t1, t2, band)
        cur[1:lo + 1] = inf  # rows above this diagonal's range (slots past hi are already inf)
        if lo <= hi:
            # cells (i, d - i), i = lo..hi, sit at flat row i * T2 + d - i = d + i * (T2 - 1)
            c = flat[d + lo * step: d + hi * step + 1: step] if t2 > 1 else flat[lo:hi + 1]  # (k, N)
            if d == 0:
                cur[1] = c[0]
            else:
                diag = prev2[lo:hi + 1]      # (i-1, j-1)
                up = prev1[lo:hi + 1]        # (i-1, j)
                left = prev1[lo + 1:hi + 2]  # (i, j-1)
                if penalty:
                    up, left = up + penalty, left + penalty
                best = np.minimum(diag, up)
                np.minimum(best, left, out=best)
                if subsequence:
                    s2, s1, sc = starts
                    sc[lo + 1:hi + 2] = np.where(
                        diag == best, s2[lo:hi + 1],
                        np.where(up == best, s1[lo:hi + 1], s1[lo + 1:hi + 2]))
                np.add(c, best, out=cur[lo + 1:hi + 2])
                if subsequence and lo == 0:  # open begin: row 0 starts afresh at column j = d
                    cur[1] = c[0]
                    starts[2][1] = d
        last_row[d] = cur[last_slot, items]
        if subsequence:
            last_start[d] = starts[2][last_slot, items]
        if keep:
            history[d] = cur
        bufs = [prev1, cur, prev2]
        if subsequence:
            starts = [starts[1], starts[2], starts[0]]

    # (T1+T2-1, N) -> (N, T1+T2-1)
    return _finish(last_row.T, last_start.T if subsequence else None, history, len1, len2,
                   subsequence)


def _finish(last_row: np.ndarray, last_start: Optional[np.ndarray], history: Optional[np.ndarray],
            len1: np.ndarray, len2: np.ndarray, subsequence: bool) -> _Accumulated:
    """Read each item's result off the last row of its own (unpadded) matrix.

    ``last_row (N, T1+T2-1)`` by diagonal; ``history (T1+T2-1, 1 + T1, N)`` when kept.
    """
    n, n_diag = last_row.shape
    cols = np.arange(n_diag)[None, :]                          # (1, T1+T2-1)
    j_of_d = cols - (len1[:, None] - 1)                         # (N, T1+T2-1) column on last row
    valid = (j_of_d >= 0) & (j_of_d < len2[:, None])            # (N, T1+T2-1)
    items = np.arange(n)
    if subsequence:
        row = np.where(valid, last_row, np.inf)
        d_best = np.argmin(row, axis=1)                         # first minimum = smallest column
        cost = row[items, d_best]
        end = j_of_d[items, d_best] + 1
        start = last_start[items, d_best]
    else:
        d_end = len1 + len2 - 2
        cost = last_row[items, d_end]
        end, start = len2.copy(), np.zeros(n, dtype=np.int64)
    acc = None
    if history is not None:
        t1 = history.shape[1] - 1
        t2 = n_diag - t1 + 1
        ii = np.arange(t1)[:, None]                             # (T1, 1)
        jj = np.arange(t2)[None, :]                             # (1, T2)
        acc = np.moveaxis(history[ii + jj, ii + 1], -1, 0)      # (T1, T2, N) -> (N, T1, T2)
    return _Accumulated(cost=cost, end=end, start=start, acc=acc)


def _check_band(band: Optional[int], subsequence: bool) -> Optional[int]:
    if band is None:
        return None
    if subsequence:
        raise ValueError("a Sakoe-Chiba band is not defined for subsequence DTW (open begin/end)")
    if int(band) != band or band < 0:
        raise ValueError(f"band must be a non-negative integer radius, found {band!r}")
    return int(band)


def _check_penalty(penalty: float) -> float:
    if not np.isfinite(penalty) or penalty < 0:
        raise ValueError(f"penalty must be a finite number >= 0, found {penalty!r}")
    return float(penalty)


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def backtrack(acc: np.ndarray, end: Optional[int] = None, *, subsequence: bool = False,
              penalty: float = 0.0) -> np.ndarray:
    """Warping path ``(K, 2)`` of ``(i, j)`` pairs traced back through an accumulated matrix.

    Full DTW ends at ``(T1-1, T2-1)`` and starts at ``(0, 0)``; subsequence DTW ends at
    ``(T1-1, end-1)`` (``end`` exclusive) and stops when it reaches row 0.
    """
    t1, t2 = acc.shape
    i, j = t1 - 1, (t2 - 1 if end is None else end - 1)
    if not np.isfinite(acc[i, j]):
        raise ValueError("no admissible warping path (is the band narrower than |T1 - T2|?)")
    path = [(i, j)]
    inf = np.inf
    while i > 0 or (j > 0 and not subsequence):
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag = acc[i - 1, j - 1]
            up, left = acc[i - 1, j] + penalty, acc[i, j - 1] + penalty
            best = min(diag, up, left)
            if diag == best:
                i, j = i - 1, j - 1
            elif up == best:
                i -= 1
            else:
                j -= 1
        if acc[i, j] == inf:  # cannot happen on a finite path; guards against misuse
            raise ValueError("warping path left the admissible region")
        path.append((i, j))
    return np.asarray(path[::-1], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
@dataclass
class DTWResult:
    """Result of :func:`dtw`: total cost, warping path ``(K, 2)`` and optionally ``acc (T1, T2)``."""

    cost: float
    path: np.ndarray
    acc: Optional[np.ndarray] = None


@dataclass
class SubsequenceResult:
    """Where a query sits inside a reference: ``reference[start:end]`` (end exclusive)."""

    start: int
    end: int
    cost: float
    path: np.ndarray
    acc: Optional[np.ndarray] = None


def dtw_from_cost(cost: np.ndarray, *, band: Optional[int] = None, return_acc: bool = False,
                  return_path: bool = True, penalty: float = 0.0) -> DTWResult:
    """DTW on a precomputed local-cost matrix ``cost (T1, T2)``."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"cost matrix must be (T1, T2) with T1, T2 >= 1; found {cost.shape}")
    t1, t2 = cost.shape
    keep = return_acc or return_path
    res = _accumulate(cost[:, :, None], np.array([t1]), np.array([t2]), subsequence=False,  # (T1, T2, 1)
                      band=_check_band(band, False), keep=keep, penalty=_check_penalty(penalty))
    acc = res.acc[0] if keep else None
    total = float(res.cost[0])
    path = backtrack(acc, penalty=penalty) if return_path and np.isfinite(total) else np.zeros((0, 2), np.int64)
    return DTWResult(cost=total, path=path, acc=acc if return_acc else None)


def dtw(x: np.ndarray, y: np.ndarray, metric: Metric = "sqeuclidean", *, band: Optional[int] = None,
        return_acc: bool = False, return_path: bool = True, penalty: float = 0.0) -> DTWResult:
    """Exact DTW between ``x (T1, D)`` and ``y (T2, D)``.

    Returns the total cost, the warping path (empty when the band admits none, cost ``inf``) and,
    with ``return_acc``, the accumulated-cost matrix ``(T1, T2)``.
    """
    return dtw_from_cost(local_cost(x, y, metric), band=band, return_acc=return_acc,
                         return_path=return_path, penalty=penalty)


def _lengths(lengths: Optional[Sequence[int]], n: int, t: int, name: str) -> np.ndarray:
    if lengths is None:
        return np.full(n, t, dtype=np.int64)
    out = np.asarray(lengths, dtype=np.int64).reshape(-1)  # (N,)
    if out.shape[0] != n or out.min(initial=1) < 1 or out.max(initial=1) > t:
        raise ValueError(f"{name} must hold {n} lengths in [1, {t}]; found {out.tolist()}")
    return out


def dtw_batch(x: np.ndarray, y: np.ndarray, len_x: Optional[Sequence[int]] = None,
              len_y: Optional[Sequence[int]] = None, metric: Metric = "sqeuclidean", *,
              band: Optional[int] = None, penalty: float = 0.0) -> np.ndarray:
    """DTW costs ``(N,)`` for padded pairs ``x (N, T1, D)``, ``y (N, T2, D)``.

    Item ``n`` uses ``x[n, :len_x[n]]`` and ``y[n, :len_y[n]]``; padding values never change a
    result (the cell each item reads depends only on its own frames).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
        raise ValueError(f"dtw_batch expects (N, T1, D) and (N, T2, D); found {x.shape}, {y.shape}")
    n = x.shape[0]
    l1 = _lengths(len_x, n, x.shape[1], "len_x")
    l2 = _lengths(len_y, n, y.shape[1], "len_y")
    return _accumulate(local_cost_batch_last(x, y, metric), l1, l2, subsequence=False,
                       band=_check_band(band, False), keep=False,
                       penalty=_check_penalty(penalty)).cost


def dtw_batch_from_cost(cost: np.ndarray, len_x: Optional[Sequence[int]] = None,
                        len_y: Optional[Sequence[int]] = None, *,
                        band: Optional[int] = None, penalty: float = 0.0) -> np.ndarray:
    """DTW costs ``(N,)`` from padded local-cost matrices ``cost (N, T1, T2)``."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 3 or 0 in cost.shape:
        raise ValueError(f"cost must be (N, T1, T2); found {cost.shape}")
    n, t1, t2 = cost.shape
    l1 = _lengths(len_x, n, t1, "len_x")
    l2 = _lengths(len_y, n, t2, "len_y")
    return _accumulate(_batch_last(cost), l1, l2, subsequence=False, band=_check_band(band, False),
                       keep=False, penalty=_check_penalty(penalty)).cost


def subsequence_dtw_from_cost(cost: np.ndarray, *, return_acc: bool = False,
                              penalty: float = 0.0) -> SubsequenceResult:
    """Subsequence DTW on a local-cost matrix ``cost (T1, T2)`` (query rows, reference columns)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"cost matrix must be (T1, T2) with T1, T2 >= 1; found {cost.shape}")
    t1, t2 = cost.shape
    res = _accumulate(cost[:, :, None], np.array([t1]), np.array([t2]),  # (T1, T2, N=1)
                      subsequence=True, band=None,
                      keep=True, penalty=_check_penalty(penalty))
    acc = res.acc[0]
    end = int(res.end[0])
    path = backtrack(acc, end, subsequence=True, penalty=penalty)
    start = int(res.start[0])
    assert path[0, 1] == start, "start tracking and backtracking disagree"
    return SubsequenceResult(start=start, end=end, cost=float(res.cost[0]), path=path,
                             acc=acc if return_acc else None)


def subsequence_dtw(query: np.ndarray, reference: np.ndarray, metric: Metric = "sqeuclidean", *,
                    return_acc: bool = False, penalty: float = 0.0) -> SubsequenceResult:
    """Where ``query (T1, D)`` sits inside ``reference (T2, D)``: open begin and end on the reference.

    Every query frame is matched; the reference segment ``reference[start:end]`` (end exclusive)
    is free to start and end anywhere.
    """
    return subsequence_dtw_from_cost(local_cost(query, reference, metric), return_acc=return_acc,
                                     penalty=penalty)


def subsequence_dtw_batch(query: np.ndarray, reference: np.ndarray,
                          len_q: Optional[Sequence[int]] = None,
                          len_r: Optional[Sequence[int]] = None,
                          metric: Metric = "sqeuclidean", *, penalty: float = 0.0
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched subsequence DTW on padded ``query (N, T1, D)``, ``reference (N, T2, D)``.

    Returns ``(cost, start, end)``, each ``(N,)``, with exclusive ends.
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if query.ndim != 3 or reference.ndim != 3 or query.shape[0] != reference.shape[0]:
        raise ValueError(f"expected (N, T1, D) and (N, T2, D); found {query.shape}, {reference.shape}")
    n = query.shape[0]
    l1 = _lengths(len_q, n, query.shape[1], "len_q")
    l2 = _lengths(len_r, n, reference.shape[1], "len_r")
    res = _accumulate(local_cost_batch_last(query, reference, metric), l1, l2, subsequence=True,
                      band=None,
                      keep=False, penalty=_check_penalty(penalty))
    return res.cost, res.start, res.end
