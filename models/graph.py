"""Skeleton graphs and ST-GCN partition strategies: the stacked adjacency ``A (K, V, V)``.

Conventions
-----------
* Joints are 0-based. A layout is a list of undirected bones ``(i, j)`` plus a centre joint (the
  "gravity centre" of the spatial strategy).
* ``A[k, v, w]`` is the weight with which input joint ``v`` feeds output joint ``w`` in subset
  ``k``; a graph convolution computes ``out[..., w] = sum_v x[..., v] * A[k, v, w]`` (the einsum
  ``'nkctv,kvw->nctw'`` of ST-GCN). Column ``w`` is therefore the receptive field of joint ``w``.
* Normalisation is ST-GCN's ``normalize_digraph``: ``A_norm = A_bin @ D^-1`` with
  ``D = diag(column sums of A_bin)``, i.e. every column of the binary adjacency (neighbours within
  the valid hops, self included) is divided by its degree. A graph convolution with it takes the
  MEAN of a joint's neighbours instead of their sum, so joints with many neighbours (the pelvis,
  the spine-3 joint) are not amplified. The partition strategies then split the entries of that one
  normalised matrix into subsets, so ``A.sum(0)`` is the same for every strategy and each of its
  columns sums to exactly 1.

Strategies (Yan et al., ST-GCN, AAAI 2018)
------------------------------------------
* ``uniform``: one subset, ``K = 1``.
* ``distance``: one subset per valid hop ``0, d, 2d, ... <= max_hop`` (``d`` = dilation),
  ``K = len(valid hops)``.
* ``spatial``: subset 0 is the root (the joint itself); for every valid hop ``h > 0`` two subsets:
  centripetal (neighbours ``v`` at hop ``h`` closer to the centre than the output joint ``w``) and
  centrifugal (farther from the centre, or equally far, which is where ST-GCN's code puts
  equidistant neighbours; in a tree they only occur at hops >= 2, e.g. sibling joints).
  ``K = 1 + 2 * (len(valid hops) - 1)``; with ``max_hop = 1`` that is ST-GCN's ``K = 3``.
  The distance to the centre is the true shortest-path length over the whole skeleton. (ST-GCN's
  code reads it from a hop matrix capped at ``max_hop``, so every joint more than ``max_hop`` hops
  from the centre has distance ``inf``; ``inf == inf`` then sends both its parent and its children
  into one subset and leaves the other empty. That is not reproduced here.)

The one named layout is SMPL-22 (``dataloaders.skeleton``), the skeleton of every feature the
encoder sees; other ``Layout`` s can be passed in directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from configs.schema import LAYOUT_NAMES, STRATEGIES
from dataloaders.skeleton import ROOT, SMPL22_PARENTS



@dataclass(frozen=True)
class Layout:
    """A skeleton: number of joints, undirected bones (0-based pairs) and the centre joint."""

    name: str
    num_nodes: int
    edges: tuple[tuple[int, int], ...]
    center: int

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"layout {self.name!r}: num_nodes must be >= 1, got {self.num_nodes}")
        for i, j in self.edges:
            if not (0 <= i < self.num_nodes and 0 <= j < self.num_nodes) or i == j:
                raise ValueError(f"layout {self.name!r}: bone ({i}, {j}) is not a pair of distinct "
                                 f"joints in 0..{self.num_nodes - 1}")
        if not 0 <= self.center < self.num_nodes:
            raise ValueError(f"layout {self.name!r}: centre {self.center} outside 0..{self.num_nodes - 1}")


def layout_from_parents(name: str, parents: Sequence[int], center: int = 0) -> Layout:
    """A layout whose bones are ``(joint, parent)`` for every joint with a parent (``-1`` = root)."""
    edges = tuple((j, p) for j, p in enumerate(parents) if p >= 0)
    return Layout(name, len(parents), edges, center)


def smpl22_layout() -> Layout:
    """SMPL-22 (HumanML3D / HybrIK joint order), centred on the pelvis (the root, joint 0)."""
    return layout_from_parents("smpl22", SMPL22_PARENTS, center=ROOT)


LAYOUTS = {"smpl22": smpl22_layout}


def get_layout(layout: str | Layout) -> Layout:
    """Look a layout up by name (``smpl22``) or pass a ``Layout`` through."""
    if isinstance(layout, Layout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown graph layout {layout!r}; expected one of {LAYOUT_NAMES} "
                         "or a models.graph.Layout")
    return LAYOUTS[layout]()


def hop_distance(num_nodes: int, edges: Sequence[tuple[int, int]], max_hop: int) -> np.ndarray:
    """Shortest-path hop counts ``(V, V)``; ``inf`` where two joints are more than ``max_hop`` apart."""
    link = np.eye(num_nodes, dtype=bool)
    for i, j in edges:
        link[i, j] = link[j, i] = True
    dist = np.full((num_nodes, num_nodes), np.inf)
    reach = np.eye(num_nodes, dtype=bool)  # joints reachable within d hops
    dist[reach] = 0
    for d in range(1, max_hop + 1):
        reach_next = (reach.astype(np.int64) @ link.astype(np.int64)) > 0
        dist[reach_next & ~reach] = d
        reach = reach_next
    return dist


def normalize_columns(adjacency: np.ndarray) -> np.ndarray:
    """``adjacency @ diag(1 / column sums)``; an all-zero column stays zero."""
    degree = adjacency.sum(axis=0)
    inv = np.zeros_like(degree, dtype=np.float64)
    inv[degree > 0] = 1.0 / degree[degree > 0]
    return adjacency * inv[None, :]  # (V, V) * (1, V): column w divided by deg(w)


class Graph:
    """Skeleton graph with a partition strategy.

    Attributes: ``A`` np.float32 ``(K, V, V)`` (see the module docstring for the convention),
    ``num_nodes`` (V), ``center``, ``edges`` (the undirected bones, 0-based, no self loops),
    ``hop_dis`` ``(V, V)`` (capped at ``max_hop``), ``depth`` ``(V,)`` (hops to the centre),
    ``valid_hops``, ``layout``, ``strategy``, ``max_hop``, ``dilation``.
    """

    def __init__(self, layout: str | Layout = "smpl22", strategy: str = "spatial", max_hop: int = 1,
                 dilation: int = 1) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown graph strategy {strategy!r}; expected one of {STRATEGIES}")
        if max_hop < 1 or dilation < 1 or dilation > max_hop:
            raise ValueError(f"graph needs 1 <= dilation <= max_hop, got max_hop={max_hop}, "
                             f"dilation={dilation}")
        spec = get_layout(layout)
        self.layout = spec.name
        self.strategy = strategy
        self.max_hop = max_hop
        self.dilation = dilation
        self.num_nodes = spec.num_nodes
        self.center = spec.center
        self.edges = list(spec.edges)
        self.hop_dis = hop_distance(self.num_nodes, self.edges, max_hop)
        self.valid_hops = list(range(0, max_hop + 1, dilation))
        # Hops from every joint to the centre, over the whole skeleton (not capped at max_hop).
        self.depth = hop_distance(self.num_nodes, self.edges, self.num_nodes)[:, self.center]
        self.A = self._partition().astype(np.float32)

    @property
    def num_subsets(self) -> int:
        """K, the number of adjacency matrices."""
        return int(self.A.shape[0])

    def binary_adjacency(self) -> np.ndarray:
        """1 where two joints are at a valid hop distance (self included), else 0: ``(V, V)``."""
        adjacency = np.zeros((self.num_nodes, self.num_nodes))
        for hop in self.valid_hops:
            adjacency[self.hop_dis == hop] = 1.0
        return adjacency

    def _partition(self) -> np.ndarray:
        norm = normalize_columns(self.binary_adjacency())  # (V, V)
        if self.strategy == "uniform":
            return norm[None]  # (V, V) -> (K=1, V, V)
        if self.strategy == "distance":
            return np.stack([np.where(self.hop_dis == hop, norm, 0.0) for hop in self.valid_hops])
        return self._spatial(norm)

    def _spatial(self, norm: np.ndarray) -> np.ndarray:
        # closer[v, w]: input joint v is nearer the centre than output joint w.
        closer = self.depth[:, None] < self.depth[None, :]  # (V, 1) vs (1, V) -> (V, V)
        subsets = [np.where(self.hop_dis == 0, norm, 0.0)]
        for hop in self.valid_hops[1:]:
            at_hop = self.hop_dis == hop
            subsets.append(np.where(at_hop & closer, norm, 0.0))  # centripetal
            subsets.append(np.where(at_hop & ~closer, norm, 0.0))  # centrifugal (+ equidistant)
        return np.stack(subsets)  # K x (V, V) -> (K, V, V)

    def __repr__(self) -> str:
        return (f"Graph(layout={self.layout!r}, strategy={self.strategy!r}, max_hop={self.max_hop}, "
                f"dilation={self.dilation}, K={self.num_subsets}, V={self.num_nodes})")
