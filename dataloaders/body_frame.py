"""One body frame for every source: the axes and units a clip is read into (``data.frame``).

**The canonical frame** (``data.frame: canonical``, the default) is that of HumanML3D's processed
joints (``new_joints``): metres, y up, the feet on the floor (the lowest joint of the clip at
y = 0), the root's first position at x = z = 0 and the body facing +z in the first frame (its
left at +x). Facing is the horizontal direction perpendicular to the body's across vector,
``forward = up x across`` with ``across = (right hip - left hip) + (right shoulder - left
shoulder)`` at frame 0, as HumanML3D's processing script puts its motions.

Where clips come from, and what reading them here does (:data:`AXES`):

* ``hybrik``: HybrIK's camera axes (x right, y down, z away from the camera) in units of its
  ``depth_factor`` (2.2 m), the root at the origin in every frame. The released BX and FS pickles
  store their clips so, and so does a HybrIK result (``res.pk``). Scaled to metres and turned by
  180 degrees about x (:func:`dataloaders.hybrik.to_frame`), then put in the canonical frame. The
  root stays at the origin of x and z in every frame: the camera translation is not in the data.
* ``y_up``: metres, y up: synthetic clips (facing anywhere within +-45 degrees, the lowest foot
  4 cm above the floor), HumanML3D's ``new_joints`` (already canonical up to the smoothing of
  their facing) and HybrIK results read with ``--frame project``. Put in the canonical frame.

Which axes a file uses is found from its clips (head above or below the ankles along y, by a
vote over the clips; :func:`axes_of`), and the reader logs it. Putting a clip in the canonical
frame twice changes it by float rounding only.

``data.frame: stored`` keeps every clip as its file stores it: the runs written before the
canonical frame existed (their saved configs lack the key, which reads as ``stored``), so that
their checkpoints caption what they were trained on.

``python -m dataloaders.body_frame FILE ...`` prints the ranges of the features the encoder
reads (joint and bone channels, :mod:`dataloaders.features`) in the stored and the canonical
frame, one column per file: e.g. a BX pickle beside a HumanML3D motion.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Mapping, Sequence

import numpy as np

from configs.schema import BODY_FRAMES

from . import hybrik
from .skeleton import NUM_JOINTS, ROOT, SMPL22_JOINT_NAMES

__all__ = ["BODY_FRAMES", "AXES", "axes_of", "canonical", "to_canonical", "facing_degrees",
           "convert_records", "convert_standards", "main"]

log = logging.getLogger(__name__)

AXES = {
    "hybrik": "HybrIK's camera axes (y down, units of 2.2 m)",
    "y_up": "metres, y up",
}
L_HIP, R_HIP, L_SHOULDER, R_SHOULDER = (SMPL22_JOINT_NAMES.index(n) for n in
                                        ("left_hip", "right_hip", "left_shoulder", "right_shoulder"))


def axes_of(clips: Sequence[np.ndarray]) -> str:
    """``"hybrik"`` when most clips ``[T, 22, 3]`` have their head below their ankles along y (y
    down), else ``"y_up"``."""
    if not len(clips):
        return "y_up"
    down = sum(hybrik.frame_of(clip) == "hybrik" for clip in clips)
    return "hybrik" if 2 * down > len(clips) else "y_up"


def facing_degrees(joints: np.ndarray, frame: int = 0) -> float:
    """The body's forward direction at ``frame`` of a y-up clip ``[T, 22, 3]``, in degrees about +y
    from +z (positive towards +x); 0.0 when the hips and shoulders give no across vector."""
    j = np.asarray(joints, dtype=np.float64)[frame]  # (V, 3)
    across = (j[R_HIP] - j[L_HIP]) + (j[R_SHOULDER] - j[L_SHOULDER])  # (3,)
    forward = np.cross([0.0, 1.0, 0.0], across)  # (3,), horizontal: up x anything has y = 0
    if np.hypot(forward[0], forward[2]) < 1e-9:
        return 0.0
    return float(np.degrees(np.arctan2(forward[0], forward[2])))


def canonical(joints: np.ndarray) -> np.ndarray:
    """A y-up clip in metres ``[T, 22, 3]`` in the canonical frame (float32): the lowest joint of
    the clip at y = 0, the root's first x and z at 0, the first frame facing +z."""
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected joints [T, {NUM_JOINTS}, 3], found shape {j.shape}")
    origin = np.array([j[0, ROOT, 0], j[:, :, 1].min(), j[0, ROOT, 2]])  # (3,) root's x, z; floor's y
    j = j - origin
    turn = -np.radians(facing_degrees(j))  # about y, taking the facing onto +z
    cos, sin = np.cos(turn), np.sin(turn)
    x, z = j[..., 0], j[..., 2]
    return np.stack([cos * x + sin * z, j[..., 1], -sin * x + cos * z], axis=-1).astype(np.float32)


def to_canonical(joints: np.ndarray, axes: str) -> np.ndarray:
    """A clip ``[T, 22, 3]`` stored in ``axes`` (:data:`AXES`) -> the canonical frame (float32)."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {tuple(AXES)}, got {axes!r}")
    if axes == "hybrik":
        joints = hybrik.to_frame(joints, "project")  # metres, y up, the same facing
    return canonical(joints)


def convert_records(records: Sequence[dict], frame: str, source: str, per_clip: bool = False) -> list[dict]:
    """Copies of validated records with their coordinates in ``frame`` (:data:`BODY_FRAMES`); the
    axes found in ``source`` are logged. The axes are those of most clips (one file's), or with
    ``per_clip`` each clip's own (inputs from several files). ``stored`` returns the records as
    they are."""
    _check(frame)
    if frame == "stored" or not records:
        return list(records)
    clips = [r["coordinates"] for r in records]
    axes = [axes_of([clip]) for clip in clips] if per_clip else [axes_of(clips)] * len(clips)
    found = ", ".join(f"{axes.count(a)} in {AXES[a]}" for a in AXES if a in axes)
    log.info("%s: %d clip(s) put in the canonical body frame (%s)", source, len(records), found)
    return [{**r, "coordinates": to_canonical(clip, a)} for r, clip, a in zip(records, clips, axes)]


def convert_standards(standards: Mapping[str, np.ndarray] | None, frame: str, source: str,
                      per_clip: bool = False) -> dict[str, np.ndarray] | None:
    """``{name: [T, 22, 3]}`` standards in ``frame``, as :func:`convert_records` does clips."""
    _check(frame)
    if standards is None or frame == "stored" or not standards:
        return None if standards is None else dict(standards)
    records = [{"video_name": name, "coordinates": coords} for name, coords in standards.items()]
    return {r["video_name"]: r["coordinates"] for r in convert_records(records, frame, source, per_clip)}


def _check(frame: str) -> None:
    if frame not in BODY_FRAMES:
        raise ValueError(f"data.frame must be one of {BODY_FRAMES}, got {frame!r}")


# ============================================================================ the range table ===
CHANNELS = ("joint x", "joint y", "joint z", "bone x", "bone y", "bone z")


def feature_ranges(clips: Sequence[np.ndarray], frame: str) -> np.ndarray:
    """``[6, 3]``: per channel of the encoder's features (root-first-frame joints, bones) of the
    clips in ``frame``, the 1st percentile, the 99th percentile and the standard deviation."""
    from .features import compute_features

    if frame == "canonical":
        axes = axes_of(clips)
        clips = [to_canonical(c, axes) for c in clips]
    values = np.concatenate([compute_features(c).reshape(6, -1) for c in clips], axis=1)  # (6, sum T*V)
    return np.stack([np.percentile(values, 1, axis=1), np.percentile(values, 99, axis=1),
                     values.std(axis=1)], axis=1)


def read_clips(path: str, limit: int) -> list[np.ndarray]:
    """The clips of a dataset pickle (the first ``limit``; 0: all), a motion ``.npy`` or a HybrIK
    result (its own axes, as stored)."""
    from .records import DataError, read_pickle, validate_records

    if path.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy motion file ({exc})") from None
        record = {"video_name": path, "coordinates": array, "labels": []}
        return [validate_records([record], path, need_labels=False)[0]["coordinates"]]
    raw = read_pickle(path)
    if hybrik.is_hybrik_result(raw):
        return [hybrik.joints_of_result(raw, path)]
    records = validate_records(raw, path, need_labels=False)
    return [r["coordinates"] for r in (records[:limit] if limit else records)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dataloaders.body_frame", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m dataloaders.body_frame ../shared/data/BX/BX_test.pkl "
                                       "../shared/data/HumanML3D-sample/new_joints/012314.npy")
    p.add_argument("files", nargs="+", help="dataset pickles, motion .npy files or HybrIK results")
    p.add_argument("--clips", type=int, default=0, help="read only the first N clips of a pickle (0: all)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from .records import DataError

    try:
        clips = {path: read_clips(path, args.clips) for path in args.files}
    except (DataError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    names = list(clips)
    print("Feature ranges (1st .. 99th percentile, std) of the encoder's input channels")
    for path in names:
        print(f"- {path}: {len(clips[path])} clip(s) stored in {AXES[axes_of(clips[path])]}")
    for frame in ("stored", "canonical"):
        ranges = {path: feature_ranges(clips[path], frame) for path in names}
        print(f"\n{frame} frame\n")
        print("| channel | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for c, channel in enumerate(CHANNELS):
            cells = [f"{r[c, 0]:+.2f} .. {r[c, 1]:+.2f} ({r[c, 2]:.2f})" for r in (ranges[p] for p in names)]
            print(f"| {channel} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
