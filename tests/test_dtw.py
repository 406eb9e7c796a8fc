"""DTW against a naive pure-Python double loop and hand-computed cases."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from alignment import dtw as D
from alignment.reference import (naive_backtrack, naive_dtw, naive_local_cost,
                                 naive_subsequence_dtw)

TOL = 1e-9


def _close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore"):
        near = np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b))
    assert np.all(both_inf | near), (a, b)


def _seed(*parts) -> int:
    """A seed that does not depend on Python's per-process string hashing."""
    return zlib.crc32(repr(parts).encode())


def test_hand_computed_3x3():
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.0], [2.0], [2.0]])
    # local costs (squared): [[0,4,4],[1,1,1],[4,0,0]] -> accumulated by hand:
    expected_acc = np.array([[0, 4, 8], [1, 1, 2], [5, 1, 1]], dtype=float)
    res = D.dtw(x, y, return_acc=True)
    assert res.cost == 1.0
    np.testing.assert_array_equal(res.acc, expected_acc)
    np.testing.assert_array_equal(res.path, [[0, 0], [1, 1], [2, 2]])
    # Euclidean: local [[0,2,2],[1,1,1],[2,0,0]] -> row0 0,2,4; row1 1,1,2; row2 3,1,1
    res_e = D.dtw(x, y, metric="euclidean", return_acc=True)
    np.testing.assert_array_equal(res_e.acc, [[0, 2, 4], [1, 1, 2], [3, 1, 1]])


def test_hand_computed_subsequence():
    query = np.array([[1.0], [2.0]])
    reference = np.array([[5.0], [1.0], [2.0], [9.0]])
    res = D.subsequence_dtw(query, reference)
    assert (res.start, res.end, res.cost) == (1, 3, 0.0)
    np.testing.assert_array_equal(res.path, [[0, 1], [1, 2]])
    assert reference[res.start:res.end].ravel().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("metric", D.METRICS)
def test_local_cost_matches_naive(metric):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    y[3] = 0.0  # zero vector: cosine similarity defined as 0
    _close(D.local_cost(x, y, metric), naive_local_cost(x.tolist(), y.tolist(), metric))


@pytest.mark.parametrize("metric", D.METRICS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (5, 5), (9, 14), (17, 8)])
def test_dtw_matches_naive(metric, shape):
    rng = np.random.default_rng(_seed(metric, shape))
    x, y = rng.normal(size=(shape[0], 4)), rng.normal(size=(shape[1], 4))
    res = D.dtw(x, y, metric, return_acc=True)
    cost, acc = naive_dtw(naive_local_cost(x.tolist(), y.tolist(), metric))
    _close(res.cost, cost)
    _close(res.acc, acc)
    assert res.path.tolist() == [list(p) for p in naive_backtrack(acc)]


def test_recurrence_is_bitwise_identical_on_the_same_costs():
    rng = np.random.default_rng(1)
    cost = rng.random((23, 31))
    res = D.dtw_from_cost(cost, return_acc=True)
    naive_cost, naive_acc = naive_dtw(cost.tolist())
    assert res.cost == naive_cost
    np.testing.assert_array_equal(res.acc, np.array(naive_acc))


def test_path_is_monotone_and_sums_to_cost():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(20, 3))
    res = D.dtw(x, y)
    steps = np.diff(res.path, axis=0)
    assert res.path[0].tolist() == [0, 0] and res.path[-1].tolist() == [11, 19]
    assert set(map(tuple, steps.tolist())) <= {(1, 1), (1, 0), (0, 1)}
    c = D.local_cost(x, y)
    _close(c[res.path[:, 0], res.path[:, 1]].sum(), res.cost)


@pytest.mark.parametrize("band", [0, 1, 3, 6, 40])
def test_band_matches_naive(band):
    rng = np.random.default_rng(band)
    x, y = rng.normal(size=(15, 3)), rng.normal(size=(18, 3))
    cost_m = D.local_cost(x, y)
    res = D.dtw(x, y, band=band, return_acc=True)
    naive_cost, naive_acc = naive_dtw(cost_m.tolist(), band=band)
    _close(res.cost, naive_cost)
    _close(res.acc, naive_acc)
    if math.isfinite(naive_cost):
        assert res.path.tolist() == [list(p) for p in naive_backtrack(naive_acc)]
        assert np.all(np.abs(res.path[:, 0] - res.path[:, 1]) <= band)
    else:  # band narrower than |T1 - T2| = 3: no admissible path
        assert band < 3 and res.path.shape == (0, 2)


def test_band_wide_equals_unconstrained():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(13, 2))
    assert D.dtw(x, y, band=13).cost == D.dtw(x, y).cost


@pytest.mark.parametrize("band", [None, 4])
def test_batched_equals_single_and_ignores_padding(band):
    rng = np.random.default_rng(4)
    n, t1, t2, dim = 6, 14, 17, 3
    len_x = np.array([14, 3, 9, 1, 12, 7])
    len_y = np.array([17, 5, 9, 1, 13, 10])
    x, y = rng.normal(size=(n, t1, dim)), rng.normal(size=(n, t2, dim))
    costs = D.dtw_batch(x, y, len_x, len_y, band=band)
    garbage_x, garbage_y = x.copy(), y.copy()
    for k in range(n):
        garbage_x[k, len_x[k]:] = 1e6 * rng.normal(size=(t1 - len_x[k], dim))
        garbage_y[k, len_y[k]:] = np.nan
    costs_garbage = D.dtw_batch(garbage_x, garbage_y, len_x, len_y, band=band)
    np.testing.assert_array_equal(costs, costs_garbage)
    for k in range(n):
        single = D.dtw(x[k, :len_x[k]], y[k, :len_y[k]], band=band).cost
        naive = naive_dtw(naive_local_cost(x[k, :len_x[k]].tolist(), y[k, :len_y[k]].tolist()),
                          band=band)[0]
        _close(costs[k], single)
        _close(costs[k], naive)


@pytest.mark.parametrize("metric", D.METRICS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (4, 12), (9, 9), (13, 6)])
def test_subsequence_matches_naive(metric, shape):
    rng = np.random.default_rng(_seed(metric, shape, "sub"))
    q, r = rng.normal(size=(shape[0], 3)), rng.normal(size=(shape[1], 3))
    res = D.subsequence_dtw(q, r, metric, return_acc=True)
    cost, start, end, acc = naive_subsequence_dtw(naive_local_cost(q.tolist(), r.tolist(), metric))
    _close(res.cost, cost)
    _close(res.acc, acc)
    assert (res.start, res.end) == (start, end)
    assert res.path.tolist() == [list(p) for p in naive_backtrack(acc, end - 1, subsequence=True)]
    assert res.path[0, 0] == 0 and res.path[-1, 0] == shape[0] - 1


def test_subsequence_finds_a_planted_warped_segment():
    rng = np.random.default_rng(5)
    reference = np.cumsum(rng.normal(size=(80, 6)), axis=0)
    # the query is reference[23:51] with frames repeated and dropped (time warping) and small noise
    idx = np.concatenate([np.arange(23, 30), [30, 30, 31], np.arange(33, 51)])
    query = reference[idx] + 0.01 * rng.normal(size=(idx.size, 6))
    res = D.subsequence_dtw(query, reference)
    assert (res.start, res.end) == (23, 51)
    assert res.end - res.start == 51 - 23  # exclusive end: the segment length


def test_subsequence_batch_equals_single_and_ignores_padding():
    rng = np.random.default_rng(6)
    n, t1, t2 = 5, 9, 20
    lq, lr = np.array([9, 1, 4, 7, 3]), np.array([20, 6, 4, 11, 1])
    q, r = rng.normal(size=(n, t1, 2)), rng.normal(size=(n, t2, 2))
    cost, start, end = D.subsequence_dtw_batch(q, r, lq, lr)
    r_garbage = r.copy()
    for k in range(n):
        r_garbage[k, lr[k]:] = -1e9
    cost2, start2, end2 = D.subsequence_dtw_batch(q, r_garbage, lq, lr)
    np.testing.assert_array_equal(cost, cost2)
    np.testing.assert_array_equal(start, start2)
    np.testing.assert_array_equal(end, end2)
    for k in range(n):
        single = D.subsequence_dtw(q[k, :lq[k]], r[k, :lr[k]])
        assert (start[k], end[k]) == (single.start, single.end)
        _close(cost[k], single.cost)


def test_errors_are_specific():
    with pytest.raises(ValueError, match="unknown DTW metric"):
        D.local_cost(np.zeros((2, 2)), np.zeros((2, 2)), "manhattan")
    with pytest.raises(ValueError, match="len_x"):
        D.dtw_batch(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), [3, 4], [3, 3])
    with pytest.raises(ValueError, match="band"):
        D.dtw(np.zeros((2, 1)), np.zeros((2, 1)), band=-1)


@pytest.mark.parametrize("penalty", [0.0, 0.3, 2.0])
def test_step_penalty_matches_naive(penalty):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(13, 3))
    cost_m = D.local_cost(x, y)
    res = D.dtw(x, y, penalty=penalty, return_acc=True)
    naive_cost, naive_acc = naive_dtw(cost_m.tolist(), penalty=penalty)
    _close(res.cost, naive_cost)
    _close(res.acc, naive_acc)
    assert res.path.tolist() == [list(p) for p in naive_backtrack(naive_acc, penalty=penalty)]
    sub = D.subsequence_dtw(x, y, penalty=penalty)
    n_cost, n_start, n_end, n_acc = naive_subsequence_dtw(cost_m.tolist(), penalty=penalty)
    _close(sub.cost, n_cost)
    assert (sub.start, sub.end) == (n_start, n_end)
    assert sub.path.tolist() == [list(p) for p in
                                 naive_backtrack(n_acc, n_end - 1, subsequence=True, penalty=penalty)]
    batch = D.dtw_batch(x[None], y[None], penalty=penalty)
    _close(batch[0], naive_cost)
    b_cost, b_start, b_end = D.subsequence_dtw_batch(x[None], y[None], penalty=penalty)
    assert (b_start[0], b_end[0]) == (n_start, n_end)


def test_penalty_counts_non_diagonal_steps():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(10, 2))
    res = D.dtw(x, y, penalty=0.7)
    steps = np.diff(res.path, axis=0)
    non_diag = int((steps.sum(axis=1) == 1).sum())
    c = D.local_cost(x, y)
    _close(res.cost, c[res.path[:, 0], res.path[:, 1]].sum() + 0.7 * non_diag)
    with pytest.raises(ValueError, match="penalty"):
        D.dtw(x, y, penalty=-1.0)


@pytest.mark.parametrize("metric", D.METRICS)
def test_batch_last_local_cost_equals_local_cost(metric):
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 7, 4))
    _close(D.local_cost_batch_last(x, y, metric), D.local_cost(x, y, metric).transpose(1, 2, 0))
