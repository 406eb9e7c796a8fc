"""HumanML3D's 263-dim motion representation, both ways: joints -> features -> joints.

The input is a motion in HumanML3D's processed frame (the ``new_joints`` files): SMPL-22 joints
``[T, 22, 3]`` in metres, y up, feet on the floor, the root's first position at x = z = 0 and the
body facing +z in the first frame. ``features_from_joints`` turns it into ``[T - 1, 263]`` vectors
laid out as the released ``new_joint_vecs``; ``joints_from_features`` turns vectors back into
``[N, 22, 3]`` joints, as the released ``new_joints`` were made from the vectors.

Layout of one vector (``GROUPS``; all directions in the body's *facing frame*, see below):

=====================  ========  ==================================================================
group                  channels  content of row ``t`` (``t = 0 .. T-2``)
=====================  ========  ==================================================================
root_angular_velocity  0         half the y-rotation from frame t to t+1 (``arcsin`` of the y part
                                 of the quaternion ``r[t+1] r[t]^-1``)
root_linear_velocity   1:3       root x/z displacement from t to t+1, turned by ``r[t+1]``
root_height            3         root y at frame t
positions              4:67      joints 1..21 at frame t minus the root's x/z (y kept as height),
                                 turned by ``r[t]``
rotations              67:193    joints 1..21: the 6D form (first two matrix columns) of the local
                                 rotations found by HumanML3D's inverse kinematics at frame t
velocities             193:259   all 22 joints' displacement from t to t+1, turned by ``r[t]``
foot_contacts          259:263   left ankle, left toe, right ankle, right toe (joints 7, 10, 8, 11):
                                 1 where the squared displacement t -> t+1 is below 0.002 m^2
=====================  ========  ==================================================================

The facing frame: ``r[t]`` is the y-rotation that turns the body's forward direction at frame t
onto +z. The forward direction is the horizontal vector perpendicular to an across-the-body vector
(``forward = up x across``), smoothed over time with a Gaussian of sigma 20 frames (edges padded
with the end values), then normalised.

Conventions of the release that are reproduced here, not corrected (each is a known issue of the
HumanML3D repository; "fixing" one changes the vectors):

* the across vector is that of HumanML3D's inverse kinematics, which unpacks its face-joint list
  ``(2, 1, 17, 16)`` as (left hip, right hip, right shoulder, left shoulder), so
  ``across = (j1 - j2) + (j17 - j16)``: *left* hip minus right hip, but right shoulder minus left
  shoulder (issues #107, #119). The consistent choice does not reproduce the released vectors
  (``tests/test_humanml3d_vecs.py`` checks that);
* ``r[0]`` is forced to the identity (issue #74), so row 0's angular velocity carries the turn
  from +z to the smoothed direction of frame 1;
* the arms' chains start from the root rotation although they hang from spine3 (issue #119);
* the angular velocity is the ``arcsin`` of the turn quaternion's y part without first making its
  w part positive (issue #156): a frame whose facing crosses -z gets the wrong sign. The
  ``fix_turn_sign`` option of :func:`features_from_joints` corrects it (not as released).

Quaternions are ``(w, x, y, z)`` arrays, rotating a vector ``v`` as ``q v q^-1``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .skeleton import NUM_JOINTS

__all__ = [
    "FEATURE_DIM", "GROUPS", "FACE_JOINTS", "FEET_LEFT", "FEET_RIGHT", "FOOT_THRESHOLD",
    "FORWARD_SIGMA", "KINEMATIC_CHAINS", "RAW_OFFSETS",
    "qmul", "qinv", "qrot", "qbetween", "quat_to_matrix", "matrix_to_cont6d", "cont6d_to_matrix",
    "forward_directions", "root_rotations", "foot_contacts", "local_rotations",
    "features_from_joints", "split_features", "recover_root", "joints_from_features",
    "bone_lengths", "forward_kinematics", "mirror_joints",
]

FEATURE_DIM = 263
# channel ranges of the groups, in order
GROUPS: dict[str, slice] = {
    "root_angular_velocity": slice(0, 1),
    "root_linear_velocity": slice(1, 3),
    "root_height": slice(3, 4),
    "positions": slice(4, 4 + (NUM_JOINTS - 1) * 3),                      # 4:67
    "rotations": slice(67, 67 + (NUM_JOINTS - 1) * 6),                    # 67:193
    "velocities": slice(193, 193 + NUM_JOINTS * 3),                       # 193:259
    "foot_contacts": slice(259, 263),
}
FACE_JOINTS = (2, 1, 17, 16)  # HumanML3D's face joints: right hip, left hip, right/left shoulder
FEET_LEFT = (7, 10)  # left ankle, left foot
FEET_RIGHT = (8, 11)  # right ankle, right foot
FOOT_THRESHOLD = 0.002  # squared displacement per frame (m^2) under which a foot is in contact
FORWARD_SIGMA = 20.0  # frames; Gaussian smoothing of the forward direction

# HumanML3D's skeleton for inverse kinematics: five chains from the root (the arms from spine3,
# joint 9) and, per joint, the unit direction of its bone in the rest pose.
KINEMATIC_CHAINS: tuple[tuple[int, ...], ...] = (
    (0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15), (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
RAW_OFFSETS = np.array([
    [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0],
    [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1],
    [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
], dtype=np.float64)  # (V, 3)

_LEFT = (1, 4, 7, 10, 13, 16, 18, 20)
_RIGHT = (2, 5, 8, 11, 14, 17, 19, 21)
_UP = np.array([0.0, 1.0, 0.0])
_FORWARD = np.array([0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Quaternions (w, x, y, z); every function broadcasts over the leading axes.

def qmul(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Hamilton product ``q r``: (..., 4), (..., 4) -> (..., 4)."""
    w1, x1, y1, z1 = np.moveaxis(q, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=-1)


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion (its conjugate): (..., 4) -> (..., 4)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors by unit quaternions: (..., 4), (..., 3) -> (..., 3) (broadcast)."""
    w, u = q[..., :1], q[..., 1:]  # (..., 1), (..., 3)
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def qbetween(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The shortest-arc rotation taking direction ``a`` onto ``b``: (..., 3), (..., 3) -> (..., 4).

    Its w part is ``|a||b| + a.b >= 0`` before normalisation, so w >= 0 always.
    """
    a, b = np.broadcast_arrays(a, b)
    w = np.sqrt((a * a).sum(-1) * (b * b).sum(-1)) + (a * b).sum(-1)  # (...,)
    q = np.concatenate([w[..., None], np.cross(a, b)], axis=-1)  # (..., 4)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions: (..., 4) -> (..., 3, 3)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_cont6d(m: np.ndarray) -> np.ndarray:
    """The continuous 6D form: the first column then the second, (..., 3, 3) -> (..., 6)."""
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def cont6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """Back to rotation matrices by Gram-Schmidt: (..., 6) -> (..., 3, 3) with columns x, y, z."""
    x = d6[..., :3] / np.linalg.norm(d6[..., :3], axis=-1, keepdims=True)
    z = np.cross(x, d6[..., 3:])
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-1)


# ---------------------------------------------------------------------------------------------
# Joints -> features.

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def forward_directions(joints: np.ndarray, smooth: bool = True,
                       sigma: float = FORWARD_SIGMA) -> np.ndarray:
    """The body's horizontal forward direction per frame: [T, 22, 3] -> [T, 3] unit vectors.

    ``across = (j1 - j2) + (j17 - j16)`` (HumanML3D's inverse kinematics, see the module
    docstring), normalised; ``forward = up x across``; smoothed over frames (Gaussian, ``sigma``
    frames, edges repeated) when ``smooth``; normalised.
    """
    right_hip, left_hip, right_shoulder, left_shoulder = FACE_JOINTS
    across = (joints[:, left_hip] - joints[:, right_hip]) \
        + (joints[:, right_shoulder] - joints[:, left_shoulder])  # (T, 3)
    forward = np.cross(_UP, _unit(across))  # (T, 3), horizontal
    if smooth:
        forward = gaussian_filter1d(forward, sigma, axis=0, mode="nearest")  # (T, 3)
    return _unit(forward)


def root_rotations(joints: np.ndarray, smooth: bool = True) -> np.ndarray:
    """``r[t]``: the y-rotation turning frame t's forward direction onto +z, [T, 22, 3] -> [T, 4];
    ``r[0]`` is the identity (HumanML3D's inverse kinematics sets it so)."""
    rot = qbetween(forward_directions(joints, smooth), _FORWARD)  # (T, 4)
    rot[0] = (1.0, 0.0, 0.0, 0.0)
    return rot


def foot_contacts(joints: np.ndarray, threshold: float = FOOT_THRESHOLD) -> np.ndarray:
    """1.0 where a foot joint moves less than ``threshold`` (squared metres) to the next frame:
    [T, 22, 3] -> [T-1, 4] as (left ankle, left toe, right ankle, right toe)."""
    feet = list(FEET_LEFT + FEET_RIGHT)
    step = joints[1:, feet] - joints[:-1, feet]  # (T-1, 4, 3)
    return ((step ** 2).sum(-1) < threshold).astype(np.float32)  # (T-1, 4)


def local_rotations(joints: np.ndarray, root: np.ndarray) -> np.ndarray:
    """HumanML3D's inverse kinematics: [T, 22, 3], root [T, 4] -> quaternions [T, 22, 4].

    Along each chain the global rotation of a bone is the shortest arc from its rest direction
    (``RAW_OFFSETS``) to its direction in the frame; the rotation stored at the bone's end joint
    is that arc relative to the previous bone's global rotation, and relative to ``root`` for the
    first bone of every chain (the arms' chains too, though they start at spine3). Joint 0 holds
    ``root``. Twist about a bone is not seen by positions, so every rotation is a pure swing.
    """
    quats = np.zeros(joints.shape[:-1] + (4,))  # (T, V, 4)
    quats[:, 0] = root
    for chain in KINEMATIC_CHAINS:
        parent_global = root  # (T, 4)
        for a, b in zip(chain[:-1], chain[1:]):
            bone = _unit(joints[:, b] - joints[:, a])  # (T, 3)
            swing = qbetween(RAW_OFFSETS[b], bone)  # (T, 4)
            quats[:, b] = qmul(qinv(parent_global), swing)
            parent_global = swing  # = parent_global * quats[:, b]
    return quats


def features_from_joints(joints: np.ndarray, *, smooth: bool = True,
                         foot_threshold: float = FOOT_THRESHOLD,
                         fix_turn_sign: bool = False) -> np.ndarray:
    """[T, 22, 3] processed joints -> [T-1, 263] float32 vectors (layout: ``GROUPS``).

    The joints must already be in HumanML3D's processed frame (see the module docstring); this
    function neither rescales the skeleton nor moves it to the floor or the origin.

    ``fix_turn_sign``: the release takes the ``arcsin`` of the turn quaternion's y part as it
    comes; where the facing direction crosses -z between two frames that quaternion has w < 0
    and the angle gets the wrong sign (HumanML3D issue #156), so ``joints_from_features`` turns
    the wrong way from there on. True flips such quaternions to w >= 0 first (not as released).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) < 2:
        raise ValueError(f"expected joints [T >= 2, {NUM_JOINTS}, 3], got {joints.shape}")
    n = len(joints) - 1
    rot = root_rotations(joints, smooth)  # (T, 4)
    # root: angular velocity (half-angle), linear velocity in frame t+1's facing frame, height
    turn = qmul(rot[1:], qinv(rot[:-1]))  # (T-1, 4)
    if fix_turn_sign:
        turn = np.where(turn[:, :1] < 0, -turn, turn)
    angular = np.arcsin(np.clip(turn[:, 2:3], -1.0, 1.0))  # (T-1, 1)
    linear = qrot(rot[1:], joints[1:, 0] - joints[:-1, 0])[:, [0, 2]]  # (T-1, 2)
    height = joints[:-1, 0, 1:2]  # (T-1, 1)
    # joints 1..21 relative to the root's x/z, in frame t's facing frame
    centred = joints[:-1].copy()  # (T-1, V, 3)
    centred[..., [0, 2]] -= joints[:-1, :1, [0, 2]]
    positions = qrot(rot[:-1, None], centred)[:, 1:].reshape(n, -1)  # (T-1, 63)
    # local rotations of joints 1..21 as 6D
    quats = local_rotations(joints[:-1], rot[:-1])  # (T-1, V, 4)
    rotations = matrix_to_cont6d(quat_to_matrix(quats[:, 1:])).reshape(n, -1)  # (T-1, 126)
    # every joint's displacement to the next frame, in frame t's facing frame
    velocities = qrot(rot[:-1, None], joints[1:] - joints[:-1]).reshape(n, -1)  # (T-1, 66)
    contacts = foot_contacts(joints, foot_threshold)  # (T-1, 4)
    out = np.concatenate([angular, linear, height, positions, rotations, velocities, contacts],
                         axis=-1)  # (T-1, 263)
    return out.astype(np.float32)


def split_features(features: np.ndarray) -> dict[str, np.ndarray]:
    """[..., 263] -> ``{group: [..., channels]}`` views (``GROUPS``)."""
    if features.shape[-1] != FEATURE_DIM:
        raise ValueError(f"expected [..., {FEATURE_DIM}] features, got {features.shape}")
    return {name: features[..., span] for name, span in GROUPS.items()}


# ---------------------------------------------------------------------------------------------
# Features -> joints.

def recover_root(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Root rotation and position by integration: [N, 263] -> ([N, 4], [N, 3]).

    The half-angles of the angular-velocity channel are summed (frame 0: 0) into quaternions
    ``(cos a, 0, sin a, 0)``; each frame's x/z step is the previous row's linear velocity turned
    back by this frame's rotation, summed from x = z = 0; y is the root-height channel.
    """
    f = np.asarray(features, dtype=np.float64)
    angle = np.concatenate([[0.0], np.cumsum(f[:-1, 0])])  # (N,)
    rot = np.zeros((len(f), 4))  # (N, 4)
    rot[:, 0], rot[:, 2] = np.cos(angle), np.sin(angle)
    step = np.zeros((len(f), 3))  # (N, 3)
    step[1:, [0, 2]] = f[:-1, 1:3]
    pos = np.cumsum(qrot(qinv(rot), step), axis=0)  # (N, 3)
    pos[:, 1] = f[:, 3]
    return rot, pos


def joints_from_features(features: np.ndarray) -> np.ndarray:
    """[N, 263] -> [N, 22, 3] float32 joints from the root channels and the positions group
    (the rotations, velocities and contacts are not used), as the released ``new_joints``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
        raise ValueError(f"expected features [N, {FEATURE_DIM}], got {f.shape}")
    rot, root = recover_root(f)  # (N, 4), (N, 3)
    local = f[:, GROUPS["positions"]].reshape(len(f), NUM_JOINTS - 1, 3)  # (N, 21, 3)
    world = qrot(qinv(rot)[:, None], local)  # (N, 21, 3)
    world[..., [0, 2]] += root[:, None, [0, 2]]
    return np.concatenate([root[:, None], world], axis=1).astype(np.float32)  # (N, V, 3)


# ---------------------------------------------------------------------------------------------
# Forward kinematics (to check the rotations) and mirroring.

def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Length of the bone ending at each joint (0 for the root): [..., 22, 3] -> [..., 22]."""
    lengths = np.zeros(joints.shape[:-1])
    for chain in KINEMATIC_CHAINS:
        for a, b in zip(chain[:-1], chain[1:]):
            lengths[..., b] = np.linalg.norm(joints[..., b, :] - joints[..., a, :], axis=-1)
    return lengths


def forward_kinematics(rotations: np.ndarray, root_rotation: np.ndarray, root_position: np.ndarray,
                       lengths: np.ndarray) -> np.ndarray:
    """Joints from local rotations, the inverse of ``local_rotations``.

    rotations [N, 21, 3, 3] (joints 1..21, e.g. ``cont6d_to_matrix`` of the rotations group),
    root_rotation [N, 4], root_position [N, 3], lengths [22] or [N, 22] -> joints [N, 22, 3].
    Each chain starts from the root rotation; a joint sits at its parent plus its rest direction
    times its bone length, turned by the product of the rotations down the chain.
    """
    n = len(rotations)
    mats = np.concatenate([quat_to_matrix(root_rotation)[:, None], rotations],
                          axis=1)  # (N, V, 3, 3)
    lengths = np.broadcast_to(lengths, (n, NUM_JOINTS))
    joints = np.zeros((n, NUM_JOINTS, 3))
    joints[:, 0] = root_position
    for chain in KINEMATIC_CHAINS:
        acc = mats[:, 0]  # (N, 3, 3)
        for a, b in zip(chain[:-1], chain[1:]):
            acc = acc @ mats[:, b]
            offset = RAW_OFFSETS[b] * lengths[:, b, None]  # (N, 3)
            joints[:, b] = joints[:, a] + (acc @ offset[..., None])[..., 0]
    return joints


def mirror_joints(joints: np.ndarray) -> np.ndarray:
    """HumanML3D's mirrored twin (``M<id>``): x negated and left/right joints swapped,
    [T, 22, 3] -> [T, 22, 3]."""
    out = np.array(joints, copy=True)
    out[..., 0] *= -1
    out[:, list(_LEFT) + list(_RIGHT)] = out[:, list(_RIGHT) + list(_LEFT)]
    return out
