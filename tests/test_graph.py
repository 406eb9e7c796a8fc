"""Skeleton graphs: hand-computed partitions on tiny graphs and facts of SMPL-22 / NTU-25."""
from __future__ import annotations

import numpy as np
import pytest

from models.graph import SMPL22_PARENTS, Graph, Layout, hop_distance, normalize_columns

CHAIN3 = Layout("chain3", 3, ((0, 1), (1, 2)), center=0)  # 0 - 1 - 2
STAR4 = Layout("star4", 4, ((0, 1), (0, 2), (0, 3)), center=0)  # leaves 1, 2, 3 around 0
CHAIN5 = Layout("chain5", 5, ((0, 1), (1, 2), (2, 3), (3, 4)), center=0)


# ------------------------------------------------------------------------- hand computations ---
def test_chain_uniform_is_column_normalised_by_hand():
    # binary adjacency with self loops [[1,1,0],[1,1,1],[0,1,1]]; column degrees 2, 3, 2
    expected = np.array([[1 / 2, 1 / 3, 0], [1 / 2, 1 / 3, 1 / 2], [0, 1 / 3, 1 / 2]])
    g = Graph(CHAIN3, "uniform")
    assert g.A.shape == (1, 3, 3)
    np.testing.assert_allclose(g.A[0], expected, atol=1e-7)


def test_chain_distance_by_hand():
    g = Graph(CHAIN3, "distance")
    np.testing.assert_allclose(g.A[0], np.diag([1 / 2, 1 / 3, 1 / 2]), atol=1e-7)
    np.testing.assert_allclose(g.A[1], [[0, 1 / 3, 0], [1 / 2, 0, 1 / 2], [0, 1 / 3, 0]], atol=1e-7)


def test_chain_spatial_by_hand():
    g = Graph(CHAIN3, "spatial")
    assert g.A.shape == (3, 3, 3)
    root, centripetal, centrifugal = g.A
    np.testing.assert_allclose(root, np.diag([1 / 2, 1 / 3, 1 / 2]), atol=1e-7)
    # A[k, v, w]: input v feeds output w. Centripetal: v nearer the centre (0) than w.
    np.testing.assert_allclose(centripetal, [[0, 1 / 3, 0], [0, 0, 1 / 2], [0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(centrifugal, [[0, 0, 0], [1 / 2, 0, 0], [0, 1 / 3, 0]], atol=1e-7)


def test_star_two_hops_spatial_by_hand():
    # Within two hops every joint reaches every other: binary adjacency all ones, degree 4.
    g = Graph(STAR4, "spatial", max_hop=2)
    assert g.A.shape == (5, 4, 4)
    q = 1 / 4
    leaves = np.ones((4, 4)) - np.eye(4)
    leaves[0, :] = leaves[:, 0] = 0
    expected = np.stack([
        np.eye(4) * q,                                        # root
        np.array([[0, q, q, q]] + [[0, 0, 0, 0]] * 3),        # hop 1 centripetal: 0 -> leaf
        np.array([[0, 0, 0, 0]] + [[q, 0, 0, 0]] * 3),        # hop 1 centrifugal: leaf -> 0
        np.zeros((4, 4)),                                     # hop 2 centripetal: none
        leaves * q,                                           # hop 2: equidistant siblings
    ])
    np.testing.assert_allclose(g.A, expected, atol=1e-7)


def test_star_distance_two_hops_by_hand():
    g = Graph(STAR4, "distance", max_hop=2)
    assert g.A.shape == (3, 4, 4)
    np.testing.assert_allclose(g.A[2][1:, 1:], (np.ones((3, 3)) - np.eye(3)) / 4, atol=1e-7)
    assert np.all(g.A[2][0] == 0) and np.all(g.A[2][:, 0] == 0)


def test_dilation_keeps_only_valid_hops():
    g = Graph(CHAIN5, "distance", max_hop=2, dilation=2)
    assert g.valid_hops == [0, 2]
    assert g.A.shape == (2, 5, 5)
    # Joint 2 (middle): itself and joints 0 and 4 two hops away, no direct neighbours.
    np.testing.assert_allclose(g.A[:, :, 2].sum(0), [1 / 3, 0, 1 / 3, 0, 1 / 3], atol=1e-7)
    np.testing.assert_allclose(g.A[1][:, 0], [0, 0, 1 / 2, 0, 0], atol=1e-7)


def test_hop_distance_on_chain():
    d = hop_distance(5, CHAIN5.edges, max_hop=3)
    assert d[0, 3] == 3 and d[3, 0] == 3 and d[1, 2] == 1 and d[2, 2] == 0
    assert np.isinf(d[0, 4])


def test_normalize_columns_zero_column_stays_zero():
    out = normalize_columns(np.array([[2.0, 0.0], [2.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.0], [0.5, 0.0]])


# ----------------------------------------------------------------------------- SMPL-22 facts ---
@pytest.mark.parametrize("strategy,max_hop,k", [("uniform", 1, 1), ("distance", 1, 2), ("spatial", 1, 3),
                                                ("uniform", 2, 1), ("distance", 2, 3), ("spatial", 2, 5)])
def test_smpl22_subset_count_and_columns(strategy, max_hop, k):
    g = Graph("smpl22", strategy, max_hop=max_hop)
    assert g.A.shape == (k, 22, 22) and g.A.dtype == np.float32 and g.num_subsets == k
    np.testing.assert_allclose(g.A.sum(0).sum(0), np.ones(22), atol=1e-6)  # columns sum to 1
    assert np.all(g.A >= 0)


def test_smpl22_edges_follow_parents_without_off_by_one():
    g = Graph("smpl22")
    assert g.num_nodes == 22 and g.center == 0
    assert sorted(g.edges) == sorted((j, p) for j, p in enumerate(SMPL22_PARENTS) if p >= 0)
    assert len(g.edges) == 21
    assert all(0 <= i < 22 and 0 <= j < 22 for i, j in g.edges)
    # The pelvis links to exactly the two hips and spine-1, and to nothing else.
    support = g.A.sum(0) > 0  # (V, V)
    assert set(np.flatnonzero(support[:, 0])) == {0, 1, 2, 3}
    # Every joint's receptive field is itself plus its parent and children.
    for j, p in enumerate(SMPL22_PARENTS):
        expected = {j} | ({p} if p >= 0 else set()) | {c for c, q in enumerate(SMPL22_PARENTS) if q == j}
        assert set(np.flatnonzero(support[:, j])) == expected


def test_smpl22_uniform_is_symmetric_before_normalisation():
    g = Graph("smpl22", "uniform")
    binary = g.binary_adjacency()
    np.testing.assert_array_equal(binary, binary.T)
    degree = binary.sum(0)
    # A[v, w] = bin[v, w] / deg[w], so A * deg[w] is symmetric again.
    unnormalised = g.A[0] * degree[None, :]
    np.testing.assert_allclose(unnormalised, unnormalised.T, atol=1e-6)
    np.testing.assert_allclose(unnormalised, binary, atol=1e-6)


def test_smpl22_depth_to_pelvis():
    g = Graph("smpl22")
    # head (15): 0-3-6-9-12-15; left wrist (20): 0-3-6-9-13-16-18-20; left foot (10): 0-1-4-7-10
    assert g.depth[15] == 5 and g.depth[20] == 7 and g.depth[10] == 4 and g.depth[0] == 0


def test_smpl22_spatial_subsets_by_depth():
    g = Graph("smpl22", "spatial")
    root, centripetal, centrifugal = g.A > 0
    np.testing.assert_array_equal(root, np.eye(22, dtype=bool))
    for j, p in enumerate(SMPL22_PARENTS):
        if p >= 0:  # the parent is nearer the pelvis: it feeds the child centripetally
            assert centripetal[p, j] and not centrifugal[p, j]
            assert centrifugal[j, p] and not centripetal[j, p]
    assert centripetal.sum() == 21 and centrifugal.sum() == 21


def test_ntu25_layout():
    g = Graph("ntu25", "spatial")
    assert g.A.shape == (3, 25, 25) and g.center == 20 and len(g.edges) == 24
    support = g.A.sum(0) > 0
    # spine-shoulder (21 in 1-based) joins spine-mid, neck, both shoulders.
    assert set(np.flatnonzero(support[:, 20]) + 1) == {21, 2, 3, 5, 9}
    np.testing.assert_allclose(g.A.sum(0).sum(0), np.ones(25), atol=1e-6)
    assert np.all(np.isfinite(g.depth)) and g.depth.max() == 6  # one connected tree
    # 1-based: hand tip 23-8-7-6-5-21 (5 hops); left foot 16-15-14-13-1-2-21 (6 hops)
    assert g.depth[23 - 1] == 5 and g.depth[16 - 1] == 6
    root, centripetal, centrifugal = g.A > 0
    assert centripetal.sum() == 24 and centrifugal.sum() == 24  # each bone once in each direction


@pytest.mark.parametrize("kwargs,match", [
    (dict(layout="smpl24"), "unknown graph layout"),
    (dict(strategy="radial"), "unknown graph strategy"),
    (dict(max_hop=0), "max_hop"),
    (dict(max_hop=1, dilation=2), "dilation"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Graph(**kwargs)


def test_layout_rejects_edge_to_missing_joint():
    with pytest.raises(ValueError, match="bone"):
        Layout("bad", 3, ((0, -1),), center=0)
    with pytest.raises(ValueError, match="bone"):
        Layout("bad", 3, ((0, 3),), center=0)
