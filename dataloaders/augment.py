"""Left-right mirroring of a clip and its texts (``data.mirror``) and turns about the vertical
axis (``data.rotate``), training only.

The skeleton is reflected in the plane x = 0 (x -> -x; any reflection of the scene is a mirror
image of the person, whatever way they face) and every left joint trades places with its right
twin, so the mirrored clip is a plausible performance by someone of the opposite stance. The
words "left" and "right" trade places in its texts (case kept); words that do not name a side
("rear", "lead", "front", "back") stay, as they mean the same for the mirrored performer.

Features are mirrored directly (``(C=6, T, V)``: channels 0 and 3 are the x of the joints and of
the bones), which equals computing the features of the mirrored coordinates: the root-first-frame
normalisation and the bones are differences, and a reflection commutes with them.

A turn about the vertical axis (y: up in SMPL's frame and in HumanML3D's, down in HybrIK's camera
frame that BX keeps; either way the axis of a turn on the spot) changes the direction the
performer faces relative to the camera and nothing else; the texts stay. It too acts on the
features directly (x and z of joints and bones), which equals the features of the turned
coordinates for the same reason.
"""
from __future__ import annotations

import re

import torch

from .skeleton import SMPL22_JOINT_NAMES

__all__ = ["MIRRORED_JOINTS", "mirror_features", "swap_left_right", "rotate_features"]


def _twin(name: str) -> str:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return name


# MIRRORED_JOINTS[j]: the joint whose mirror image lands on joint j (left and right twins swapped)
MIRRORED_JOINTS: tuple[int, ...] = tuple(SMPL22_JOINT_NAMES.index(_twin(n)) for n in SMPL22_JOINT_NAMES)
X_CHANNELS = (0, 3)  # x of the joint positions and of the bones
Z_CHANNELS = (2, 5)  # z of the joint positions and of the bones
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_features(features: torch.Tensor) -> torch.Tensor:
    """The mirror image of clip features ``(6, T, V)``: x negated, left and right joints swapped."""
    out = features[:, :, list(MIRRORED_JOINTS)].clone()  # (C, T, V), joint j takes its twin's values
    out[list(X_CHANNELS)] *= -1
    return out


def swap_left_right(text: str) -> str:
    """``left`` <-> ``right`` as whole words, keeping the case (Left -> Right, LEFT -> RIGHT)."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other
    return _SIDE.sub(swap, text)


def rotate_features(features: torch.Tensor, degrees: float) -> torch.Tensor:
    """Clip features ``(6, T, V)`` turned by ``degrees`` about the vertical (y) axis:
    ``x' = cos a x + sin a z``, ``z' = -sin a x + cos a z`` for joints and bones alike."""
    a = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    cos, sin = float(a.cos()), float(a.sin())
    x, z = features[list(X_CHANNELS)], features[list(Z_CHANNELS)]  # (2, T, V) each
    out = features.clone()
    out[list(X_CHANNELS)] = cos * x + sin * z
    out[list(Z_CHANNELS)] = -sin * x + cos * z
    return out
