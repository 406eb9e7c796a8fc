"""Skeleton features: joint positions and bones, shaped ``(C=6, T, V=22)``.

Channels 0:3 are the joint positions (optionally root-centred on the first frame), channels 3:6
the bones: each joint minus its parent in the SMPL-22 tree (the root's bone is zero). Bones do not
depend on the normalisation (it subtracts the same vector from every joint).
"""
from __future__ import annotations

import numpy as np

__all__ = ["SMPL22_PARENTS", "SMPL22_JOINT_NAMES", "NORMALISATIONS", "compute_features",
           "resample_time"]

SMPL22_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
SMPL22_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
NORMALISATIONS = ("none", "root_first_frame")
_ROOT = 0


def compute_features(coords: np.ndarray, normalise: str = "root_first_frame") -> np.ndarray:
    """Joint and bone channels of one clip.

    Args:
        coords: ``[T, 22, 3]`` (or ``[T, 66]``) joint positions.
        normalise: ``"none"`` or ``"root_first_frame"`` (subtract the root joint's position at
            frame 0 from every joint in every frame).

    Returns:
        float32 ``(6, T, 22)``: channels 0:3 joints, 3:6 bones (joint - parent; root bone 0).
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    joints = np.asarray(coords, dtype=np.float32)
    if joints.ndim == 2:
        joints = joints.reshape(joints.shape[0], -1, 3)  # (T, V*3) -> (T, V, 3)
    if joints.ndim != 3 or joints.shape[1:] != (len(SMPL22_PARENTS), 3):
        raise ValueError(f"coords: expected [T, 22, 3] or [T, 66], found shape {np.shape(coords)}")
    if normalise == "root_first_frame":
        joints = joints - joints[0:1, _ROOT:_ROOT + 1, :]  # (T, V, 3) - (1, 1, 3)
    parents = np.array(SMPL22_PARENTS)
    parents[_ROOT] = _ROOT  # root minus itself: a zero bone
    bones = joints - joints[:, parents, :]  # (T, V, 3)
    features = np.concatenate([joints, bones], axis=-1)  # (T, V, 6)
    return np.ascontiguousarray(features.transpose(2, 0, 1), dtype=np.float32)  # (C, T, V)


def resample_time(features: np.ndarray, length: int) -> np.ndarray:
    """Linearly resample ``features (C, T, V)`` to ``(C, length, V)`` (first and last frames kept)."""
    n_frames = features.shape[1]
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if length == n_frames:
        return features.copy()
    positions = (np.linspace(0.0, n_frames - 1, length) if length > 1
                 else np.zeros(1))  # (length,) fractional source frames
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, n_frames - 1)
    weight = (positions - lower).astype(np.float32)[None, :, None]  # (1, length, 1)
    out = features[:, lower] * (1.0 - weight) + features[:, upper] * weight  # (C, length, V)
    return out.astype(features.dtype, copy=False)
