"""Skeleton graphs: hand-computed partitions on tiny graphs and facts of SMPL-22."""
from __future__ import annotations

import numpy as np
import pytest

from dataloaders.skeleton import SMPL22_JOINT_NAMES
from models.graph import Graph, Layout, hop_distance, normalize_columns

CHAIN3 = Layout("chain3", 3, ((0, 1), (1, 2)), center=0)  # 0 - 1 - 2
STAR4 = Layout("star4", 4, ((0, 1), (0, 2), (0, 3)), center=0)  # leaves 1, 2, 3 around 0
CHAIN5 = Layout("chain5", 5, ((0, 1), (1, 2), (2, 3), (3, 4)), center=0)

# The 21 SMPL-22 bones as (child, parent), written out so that a swapped or shifted parent fails.
SMPL22_BONES = (
    (1, 0),    # left_hip - pelvis
    (2, 0),    # right_hip - pelvis
    (3, 0),    # spine1 - pelvis
    (4, 1),    # left_knee - left_hip
    (5, 2),    # right_knee - right_hip
    (6, 3),    # spine2 - spine1
    (7, 4),    # left_ankle - left_knee
    (8, 5),    # right_ankle - right_knee
    (9, 6),    # spine3 - spine2
    (10, 7),   # left_foot - left_ankle
    (11, 8),   # right_foot - right_ankle
    (12, 9),   # neck - spine3
    (13, 9),   # left_collar - spine3
    (14, 9),   # right_collar - spine3
    (15, 12),  # head - neck
    (16, 13),  # left_shoulder - left_collar
    (17, 14),  # right_shoulder - right_collar
    (18, 16),  # left_elbow - left_shoulder
    (19, 17),  # right_elbow - right_shoulder
    (20, 18),  # left_wrist - left_elbow
    (21, 19),  # right_wrist - right_elbow
)


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


def test_smpl22_edges_are_the_written_out_bones():
    g = Graph("smpl22")
    assert g.num_nodes == 22 and g.center == 0
    assert sorted(g.edges) == sorted(SMPL22_BONES)  # no joint -1, no left/right swap
    # The pelvis links to exactly the two hips and spine-1, and to nothing else.
    support = g.A.sum(0) > 0  # (V, V)
    assert set(np.flatnonzero(support[:, 0])) == {0, 1, 2, 3}
    # Every joint's receptive field is itself plus its parent and children.
    for j in range(22):
        expected = {j} | {p for c, p in SMPL22_BONES if c == j} | {c for c, p in SMPL22_BONES if p == j}
        assert set(np.flatnonzero(support[:, j])) == expected


def test_smpl22_joint_names_are_the_ones_of_the_bones():
    # The joint names of the comments beside SMPL22_BONES, by joint index.
    names = {0: "pelvis", 1: "left_hip", 2: "right_hip", 3: "spine1", 4: "left_knee", 5: "right_knee",
             6: "spine2", 7: "left_ankle", 8: "right_ankle", 9: "spine3", 10: "left_foot",
             11: "right_foot", 12: "neck", 13: "left_collar", 14: "right_collar", 15: "head",
             16: "left_shoulder", 17: "right_shoulder", 18: "left_elbow", 19: "right_elbow",
             20: "left_wrist", 21: "right_wrist"}
    assert SMPL22_JOINT_NAMES == tuple(names[j] for j in range(22))


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
    for j, p in SMPL22_BONES:  # the parent is nearer the pelvis: it feeds the child centripetally
        assert centripetal[p, j] and not centrifugal[p, j]
        assert centrifugal[j, p] and not centripetal[j, p]
    assert centripetal.sum() == 21 and centrifugal.sum() == 21


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
