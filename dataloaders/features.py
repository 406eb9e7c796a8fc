"""Skeleton features: joint positions and bones, shaped ``(C=6, T, V=22)``.

Channels 0:3 are the joint positions (optionally root-centred on the first frame), channels 3:6
the bones: each joint minus its parent in the SMPL-22 tree (the root's bone is zero). Bones do not
depend on the normalisation (it subtracts the same vector from every joint).
"""
from __future__ import annotations

import numpy as np

from configs.schema import NORMALISATIONS

from .skeleton import NUM_JOINTS, ROOT, bones

__all__ = ["NORMALISATIONS", "compute_features", "resample_time"]



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
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"coords: expected [T, {NUM_JOINTS}, 3] or [T, {NUM_JOINTS * 3}], "
                         f"found shape {np.shape(coords)}")
    if normalise == "root_first_frame":
        joints = joints - joints[0:1, ROOT:ROOT + 1, :]  # (T, V, 3) - (1, 1, 3)
    features = np.concatenate([joints, bones(joints)], axis=-1)  # (T, V, 3) + (T, V, 3) -> (T, V, 6)
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
