"""The motion statistics that retrieval and the baselines share: per clip, the mean and standard
deviation over frames of the root-relative joints. They need no training, so a clip's caption can
never leak into the features that choose its neighbours.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def motion_features(coordinates: np.ndarray) -> np.ndarray:
    """``concat(mean, std)`` over frames of the root-relative joints (each joint minus joint 0,
    per frame), flattened: ``[T, 22, 3] -> [132]``.  The standard deviation is the population
    one (numpy's default, ``ddof=0``)."""
    relative = coordinates - coordinates[:, :1, :]  # (T, V, 3)
    return np.concatenate([relative.mean(axis=0).ravel(), relative.std(axis=0).ravel()])


def feature_matrix(records: Sequence[Mapping[str, Any]], fn) -> np.ndarray:
    """``fn`` (e.g. :func:`motion_features`) of each record's joints, stacked ``[N, F]``."""
    return np.stack([fn(joints_of(rec)) for rec in records])


def joints_of(rec: Mapping[str, Any]) -> np.ndarray:
    """A record's coordinates as float64 ``[T, V, 3]`` (``[T, 3V]`` is reshaped)."""
    coords = np.asarray(rec["coordinates"], dtype=np.float64)
    return coords.reshape(coords.shape[0], -1, 3)  # (T, 3V) or (T, V, 3) -> (T, V, 3)
