"""The SMPL-22 skeleton (HumanML3D / HybrIK joint order): joint names, parents, bones.

Joints are 0-based and every parent comes before its children; the pelvis (joint 0) is the root
and has parent ``-1``. The bones are built from this list as it is: no joint is linked to a
non-existent joint ``-1``.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["SMPL22_JOINT_NAMES", "SMPL22_PARENTS", "NUM_JOINTS", "ROOT", "bones", "bone_lengths"]

SMPL22_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
SMPL22_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                                   17, 18, 19)
NUM_JOINTS = len(SMPL22_PARENTS)
ROOT = 0

# The joint each bone starts from; the root is its own, so its bone is zero.
_BONE_BASE = [parent if parent >= 0 else joint for joint, parent in enumerate(SMPL22_PARENTS)]

Joints = TypeVar("Joints")  # a numpy array or a torch tensor


def bones(joints: Joints) -> Joints:
    """Every joint minus its parent, ``(..., V, 3) -> (..., V, 3)``; the root's bone is zero.

    Works on numpy arrays and torch tensors alike (the joint axis is the second to last).
    """
    return joints - joints[..., _BONE_BASE, :]  # (..., V, 3) - (..., V, 3) gathered at the parents


def bone_lengths(coordinates: np.ndarray) -> np.ndarray:
    """Mean over frames of each bone's length ``|joint - parent|`` (the root has none):
    ``[T, 22, 3] -> [21]``. Who a learner is shows in these (the bone-length probe baseline, and
    the gate of :meth:`dataloaders.retrieval.Retriever.familiar`)."""
    joints = [j for j, p in enumerate(SMPL22_PARENTS) if p >= 0]
    parents = [SMPL22_PARENTS[j] for j in joints]
    return np.linalg.norm(coordinates[:, joints] - coordinates[:, parents], axis=-1).mean(axis=0)
