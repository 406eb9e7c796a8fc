"""Read a pose estimator's output: HybrIK's saved video result as a clip of this project.

    python -m dataloaders.hybrik res_dance/res.pk --out dance.npy
    python -m dataloaders.hybrik res_dance/res.pk --out dance.pkl --motion_type Jab --frame hybrik

**What HybrIK writes.** ``scripts/demo_video.py --save-pk`` (and ``demo_video_x.py`` for HybrIK-X)
of https://github.com/Jeff-sjtu/HybrIK pickles ``<out-dir>/res.pk``: one ``dict`` of per-frame
arrays stacked over the frames in which a person was detected (frames without one are skipped;
``img_path`` says which were kept). The 3D joints are

* ``pred_xyz_24_struct`` ``[T, 24, 3]``: the joints of the SMPL body HybrIK fits (bone lengths
  fixed by the body shape);
* ``pred_xyz_29`` ``[T, 29, 3]``: the network's own joints (SMPL's 24, then the head top,
  middle fingers and big toes; HybrIK-X's may hold more, its first 22 being the same body joints);
* ``pred_xyz_17``: Human3.6M's 17 joints (not SMPL's; not used here);

all root-relative (the pelvis at the origin in every frame), in camera axes (x right, y down,
z away from the camera) and in units of HybrIK's ``depth_factor``, the depth of its 3D box:
``BBOX_3D_SHAPE[2]`` = 2200 mm in its released configs, so 1.0 = 2.2 m. Also stored: ``pred_uvd``,
``pred_scores``, ``pred_camera``, ``pred_betas``, ``pred_thetas``, ``pred_phi``, ``pred_cam_root``,
``transl`` (metres), ``transl_camsys``, ``bbox``, ``height``, ``width``, ``img_path``.

**Joints kept.** The first 22 joints of either array are SMPL's body joints in SMPL's order, which
is the project's SMPL-22 order (:mod:`dataloaders.skeleton`; HybrIK names joint 15 ``jaw``, the
joint HumanML3D and this project call ``head``). ``pred_xyz_24_struct`` is read by default, as the
released boxing (BX) data appear to be made of it: their bone lengths vary by under 1% over a
clip, as a fitted body's do; ``joints="pred_xyz_29"`` reads the network's joints instead.

**Axes and units** (``frame``):

* ``"project"`` (default): metres, y up. HybrIK's numbers are multiplied by ``depth_factor``
  (2.2) and turned by 180 degrees about the camera's x axis, ``(x, y, z) -> (x, -y, -z)``: a
  rotation, not a mirror. A person facing the camera then faces +z with their left side at +x
  and their head at +y: the axes of the synthetic data and of HumanML3D's ``new_joints`` (whose
  clips start facing +z).
* ``"hybrik"``: HybrIK's numbers as they are, which is how the released BX and FS pickles store
  their clips (root at the origin in every frame, head at negative y, a thigh about 0.18 units,
  i.e. 0.40 m). A run reads every clip into the canonical body frame (``data.frame``,
  :mod:`dataloaders.body_frame`) whichever of the two a file is in; only runs on clips as stored
  (``data.frame: stored``, those made before the key) need the frame of their data, which
  :func:`frame_of` tells and ``caption.py`` and ``demo.py`` pick by.

The root stays at the origin in every frame (HybrIK's camera translation is left out, as in BX).

The file is read with the restricted unpickler (:mod:`dataloaders.safe_pickle`): a file that
would import anything but containers, numbers, strings, numpy arrays and tensors is refused
before any of it runs. A file with another layout is a :class:`DataError` of one line that names
the missing key.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .records import DataError, DataFileNotFound, read_pickle, validate_records
from .safe_pickle import UnsafePickleError
from .skeleton import NUM_JOINTS, SMPL22_JOINT_NAMES

__all__ = ["FRAMES", "JOINT_KEYS", "DEPTH_FACTOR", "HybrikResult", "is_hybrik_result", "joints_of_result",
           "to_frame", "read_hybrik", "record_of_result", "clip_name", "frame_of", "main"]

FRAMES = ("project", "hybrik")
JOINT_KEYS = ("pred_xyz_24_struct", "pred_xyz_29")  # the default first
DEPTH_FACTOR = 2.2  # metres per HybrIK unit: BBOX_3D_SHAPE[2] = 2200 mm in its released configs
RESULT_NAME = "res"  # HybrIK's demos write <out-dir>/res.pk
HEAD, L_ANKLE, R_ANKLE = (SMPL22_JOINT_NAMES.index(n) for n in ("head", "left_ankle", "right_ankle"))

HybrikResult = Mapping[str, Any]


def is_hybrik_result(obj: Any) -> bool:
    """Whether an unpickled object has HybrIK's layout (a dict of per-frame arrays), as opposed to
    a project dataset (a list of record dicts)."""
    return isinstance(obj, dict)


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy()
    return value if isinstance(value, np.ndarray) else None


def joints_of_result(result: HybrikResult, source: str, joints: str = "auto") -> np.ndarray:
    """HybrIK's first 22 joints, ``[T, 22, 3]`` float32, in HybrIK's own units and axes.

    ``joints``: ``"auto"`` (``pred_xyz_24_struct``, else ``pred_xyz_29``) or one of
    :data:`JOINT_KEYS`. A missing key or an array of the wrong shape is a :class:`DataError`
    naming ``source`` and the key.
    """
    if joints not in ("auto", *JOINT_KEYS):
        raise ValueError(f"joints must be 'auto' or one of {JOINT_KEYS}, got {joints!r}")
    if not isinstance(result, dict):
        raise DataError(f"{source}: not a HybrIK result: expected a dict of per-frame arrays "
                        f"(HybrIK's res.pk), found {type(result).__name__}")
    wanted = JOINT_KEYS if joints == "auto" else (joints,)
    key = next((k for k in wanted if k in result), None)
    if key is None:
        held = ", ".join(sorted(map(str, result))[:12]) or "none"
        alternative = f" (nor {wanted[1]!r})" if len(wanted) > 1 else ""
        raise DataError(f"{source}: not a HybrIK result: missing key {wanted[0]!r}{alternative}; "
                        f"the file holds keys: {held}")
    array = _as_array(result[key])
    expected = f"a numeric array [T, J, 3] (or [T, 3 J]) with J >= {NUM_JOINTS}, T >= 2, finite values"
    if array is None or array.dtype.kind not in "fiu":
        raise DataError(f"{source}: key {key!r}: expected {expected}, found {type(result[key]).__name__}"
                        f"{'' if array is None else ' of dtype ' + str(array.dtype)}")
    if array.ndim == 2 and array.shape[1] % 3 == 0:
        array = array.reshape(array.shape[0], -1, 3)  # (T, 3 J) -> (T, J, 3)
    if not (array.ndim == 3 and array.shape[1] >= NUM_JOINTS and array.shape[2] == 3):
        raise DataError(f"{source}: key {key!r}: expected {expected}, found shape {tuple(array.shape)}")
    if array.shape[0] < 2:
        raise DataError(f"{source}: key {key!r}: expected {expected}, found {array.shape[0]} frame(s)")
    body = np.ascontiguousarray(array[:, :NUM_JOINTS], dtype=np.float32)  # (T, 22, 3)
    if not np.isfinite(body).all():
        frame, joint, _ = np.argwhere(~np.isfinite(body))[0]
        raise DataError(f"{source}: key {key!r}: a non-finite value at frame {frame}, joint {joint}")
    return body


def to_frame(joints: np.ndarray, frame: str = "project", depth_factor: float = DEPTH_FACTOR) -> np.ndarray:
    """HybrIK joints ``[..., 3]`` (camera axes, units of ``depth_factor`` metres) in ``frame``."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    joints = np.asarray(joints, dtype=np.float32)
    if frame == "hybrik":
        return joints.copy()
    turn = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # 180 degrees about x: y down -> up
    return (joints * np.float32(depth_factor)) * turn


def read_hybrik(path: str | Path, frame: str = "project", joints: str = "auto",
                depth_factor: float = DEPTH_FACTOR) -> np.ndarray:
    """A HybrIK result file -> float32 ``[T, 22, 3]`` in ``frame`` (see the module docstring)."""
    path = Path(path)
    return to_frame(joints_of_result(read_pickle(path), str(path), joints), frame, depth_factor)


def clip_name(path: str | Path) -> str:
    """A clip's name for a result file: its folder's name for HybrIK's ``res.pk``, else its stem."""
    path = Path(path)
    return path.parent.name if path.stem == RESULT_NAME and path.parent.name else path.stem


def record_of_result(result: HybrikResult, source: str | Path, frame: str = "project", joints: str = "auto",
                     depth_factor: float = DEPTH_FACTOR, video_name: str | None = None,
                     motion_type: str | None = None, labels: Sequence[str] = ()) -> dict:
    """A validated project record (``need_labels=False``) of an unpickled HybrIK result."""
    coords = to_frame(joints_of_result(result, str(source), joints), frame, depth_factor)
    record = {"video_name": video_name or clip_name(source), "coordinates": coords, "labels": list(labels),
              "motion_type": motion_type, "original_seq_len": len(coords)}
    return validate_records([record], str(source), need_labels=False)[0]


def frame_of(coords: np.ndarray) -> str:
    """Which frame a clip ``[T, 22, 3]`` is in: ``"hybrik"`` when its head is below its ankles
    along y (y down, as HybrIK's camera axes and the BX / FS data), else ``"project"``."""
    coords = np.asarray(coords, dtype=np.float64)
    up = (coords[:, HEAD] - coords[:, [L_ANKLE, R_ANKLE]].mean(axis=1)).mean(axis=0)  # (3,)
    return "hybrik" if int(np.argmax(np.abs(up))) == 1 and up[1] < 0 else "project"


# ============================================================================ command line ===
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dataloaders.hybrik", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1].split("The file is read")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", help="HybrIK's saved result (res.pk of demo_video.py --save-pk)")
    p.add_argument("--out", required=True, help="clip.npy ([T, 22, 3] float32) or clip.pkl (a one-record dataset)")
    p.add_argument("--frame", choices=FRAMES, default="project",
                   help="project: metres, y up (default); hybrik: HybrIK's units and camera axes, as BX / FS")
    p.add_argument("--joints", choices=("auto",) + JOINT_KEYS, default="auto",
                   help="which 3D joints to read (auto: pred_xyz_24_struct, else pred_xyz_29)")
    p.add_argument("--depth-factor", "--depth_factor", dest="depth_factor", type=float, default=DEPTH_FACTOR,
                   help="metres per HybrIK unit: its config's BBOX_3D_SHAPE[2] / 1000 (default 2.2)")
    p.add_argument("--video_name", help="the record's video_name in a .pkl (default: the result's folder name)")
    p.add_argument("--motion_type", help="the record's motion_type in a .pkl (selects its standard)")
    p.add_argument("--label", action="append", default=[], help="a reference text of the .pkl record (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    return p.parse_args(argv)


def write_clip(record: dict, out: Path) -> Path:
    """Write a record's coordinates (``.npy``) or the one-record dataset (``.pkl``), atomically."""
    from core.io import atomic_write

    if out.suffix.lower() == ".npy":
        return atomic_write(out, lambda f: np.save(f, record["coordinates"]))
    flat = dict(record, coordinates=record["coordinates"].reshape(len(record["coordinates"]), -1))  # (T, 66)
    return atomic_write(out, lambda f: pickle.dump([flat], f, protocol=pickle.HIGHEST_PROTOCOL))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix.lower() not in (".npy", ".pkl"):
            raise DataError(f"{out}: --out must end in .npy or .pkl")
        if out.exists() and not args.overwrite:
            raise DataError(f"{out}: exists; pass --overwrite to replace it")
        if not Path(args.result).is_file():
            raise DataFileNotFound(f"{args.result}: HybrIK result file not found")
        record = record_of_result(read_pickle(args.result), args.result, args.frame, args.joints,
                                  args.depth_factor, args.video_name, args.motion_type, args.label)
        write_clip(record, out)
    except (DataError, UnsafePickleError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    coords = record["coordinates"]
    unit = "metres, y up" if args.frame == "project" else f"HybrIK units ({args.depth_factor} m), y down"
    print(f"{out}: {record['video_name']!r}, {len(coords)} frames x {coords.shape[1]} joints ({unit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
