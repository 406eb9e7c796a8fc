"""Synthetic motion-text data: procedurally animated SMPL-22 skeletons with template captions.

Deterministic by seed, no downloads, same pickle format as the released data (a list of dicts
with ``video_name``, ``coordinates`` float32 ``[T, 66]``, ``labels``, ``augmented_labels``,
``motion_type`` and, in coach mode, segment fields), so the whole pipeline runs and visibly learns
on a fresh machine.

Skeleton: a rest pose with bone lengths in metres (y up, the body faces +z, its left is +x, arms
hanging), scaled per person, animated by forward kinematics from joint-angle curves of a phase
``u`` in [0, 1] (the movement happens for ``u`` in [MOVE_START, MOVE_END]; the body rests before
and after). The lowest foot joint is kept on the ground; jumps add a flight arc. Bone lengths are
therefore constant over time except for the per-clip Gaussian position noise.

Kinds: ``raise_left_arm, raise_right_arm, squat, jump, jab, cross, kick, turn, walk, bow``.

Modes:

* ``describe``: captions of what happens ("a person raises their left arm above the head
  slowly"), varied in speed (clip length), amplitude, side / direction, facing, body size and
  noise. ``labels[0]`` is a canonical caption (fixed words for the clip's attributes: a model
  can learn it exactly); the other labels and the ``augmented_labels`` use synonyms.
* ``coach``: per kind a standard performance (``standard.pkl``; ``video_name`` = the kind) and
  learner clips, either good or with a named fault ("the jump is too low"), whose texts state the
  fault (``labels[0]`` canonical). A learner clip covers a time-warped part of the standard's
  phase range, so its segment fields are known exactly:

  - ``aligned_*``: the whole learner clip ``[0, T)`` and the standard frames it covers;
  - ``gt_*``: the movement itself (phase MOVE_START..MOVE_END) in both;
  - ``error_*``: the part where the fault shows (the middle of the movement; the whole movement
    for good clips). Ends are exclusive; ``seq_len`` = the learner segment's length.

CLI: ``python -m dataloaders.synthetic --out DIR --seed 0 --mode coach`` writes
``train.pkl``, ``test.pkl`` and ``standard.pkl``; ``--layout humanml3d`` writes the clips as
HumanML3D's release lays them out instead (:func:`write_humanml3d_layout`), for the converter.
"""
from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from configs.schema import SYNTHETIC_MODES as MODES

from .skeleton import NUM_JOINTS, SMPL22_JOINT_NAMES, SMPL22_PARENTS

__all__ = ["KINDS", "MODES", "generate", "write", "rest_offsets", "forward_kinematics", "main"]

KINDS = ("raise_left_arm", "raise_right_arm", "squat", "jump", "jab", "cross", "kick", "turn",
         "walk", "bow")
MOVE_START, MOVE_END = 0.15, 0.85  # phase window of the movement
STANDARD_FRAMES = 90
GROUND_CLEARANCE = 0.04  # height of the lowest foot joint above the floor (m)


def _joints(*names: str) -> tuple[int, ...]:
    """Indices of the named SMPL-22 joints."""
    return tuple(SMPL22_JOINT_NAMES.index(name) for name in names)


FOOT_JOINTS = _joints("left_ankle", "right_ankle", "left_foot", "right_foot")
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = _joints(
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3")
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = _joints(
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow")
_ARM = {"left": (L_SHOULDER, L_ELBOW, 1.0), "right": (R_SHOULDER, R_ELBOW, -1.0)}
_LEG = {"left": (L_HIP, L_KNEE, L_ANKLE, 1.0), "right": (R_HIP, R_KNEE, R_ANKLE, -1.0)}
_OTHER = {"left": "right", "right": "left"}

# Offsets of each joint from its parent in the rest pose (metres; y up, facing +z, left = +x).
_REST_OFFSETS = np.array([
    [0.00, 0.00, 0.00],    # 0 pelvis (root; placed by the root trajectory)
    [0.07, -0.09, 0.00],   # 1 left hip
    [-0.07, -0.09, 0.00],  # 2 right hip
    [0.00, 0.11, -0.02],   # 3 spine1
    [0.01, -0.38, 0.00],   # 4 left knee
    [-0.01, -0.38, 0.00],  # 5 right knee
    [0.00, 0.13, 0.00],    # 6 spine2
    [0.00, -0.40, -0.03],  # 7 left ankle
    [0.00, -0.40, -0.03],  # 8 right ankle
    [0.00, 0.05, 0.02],    # 9 spine3
    [0.00, -0.05, 0.13],   # 10 left foot
    [0.00, -0.05, 0.13],   # 11 right foot
    [0.00, 0.21, -0.02],   # 12 neck
    [0.08, 0.12, -0.01],   # 13 left collar
    [-0.08, 0.12, -0.01],  # 14 right collar
    [0.00, 0.09, 0.04],    # 15 head
    [0.11, 0.03, 0.00],    # 16 left shoulder
    [-0.11, 0.03, 0.00],   # 17 right shoulder
    [0.00, -0.27, 0.00],   # 18 left elbow (arms hang down)
    [0.00, -0.27, 0.00],   # 19 right elbow
    [0.00, -0.25, 0.00],   # 20 left wrist
    [0.00, -0.25, 0.00],   # 21 right wrist
], dtype=np.float64)


def rest_offsets(scale: float = 1.0) -> np.ndarray:
    """Rest-pose offsets ``(22, 3)`` of each joint from its parent, in metres."""
    return _REST_OFFSETS * scale


# ---------------------------------------------------------------------------------------------
# Rotations, envelopes and forward kinematics.

def axis_rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(T, 3, 3)`` about ``x``, ``y`` or ``z`` by ``degrees`` (T,)."""
    angle = np.radians(np.asarray(degrees, dtype=np.float64))
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)  # (T, 3, 3)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def bump(u: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 outside [a, b], rising to 1 in the middle and back (sin^2)."""
    x = np.clip((u - a) / (b - a), 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def plateau(u: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    """0 outside [a, b], smooth ramps of width ``ramp`` to a flat 1 in between."""
    return smoothstep((u - a) / ramp) * smoothstep((b - u) / ramp)


def forward_kinematics(offsets: np.ndarray, local_rot: np.ndarray, root_pos: np.ndarray,
                       root_yaw: np.ndarray) -> np.ndarray:
    """Joint positions ``(T, 22, 3)`` from rest offsets ``(22, 3)``, local rotations
    ``(T, 22, 3, 3)``, root positions ``(T, 3)`` and a global yaw about +y in degrees ``(T,)``."""
    n_frames, n_joints = local_rot.shape[:2]
    glob = np.empty_like(local_rot)  # (T, V, 3, 3) global rotation of each joint's frame
    pos = np.empty((n_frames, n_joints, 3))  # (T, V, 3)
    glob[:, 0] = axis_rotation("y", root_yaw) @ local_rot[:, 0]
    pos[:, 0] = root_pos
    for j in range(1, n_joints):
        p = SMPL22_PARENTS[j]
        pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]  # (T, 3, 3) @ (3,) -> (T, 3)
        glob[:, j] = glob[:, p] @ local_rot[:, j]
    return pos


@dataclass
class _Pose:
    """Joint-angle curves of one clip, filled by a kind's animation function."""

    u: np.ndarray  # (T,) phase
    rot: np.ndarray = field(init=False)  # (T, V, 3, 3) local rotations
    yaw: np.ndarray = field(init=False)  # (T,) extra yaw of the whole body (turns), degrees
    forward: np.ndarray = field(init=False)  # (T,) displacement along the facing direction (m)
    lift: np.ndarray = field(init=False)  # (T,) flight height (m)

    def __post_init__(self) -> None:
        n = len(self.u)
        self.rot = np.tile(np.eye(3), (n, NUM_JOINTS, 1, 1))
        self.yaw = np.zeros(n)
        self.forward = np.zeros(n)
        self.lift = np.zeros(n)

    def turn(self, joint: int, axis: str, degrees: Any) -> None:
        """Compose a rotation into ``joint``'s local rotation (applied before earlier ones)."""
        degrees = np.broadcast_to(np.asarray(degrees, dtype=np.float64), self.u.shape)
        self.rot[:, joint] = self.rot[:, joint] @ axis_rotation(axis, degrees)

    def arm(self, side: str, flex: Any = 0.0, abduct: Any = 8.0, elbow: Any = 5.0) -> None:
        """Shoulder flexion (arm forward/up), abduction (arm out to the side), elbow flexion."""
        shoulder, elbow_joint, sign = _ARM[side]
        self.turn(shoulder, "x", -np.asarray(flex))
        self.turn(shoulder, "z", sign * np.asarray(abduct))
        self.turn(elbow_joint, "x", -np.asarray(elbow))

    def leg(self, side: str, hip: Any = 0.0, knee: Any = 0.0, ankle: Any = None,
            pelvis_pitch: Any = 0.0) -> None:
        """Hip flexion (thigh forward), knee flexion; the ankle keeps the foot flat by default."""
        hip_joint, knee_joint, ankle_joint, _ = _LEG[side]
        hip, knee = np.asarray(hip, dtype=np.float64), np.asarray(knee, dtype=np.float64)
        if ankle is None:
            ankle = hip - knee - np.asarray(pelvis_pitch)
        self.turn(hip_joint, "x", -hip)
        self.turn(knee_joint, "x", knee)
        self.turn(ankle_joint, "x", ankle)

    def spine(self, flex: Any = 0.0, twist: Any = 0.0) -> None:
        """Forward bend and twist (to the body's left) spread over the three spine joints."""
        for joint in (SPINE1, SPINE2, SPINE3):
            self.turn(joint, "x", np.asarray(flex) / 3.0)
            self.turn(joint, "y", np.asarray(twist) / 3.0)


# ---------------------------------------------------------------------------------------------
# Animations: one function per kind, (phase u, parameters) -> _Pose.

_W = MOVE_END - MOVE_START


def _window(frac_start: float, frac_end: float) -> tuple[float, float]:
    """A sub-window of the movement, as fractions of it."""
    return MOVE_START + frac_start * _W, MOVE_START + frac_end * _W


def _guard(pose: _Pose, side: str, drop: Any = 0.0) -> None:
    """A boxing guard arm (fist near the chin); ``drop`` in [0, 1] lowers it."""
    drop = np.asarray(drop)
    pose.arm(side, flex=45 - 35 * drop, abduct=15, elbow=130 - 90 * drop)


def _stance(pose: _Pose) -> None:
    """Orthodox boxing stance legs: left foot forward, knees soft."""
    pose.leg("left", hip=15, knee=20)
    pose.leg("right", hip=-10, knee=15)


def animate_raise_arm(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    env = plateau(u, MOVE_START, MOVE_END, 0.25 * _W)
    side = p["side"]
    pose.arm(side, flex=0, abduct=8 + (p["height"] - 8) * env, elbow=5 + p["elbow"] * env)
    pose.arm(_OTHER[side])
    return pose


def animate_squat(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    depth = p["depth"] * plateau(u, MOVE_START, MOVE_END, 0.3 * _W)
    for side in ("left", "right"):
        pose.leg(side, hip=depth, knee=1.8 * depth)
        pose.arm(side, flex=80 * depth / max(p["depth"], 1e-6), abduct=5, elbow=10)
    pose.spine(flex=p["lean"] * depth)
    return pose


def animate_jump(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    crouch = 40 * bump(u, *_window(0.0, 0.3)) + 35 * bump(u, *_window(0.6, 0.9))
    flight_start, flight_end = _window(0.3, 0.6)
    v = np.clip((u - flight_start) / (flight_end - flight_start), 0.0, 1.0)
    pose.lift = p["height"] * 4.0 * v * (1.0 - v)
    swing = p["swing"] * bump(u, *_window(0.15, 0.65)) - 30 * bump(u, *_window(0.0, 0.25))
    for side in ("left", "right"):
        pose.leg(side, hip=crouch, knee=1.8 * crouch)
        pose.arm(side, flex=swing, abduct=8, elbow=10)
    pose.spine(flex=0.4 * crouch)
    return pose


def animate_jab(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    env = bump(u, MOVE_START, MOVE_END)
    _stance(pose)
    pose.arm("left", flex=45 + (p["reach"] - 45) * env, abduct=15 * (1 - env),
             elbow=130 - (130 - p["extend"]) * env)
    _guard(pose, "right", drop=p["guard_drop"] * env)
    pose.spine(twist=-8 * env)
    return pose


def animate_cross(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    env = bump(u, MOVE_START, MOVE_END)
    _stance(pose)
    pose.arm("right", flex=45 + (p["reach"] - 45) * env, abduct=15 * (1 - env),
             elbow=130 - (130 - p["extend"]) * env)
    _guard(pose, "left", drop=p["guard_drop"] * env)
    pose.spine(twist=p["twist"] * env)
    pose.yaw = 0.4 * p["twist"] * env  # the hips turn with the torso
    return pose


def animate_kick(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    side = p["side"]
    lift = bump(u, MOVE_START, MOVE_END)
    extend = bump(u, *_window(0.3, 0.7))
    pose.leg(side, hip=p["height"] * lift, knee=100 * lift * (1 - p["extension"] * extend),
             ankle=20 * lift)
    pose.leg(_OTHER[side], hip=5 * lift, knee=10 * lift)
    for arm_side in ("left", "right"):
        pose.arm(arm_side, flex=30, abduct=20, elbow=100)
    pose.spine(flex=-10 * lift)
    return pose


def animate_turn(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    pose.yaw = p["direction"] * p["angle"] * smoothstep((u - MOVE_START) / _W)
    knees = 15 * bump(u, MOVE_START, MOVE_END)
    arms_out = p["arms_out"] * bump(u, *_window(0.1, 0.9))
    for side in ("left", "right"):
        pose.leg(side, hip=0.5 * knees, knee=knees)
        pose.arm(side, flex=10, abduct=10 + arms_out, elbow=20)
    return pose


def animate_walk(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    env = plateau(u, MOVE_START, MOVE_END, 0.15 * _W)
    phase = 2 * np.pi * p["cycles"] * np.clip((u - MOVE_START) / _W, 0.0, 1.0)
    step = p["step"] * env
    for side, sign in (("left", 1.0), ("right", -1.0)):
        swing = np.sin(phase) * sign
        knee = 1.4 * step * np.maximum(0.0, np.cos(phase) * sign) + 5 * env
        pose.leg(side, hip=step * swing, knee=knee)
        pose.arm(side, flex=-p["arm_swing"] * env * swing, abduct=8, elbow=10 + 10 * env)
    stride = 2.0 * 0.8 * np.sin(np.radians(p["step"]))  # metres per step
    total = p["direction"] * stride * 2 * p["cycles"]
    cumulative = np.cumsum(env)
    pose.forward = total * cumulative / max(cumulative[-1], 1e-9)
    return pose


def animate_bow(u: np.ndarray, p: dict) -> _Pose:
    pose = _Pose(u)
    env = plateau(u, MOVE_START, MOVE_END, 0.3 * _W)
    pitch = 0.4 * p["depth"] * env  # pelvis tilts forward
    pose.turn(PELVIS, "x", pitch)
    knees = p["knees"] * env
    for side in ("left", "right"):
        pose.leg(side, hip=pitch + 0.5 * knees, knee=knees, pelvis_pitch=pitch)
    bend = 0.6 * p["depth"] * env
    pose.spine(flex=bend)
    for side in ("left", "right"):
        pose.arm(side, flex=0.9 * (pitch + bend), abduct=8, elbow=10)
    return pose


# ---------------------------------------------------------------------------------------------
# Per-kind parameters, caption vocabulary, coaching faults.

@dataclass(frozen=True)
class _Kind:
    animate: Callable[[np.ndarray, dict], _Pose]
    nominal: dict  # standard performance parameters
    noun: str  # for "good" coaching texts
    attributes: dict  # describe mode: attribute -> {value: parameter overrides}
    phrases: Callable[[dict], list[str]]  # describe mode: attribute values -> verb phrases
    faults: dict  # coach mode: fault -> (parameter overrides, problems, fixes)


def _arm_kind(side: str) -> _Kind:
    return _Kind(
        animate=animate_raise_arm,
        nominal={"side": side, "height": 165.0, "elbow": 0.0},
        noun="arm raise",
        attributes={"height": {"high": {"height": 165.0}, "mid": {"height": 90.0}}},
        phrases=lambda a, s=side: {
            "high": [f"raises their {s} arm above the head", f"lifts the {s} arm over the head",
                     f"puts the {s} hand up high", f"raises the {s} hand above the head"],
            "mid": [f"raises their {s} arm to shoulder height", f"lifts the {s} arm out to the side",
                    f"holds the {s} arm out sideways", f"raises the {s} arm sideways to shoulder level"],
        }[a["height"]],
        faults={
            "low": ({"height": 90.0},
                    [f"the {side} arm does not go above the head",
                     f"the {side} arm stops at shoulder height",
                     f"your {side} hand does not reach overhead"],
                    ["lift the arm all the way up", f"raise the {side} hand higher"]),
            "bent": ({"elbow": 70.0},
                     [f"the {side} elbow bends", f"the {side} arm is not straight",
                      f"your {side} elbow is bent during the raise"],
                     ["keep the arm straight", "lock the elbow as you lift"]),
        },
    )


def _kick_phrases(a: dict) -> list[str]:
    s = a["side"]
    if a["height"] == "high":
        return [f"kicks high with the {s} leg", f"does a high front kick with the {s} leg",
                f"kicks the {s} foot up high"]
    return [f"kicks low with the {s} leg", f"does a low front kick with the {s} leg",
            f"kicks the {s} foot forward at knee height"]


def _turn_phrases(a: dict) -> list[str]:
    d = a["direction"]
    if a["amount"] == "full":
        return [f"turns a full circle to the {d}", f"spins all the way around to the {d}",
                f"rotates a full turn to the {d}"]
    return [f"turns around to the {d}", f"does a half turn to the {d}",
            f"turns to face the other way, turning {d}"]


KIND_SPECS: dict[str, _Kind] = {
    "raise_left_arm": _arm_kind("left"),
    "raise_right_arm": _arm_kind("right"),
    "squat": _Kind(
        animate=animate_squat, nominal={"depth": 75.0, "lean": 0.45}, noun="squat",
        attributes={"depth": {"deep": {"depth": 75.0}, "half": {"depth": 40.0}}},
        phrases=lambda a: {
            "deep": ["squats down deeply", "does a deep squat", "bends the knees into a full squat"],
            "half": ["does a half squat", "bends the knees a little", "squats down partway"],
        }[a["depth"]],
        faults={
            "shallow": ({"depth": 30.0},
                        ["the knees do not bend enough", "the squat is too shallow",
                         "you do not go down far enough"],
                        ["bend the knees more", "sit lower into the squat"]),
            "lean": ({"lean": 1.1},
                     ["the back leans too far forward", "the upper body tips forward too much",
                      "your chest drops forward"],
                     ["keep the chest up", "keep the back more upright"]),
        }),
    "jump": _Kind(
        animate=animate_jump, nominal={"height": 0.3, "swing": 150.0}, noun="jump",
        attributes={"height": {"high": {"height": 0.35}, "low": {"height": 0.1}}},
        phrases=lambda a: {
            "high": ["jumps high into the air", "does a big jump", "leaps up high"],
            "low": ["does a small jump", "hops up a little", "jumps slightly off the ground"],
        }[a["height"]],
        faults={
            "low": ({"height": 0.08},
                    ["the jump is too low", "you barely leave the ground", "the jump lacks height"],
                    ["push harder off the floor", "jump higher"]),
            "arms": ({"swing": 15.0},
                     ["the arms do not swing up", "the arms stay down during the jump",
                      "you do not use your arms"],
                     ["swing the arms up as you jump", "drive the arms upward"]),
        }),
    "jab": _Kind(
        animate=animate_jab, nominal={"reach": 90.0, "extend": 0.0, "guard_drop": 0.0},
        noun="jab", attributes={},
        phrases=lambda a: ["throws a left jab", "punches forward with the left hand",
                           "jabs with the left fist"],
        faults={
            "short": ({"extend": 65.0},
                      ["the punch does not fully extend", "your jab stops short",
                       "the left arm stays bent at the end of the jab"],
                      ["straighten the left arm all the way", "reach fully through the target"]),
            "elbow": ({"reach": 50.0},
                      ["the left elbow drops", "the jab goes too low",
                       "the left arm points down at the end of the jab"],
                      ["keep the elbow up and punch at shoulder height",
                       "aim the jab at head height"]),
            "guard": ({"guard_drop": 1.0},
                      ["the right hand drops from the guard", "the rear hand falls away from the chin",
                       "your right guard comes down"],
                      ["keep the right hand by the chin", "hold the guard up"]),
        }),
    "cross": _Kind(
        animate=animate_cross,
        nominal={"reach": 90.0, "extend": 0.0, "guard_drop": 0.0, "twist": 35.0}, noun="cross",
        attributes={},
        phrases=lambda a: ["throws a right cross",
                           "punches forward with the right hand while turning the hips",
                           "throws a straight right punch"],
        faults={
            "short": ({"extend": 65.0},
                      ["the punch does not fully extend", "your cross stops short",
                       "the right arm stays bent at the end of the cross"],
                      ["straighten the right arm all the way", "reach fully through the target"]),
            "hips": ({"twist": 0.0},
                     ["the hips do not rotate", "the punch is all arm and no hip turn",
                      "your body does not turn into the cross"],
                     ["turn the hips into the punch", "rotate the body through the cross"]),
            "guard": ({"guard_drop": 1.0},
                      ["the left hand drops from the guard", "the lead hand falls away from the face",
                       "your left guard comes down"],
                      ["keep the left hand up", "hold the guard up"]),
        }),
    "kick": _Kind(
        animate=animate_kick, nominal={"side": "right", "height": 85.0, "extension": 0.95},
        noun="kick",
        attributes={"side": {"left": {"side": "left"}, "right": {"side": "right"}},
                    "height": {"high": {"height": 85.0}, "low": {"height": 40.0}}},
        phrases=_kick_phrases,
        faults={
            "low": ({"height": 40.0},
                    ["the kick is too low", "the leg does not lift high enough",
                     "your kick stays below the waist"],
                    ["lift the knee higher", "kick up to waist height"]),
            "knee": ({"extension": 0.2},
                     ["the knee does not extend", "the kicking leg stays bent",
                      "you do not snap the leg out"],
                     ["straighten the leg at the end of the kick", "extend the knee fully"]),
        }),
    "turn": _Kind(
        animate=animate_turn, nominal={"direction": 1.0, "angle": 360.0, "arms_out": 0.0},
        noun="turn",
        attributes={"direction": {"left": {"direction": 1.0}, "right": {"direction": -1.0}},
                    "amount": {"full": {"angle": 360.0}, "half": {"angle": 180.0}}},
        phrases=_turn_phrases,
        faults={
            "incomplete": ({"angle": 250.0},
                           ["the turn is incomplete", "you stop before a full circle",
                            "the turn ends short of the starting direction"],
                           ["finish the full rotation", "turn all the way around"]),
            "arms": ({"arms_out": 75.0},
                     ["the arms swing out during the turn", "the arms fly away from the body",
                      "your arms are not kept close"],
                     ["keep the arms tucked in", "hold the arms close to the body"]),
        }),
    "walk": _Kind(
        animate=animate_walk,
        nominal={"step": 25.0, "arm_swing": 25.0, "direction": 1.0, "cycles": 2.0}, noun="walk",
        attributes={"direction": {"forward": {"direction": 1.0}, "backward": {"direction": -1.0}}},
        phrases=lambda a: {
            "forward": ["walks forward", "takes a few steps forward", "walks ahead"],
            "backward": ["walks backwards", "takes a few steps back", "steps backwards"],
        }[a["direction"]],
        faults={
            "short": ({"step": 10.0},
                      ["the steps are too short", "your stride is too small",
                       "you shuffle instead of stepping"],
                      ["take longer steps", "lengthen the stride"]),
            "arms": ({"arm_swing": 0.0},
                     ["the arms do not swing", "the arms hang still while walking",
                      "there is no arm swing"],
                     ["let the arms swing with the steps", "swing the opposite arm forward"]),
        }),
    "bow": _Kind(
        animate=animate_bow, nominal={"depth": 70.0, "knees": 0.0}, noun="bow",
        attributes={"depth": {"deep": {"depth": 70.0}, "slight": {"depth": 30.0}}},
        phrases=lambda a: {
            "deep": ["bows deeply", "bends forward at the waist in a deep bow", "takes a deep bow"],
            "slight": ["bows slightly", "gives a small bow", "leans forward in a slight bow"],
        }[a["depth"]],
        faults={
            "shallow": ({"depth": 25.0},
                        ["the bow is too shallow", "you do not bend forward enough",
                         "the upper body stays almost upright"],
                        ["bend further at the waist", "bow more deeply"]),
            "knees": ({"knees": 35.0},
                      ["the knees bend during the bow", "the legs do not stay straight",
                       "you bend the knees instead of the hips"],
                      ["keep the legs straight", "hinge at the hips only"]),
        }),
}
assert tuple(KIND_SPECS) == KINDS

SUBJECTS = ["a person", "someone", "a man", "the person", "a figure"]
SPEEDS = {  # class -> (frame range, adverbs; the first is canonical)
    "fast": ((30, 44), ["quickly", "fast", "rapidly"]),
    "normal": ((50, 64), [""]),
    "slow": ((72, 90), ["slowly", "at a slow pace", "gently"]),
}
GOOD_PROBLEMS = ["good {noun}, it matches the standard", "well done, the {noun} looks right",
                 "nice clean {noun}"]
GOOD_FIXES = ["keep it up", "keep doing it like this"]


# ---------------------------------------------------------------------------------------------
# Rendering a clip.

@dataclass(frozen=True)
class _Style:
    """Who performs and how it is recorded."""

    facing: float = 0.0  # degrees about +y
    scale: float = 1.0  # body size
    noise: float = 0.0  # std of Gaussian joint noise (m)
    origin: tuple[float, float] = (0.0, 0.0)  # (x, z) start position


def render(kind: str, params: dict, u: np.ndarray, style: _Style,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Joint positions ``(T, 22, 3)`` float32 of ``kind`` performed at phases ``u``."""
    pose = KIND_SPECS[kind].animate(u, params)
    facing = np.radians(style.facing)
    direction = np.array([np.sin(facing), 0.0, np.cos(facing)])  # the body's forward (+z turned)
    root = np.zeros((len(u), 3))
    root[:, 0], root[:, 2] = style.origin
    root += pose.forward[:, None] * direction  # (T, 3)
    pos = forward_kinematics(rest_offsets(style.scale), pose.rot, root, style.facing + pose.yaw)
    lowest = pos[:, FOOT_JOINTS, 1].min(axis=1)  # (T,)
    pos[:, :, 1] += (GROUND_CLEARANCE * style.scale - lowest + pose.lift)[:, None]
    if style.noise > 0:
        if rng is None:
            raise ValueError("noise needs an rng")
        pos = pos + rng.normal(0.0, style.noise, size=pos.shape)
    return pos.astype(np.float32)


def _style_metadata(style: _Style) -> dict:
    """How the clip was recorded (kept as metadata; lets tests undo facing and body size)."""
    return {"facing_deg": style.facing, "body_scale": style.scale, "noise_std": style.noise}


def _warped_phase(rng: np.random.Generator, n_frames: int, start: float, end: float,
                  strength: float) -> np.ndarray:
    """A monotone, mildly non-linear map of frames onto phases [start, end]."""
    s = np.linspace(0.0, 1.0, n_frames)
    c = rng.uniform(-strength, strength)
    warped = s + c * np.sin(2 * np.pi * s) / (2 * np.pi)  # derivative 1 + c cos(.) > 0
    return start + (end - start) * warped


def _jitter(params: dict, rng: np.random.Generator, amount: float) -> dict:
    """Scale numeric magnitudes by ``1 +- amount`` (signs, sides and counts untouched)."""
    out = dict(params)
    for key, value in params.items():
        if isinstance(value, float) and key not in ("direction", "cycles") and value != 0.0:
            out[key] = value * rng.uniform(1 - amount, 1 + amount)
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _pick_texts(canonical: str, make: Callable[[], str], rng: np.random.Generator,
                n_labels: int = 3, n_augmented: int = 3) -> tuple[list[str], list[str]]:
    """``canonical`` plus distinct random variants: (labels, augmented_labels)."""
    seen = {canonical}
    variants: list[str] = []
    for _ in range(200):
        if len(variants) == n_labels - 1 + n_augmented:
            break
        text = make()
        if text not in seen:
            seen.add(text)
            variants.append(text)
    while len(variants) < n_labels - 1 + n_augmented:  # tiny vocabularies: allow repeats
        variants.append(make())
    return [canonical] + variants[: n_labels - 1], variants[n_labels - 1:]


# ---------------------------------------------------------------------------------------------
# Describe mode.

def _describe_clip(kind: str, index: int, split: str, rng: np.random.Generator) -> dict:
    spec = KIND_SPECS[kind]
    attrs = {name: str(rng.choice(sorted(values))) for name, values in spec.attributes.items()}
    params = dict(spec.nominal)
    for name, value in attrs.items():
        params.update(spec.attributes[name][value])
    params = _jitter(params, rng, 0.08)
    speed = str(rng.choice(sorted(SPEEDS)))
    (lo, hi), adverbs = SPEEDS[speed]
    n_frames = int(rng.integers(lo, hi + 1))
    u = _warped_phase(rng, n_frames, 0.0, 1.0, 0.3)
    style = _Style(facing=float(rng.uniform(-45, 45)), scale=float(rng.uniform(0.92, 1.08)),
                   noise=float(rng.uniform(0.0, 0.008)),
                   origin=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))))
    coords = render(kind, params, u, style, rng)
    phrases = spec.phrases(attrs)

    def caption(subject: str, phrase: str, adverb: str) -> str:
        return " ".join(w for w in (subject, phrase, adverb) if w)

    canonical = caption(SUBJECTS[0], phrases[0], adverbs[0])
    labels, augmented = _pick_texts(
        canonical, lambda: caption(str(rng.choice(SUBJECTS)), str(rng.choice(phrases)),
                                   str(rng.choice(adverbs))), rng)
    return {
        "video_name": f"{split}_{kind}_{index:03d}",
        "motion_type": kind,
        "coordinates": coords.reshape(n_frames, -1),  # (T, V, 3) -> (T, 66)
        "labels": labels,
        "augmented_labels": augmented,
        "original_seq_len": n_frames,
        "speed": speed,
        **_style_metadata(style),
        **{f"attr_{k}": v for k, v in attrs.items()},
    }


# ---------------------------------------------------------------------------------------------
# Coach mode.

def standard_clip(kind: str) -> np.ndarray:
    """The standard performance of ``kind``: ``(STANDARD_FRAMES, 22, 3)`` float32, no noise."""
    u = np.linspace(0.0, 1.0, STANDARD_FRAMES)
    return render(kind, KIND_SPECS[kind].nominal, u, _Style())


def _segment_fields(name: str, u: np.ndarray, lo: float, hi: float) -> dict:
    """Learner frames whose phase lies in [lo, hi] and the standard frames of the same phases."""
    inside = np.flatnonzero((u >= lo - 1e-9) & (u <= hi + 1e-9))
    last = STANDARD_FRAMES - 1
    start, end = int(inside[0]), int(inside[-1]) + 1
    return {
        f"{name}_start_frame": start,
        f"{name}_end_frame": end,
        f"{name}_std_start_frame": int(np.ceil(lo * last - 1e-9)),
        f"{name}_std_end_frame": int(np.floor(hi * last + 1e-9)) + 1,
        f"{name}_seq_len": end - start,
    }


def _coach_texts(kind: str, fault: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    spec = KIND_SPECS[kind]
    if fault == "good":
        problems = [p.format(noun=spec.noun) for p in GOOD_PROBLEMS]
        fixes = GOOD_FIXES
    else:
        _, problems, fixes = spec.faults[fault]

    def variant() -> str:
        problem = _sentence(str(rng.choice(problems)))
        if rng.random() < 0.3:
            return problem
        return f"{problem} {_sentence(str(rng.choice(fixes)))}"

    return _pick_texts(_sentence(problems[0]), variant, rng)


def _coach_clip(kind: str, index: int, split: str, rng: np.random.Generator) -> dict:
    spec = KIND_SPECS[kind]
    faults = ["good"] + sorted(spec.faults)
    fault = faults[index % len(faults)]
    params = dict(spec.nominal)
    if fault != "good":
        params.update(spec.faults[fault][0])
    params = _jitter(params, rng, 0.05)
    n_frames = int(rng.integers(40, 81))
    p0, p1 = float(rng.uniform(0.0, 0.1)), float(rng.uniform(0.9, 1.0))
    u = _warped_phase(rng, n_frames, p0, p1, 0.5)
    u[0], u[-1] = p0, p1
    style = _Style(facing=float(rng.uniform(-15, 15)), scale=float(rng.uniform(0.95, 1.05)),
                   noise=float(rng.uniform(0.0, 0.005)),
                   origin=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))))
    coords = render(kind, params, u, style, rng)
    labels, augmented = _coach_texts(kind, fault, rng)
    last = STANDARD_FRAMES - 1
    record = {
        "video_name": f"{split}_{kind}_{index:03d}_{fault}",
        "motion_type": kind,
        "coordinates": coords.reshape(n_frames, -1),  # (T, V, 3) -> (T, 66)
        "labels": labels,
        "augmented_labels": augmented,
        "original_seq_len": n_frames,
        "fault": fault,
        "phase": u.astype(np.float32),
        **_style_metadata(style),
        "aligned_start_frame": 0,
        "aligned_end_frame": n_frames,
        "aligned_std_start_frame": int(round(p0 * last)),
        "aligned_std_end_frame": int(round(p1 * last)) + 1,
        "aligned_seq_len": n_frames,
    }
    record.update(_segment_fields("gt", u, MOVE_START, MOVE_END))
    error_window = (MOVE_START, MOVE_END) if fault == "good" else _window(0.3, 0.7)
    record.update(_segment_fields("error", u, *error_window))
    return record


# ---------------------------------------------------------------------------------------------
# Public API.

_SPLITS = {"train": 0, "test": 1}


def generate(seed: int, n_train_per_kind: int = 24, n_test_per_kind: int = 4,
             mode: str = "describe", kinds: tuple[str, ...] = KINDS
             ) -> tuple[list[dict], list[dict], list[dict]]:
    """``(train_records, test_records, standard_records)`` in the released pickle format.

    Each clip draws from its own generator seeded by (seed, mode, split, kind, index), so a seed
    fixes the data and adding clips or kinds leaves the existing ones unchanged.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unknown = [k for k in kinds if k not in KIND_SPECS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; known: {KINDS}")
    make = _coach_clip if mode == "coach" else _describe_clip
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for split, count in (("train", n_train_per_kind), ("test", n_test_per_kind)):
        for kind in kinds:
            kind_id = KINDS.index(kind)
            for i in range(count):
                rng = np.random.default_rng([seed, MODES.index(mode), _SPLITS[split], kind_id, i])
                splits[split].append(make(kind, i, split, rng))
    standards = [{"video_name": kind,
                  "coordinates": standard_clip(kind).reshape(STANDARD_FRAMES, -1)}  # (T, 66)
                 for kind in kinds]
    return splits["train"], splits["test"], standards


def write(out_dir: str | Path, seed: int = 0, mode: str = "coach", train_per_kind: int = 24,
          test_per_kind: int = 4) -> dict[str, Path]:
    """Write ``train.pkl``, ``test.pkl`` and ``standard.pkl`` into ``out_dir``; returns the paths.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    train, test, standards = generate(seed, train_per_kind, test_per_kind, mode)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in (("train", train), ("test", test), ("standard", standards)):
        path = out / f"{name}.pkl"
        tmp = path.with_suffix(".pkl.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(records, fh, protocol=4)
        tmp.replace(path)
        paths[name] = path
    return paths


def write_humanml3d_layout(out_dir: str | Path, seed: int = 0, mode: str = "describe", train_per_kind: int = 24,
                           test_per_kind: int = 4) -> dict[str, int]:
    """Write the clips as HumanML3D's release lays out a dataset, for ``python -m dataloaders.humanml3d``:
    ``new_joints/S<nnnnn>.npy`` (``[T, 22, 3]`` in the canonical body frame, as HumanML3D's
    processed joints are: :mod:`dataloaders.body_frame`), ``texts/S<nnnnn>.txt`` (one
    ``caption#tokens#0.0#0.0`` line per label, the tokens ``word/X``: lower-cased words with the
    universal part-of-speech tag X, as no tagger runs here) and ``train.txt`` / ``val.txt`` /
    ``test.txt`` (the test clips alternate between val and test). Returns the number of ids a split.
    Existing files are replaced."""
    from .body_frame import canonical

    train, test, _ = generate(seed, train_per_kind, test_per_kind, mode)
    out = Path(out_dir)
    (out / "new_joints").mkdir(parents=True, exist_ok=True)
    (out / "texts").mkdir(exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for index, (split, rec) in enumerate([("train", r) for r in train] +
                                         [(("val", "test")[i % 2], r) for i, r in enumerate(test)]):
        motion_id = f"S{index:05d}"
        joints = canonical(np.asarray(rec["coordinates"]).reshape(-1, NUM_JOINTS, 3))  # (T, 22, 3)
        np.save(out / "new_joints" / f"{motion_id}.npy", joints)
        lines = [f"{text}#{' '.join(w + '/X' for w in text.lower().rstrip('.').split())}#0.0#0.0"
                 for text in rec["labels"]]
        (out / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        splits[split].append(motion_id)
    for split, ids in splits.items():
        (out / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return {split: len(ids) for split, ids in splits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="coach")
    parser.add_argument("--train-per-kind", type=int, default=24)
    parser.add_argument("--test-per-kind", type=int, default=4)
    parser.add_argument("--layout", choices=("pickles", "humanml3d"), default="pickles",
                        help="pickles: train.pkl, test.pkl, standard.pkl (default); humanml3d: HumanML3D's "
                             "new_joints/, texts/ and split files, in the canonical body frame, for "
                             "python -m dataloaders.humanml3d")
    args = parser.parse_args(argv)
    if args.layout == "humanml3d":
        counts = write_humanml3d_layout(args.out, seed=args.seed, mode=args.mode,
                                        train_per_kind=args.train_per_kind, test_per_kind=args.test_per_kind)
        print(f"{args.out}: HumanML3D layout, " + ", ".join(f"{n} {split} ids" for split, n in counts.items()))
        return
    paths = write(args.out, seed=args.seed, mode=args.mode, train_per_kind=args.train_per_kind,
                  test_per_kind=args.test_per_kind)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
