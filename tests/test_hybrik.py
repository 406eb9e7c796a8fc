"""dataloaders.hybrik: HybrIK's saved video result (res.pk) read as a project clip.

The files are written here in the layout HybrIK's scripts/demo_video.py --save-pk gives them: a
dict of per-frame arrays stacked over the frames, pickled with plain pickle; joints root-relative,
camera axes (x right, y down, z away from the camera), units of 2.2 m.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dataloaders import hybrik
from dataloaders.records import DataError, load_records
from dataloaders.safe_pickle import UnsafePickleError
from dataloaders.skeleton import SMPL22_JOINT_NAMES, SMPL22_PARENTS
from inference import inputs

REPO = Path(hybrik.__file__).resolve().parents[1]
J = {name: i for i, name in enumerate(SMPL22_JOINT_NAMES)}
T = 5

# A person standing upright, facing the camera, arms out to the sides (a T-pose), in metres, in
# the project's frame: y up, the person faces +z (towards the camera), their left side is +x.
PROJECT_POSE_M = {
    "pelvis": (0.0, 0.0, 0.0), "left_hip": (0.09, -0.08, 0.0), "right_hip": (-0.09, -0.08, 0.0),
    "spine1": (0.0, 0.11, -0.01), "left_knee": (0.10, -0.46, 0.01), "right_knee": (-0.10, -0.46, 0.01),
    "spine2": (0.0, 0.24, -0.01), "left_ankle": (0.11, -0.86, -0.03), "right_ankle": (-0.11, -0.86, -0.03),
    "spine3": (0.0, 0.30, 0.0), "left_foot": (0.12, -0.92, 0.09), "right_foot": (-0.12, -0.92, 0.09),
    "neck": (0.0, 0.51, -0.01), "left_collar": (0.07, 0.42, 0.0), "right_collar": (-0.07, 0.42, 0.0),
    "head": (0.0, 0.60, 0.04), "left_shoulder": (0.17, 0.45, -0.01), "right_shoulder": (-0.17, 0.45, -0.01),
    "left_elbow": (0.43, 0.45, -0.02), "right_elbow": (-0.43, 0.45, -0.02),
    "left_wrist": (0.68, 0.45, -0.01), "right_wrist": (-0.68, 0.45, -0.01),
}


def project_pose() -> np.ndarray:
    return np.array([PROJECT_POSE_M[name] for name in SMPL22_JOINT_NAMES], dtype=np.float32)  # (22, 3)


def as_hybrik(pose_m: np.ndarray) -> np.ndarray:
    """The same pose as HybrIK stores it: camera axes (y down, z away from the camera), 2.2 m units."""
    return pose_m * np.array([1.0, -1.0, -1.0], dtype=np.float32) / 2.2


def hybrik_result(frames: int = T, *, drop: tuple[str, ...] = (), struct_offset: float = 0.0) -> dict:
    """A dict in the layout of HybrIK's res.pk. ``pred_xyz_29`` is the pose plus 0.01 (and 7 extra
    joints), so which array was read shows in the values; ``struct_offset`` moves the fitted joints."""
    pose = as_hybrik(project_pose())
    walk = np.linspace(0.0, 0.02, frames, dtype=np.float32)[:, None, None]  # small motion per frame
    struct = np.concatenate([pose, np.full((2, 3), 0.3, np.float32)])[None] + walk + struct_offset  # (T, 24, 3)
    struct[:, 0] = 0.0  # root-relative: the pelvis at the origin in every frame
    xyz29 = np.concatenate([pose + 0.01, np.full((7, 3), -0.4, np.float32)])[None] + walk
    xyz29[:, 0] = 0.0
    result = {
        "pred_uvd": np.zeros((frames, 29, 3), np.float32), "pred_xyz_17": np.zeros((frames, 17, 3), np.float32),
        "pred_xyz_29": xyz29, "pred_xyz_24_struct": struct.astype(np.float32),
        "pred_scores": np.ones((frames, 29), np.float32), "pred_camera": np.ones((frames, 1), np.float32),
        "pred_betas": np.zeros((frames, 10), np.float32), "pred_thetas": np.zeros((frames, 216), np.float32),
        "pred_phi": np.zeros((frames, 23, 2), np.float32), "pred_cam_root": np.zeros((frames, 3), np.float32),
        "transl": np.tile(np.float32([0.1, 0.2, 5.0]), (frames, 1)),
        "transl_camsys": np.tile(np.float32([0.1, 0.2, 9.0]), (frames, 1)),
        "bbox": np.tile(np.float32([10, 20, 200, 400]), (frames, 1)),
        "height": np.full(frames, 480), "width": np.full(frames, 640),
        "img_path": np.array([f"res_dance/raw_images/image-{i:06d}.jpg" for i in range(frames)]),
    }
    for key in drop:
        del result[key]
    return result


def write_result(path: Path, result) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fid:
        pickle.dump(result, fid)  # as HybrIK does: pk.dump(res_db, fid)
    return path


# ------------------------------------------------------------------------- order, axes, units
def test_project_frame_gives_back_the_pose_in_metres_y_up(tmp_path):
    path = write_result(tmp_path / "res_dance" / "res.pk", hybrik_result())
    coords = hybrik.read_hybrik(path)
    assert coords.shape == (T, 22, 3) and coords.dtype == np.float32
    walk = np.linspace(0.0, 0.02, T)[:, None, None] * np.array([1.0, -1.0, -1.0]) * 2.2  # the motion, in metres
    expected = project_pose()[None] + walk
    expected[:, 0] = 0.0
    np.testing.assert_allclose(coords, expected, atol=1e-5)
    first = coords[0]
    # joint order and axes on the known pose: the head is up, the left hand at +x, the feet forward (+z)
    assert first[J["head"], 1] == pytest.approx(0.60, abs=1e-5)
    assert first[J["left_wrist"], 0] == pytest.approx(0.68, abs=1e-5) and first[J["right_wrist"], 0] < -0.6
    assert first[J["left_ankle"], 1] == pytest.approx(-0.86, abs=1e-5)
    assert first[J["left_foot"], 2] > first[J["left_ankle"], 2]
    assert np.allclose(coords[:, 0], 0.0)  # root-relative, as BX
    femur = np.linalg.norm(first[J["left_knee"]] - first[J["left_hip"]])
    assert 0.35 < femur < 0.45  # metres


def test_the_turn_is_a_rotation_not_a_mirror():
    pose = project_pose()
    raw = as_hybrik(pose)
    np.testing.assert_allclose(hybrik.to_frame(raw), pose, atol=1e-6)

    def handedness(p: np.ndarray) -> float:
        """Sign of (left x up) . forward: a mirror flips it, a rotation keeps it."""
        left, up = p[J["left_hip"]] - p[J["right_hip"]], p[J["neck"]] - p[J["pelvis"]]
        return float(np.sign(np.dot(np.cross(left, up), p[J["left_foot"]] - p[J["left_ankle"]])))

    assert handedness(hybrik.to_frame(raw)) == handedness(raw) != 0


def test_hybrik_frame_keeps_hybriks_numbers_and_the_joint_order(tmp_path):
    result = hybrik_result()
    path = write_result(tmp_path / "clip.pk", result)
    coords = hybrik.read_hybrik(path, frame="hybrik")
    np.testing.assert_array_equal(coords, result["pred_xyz_24_struct"][:, :22])
    assert coords[0, J["head"], 1] < 0  # y down, as in BX
    for name, index in (("head", 15), ("left_wrist", 20), ("right_ankle", 8)):
        np.testing.assert_allclose(coords[0, index], as_hybrik(project_pose())[J[name]], atol=1e-6)


def test_the_fitted_joints_are_read_unless_the_networks_are_asked_for(tmp_path):
    result = hybrik_result()
    path = write_result(tmp_path / "res.pk", result)
    np.testing.assert_array_equal(hybrik.read_hybrik(path, "hybrik"), result["pred_xyz_24_struct"][:, :22])
    np.testing.assert_array_equal(hybrik.read_hybrik(path, "hybrik", joints="pred_xyz_29"),
                                  result["pred_xyz_29"][:, :22])
    only29 = write_result(tmp_path / "only29.pk", hybrik_result(drop=("pred_xyz_24_struct",)))
    np.testing.assert_array_equal(hybrik.read_hybrik(only29, "hybrik"), result["pred_xyz_29"][:, :22])
    flat = dict(result, pred_xyz_24_struct=result["pred_xyz_24_struct"].reshape(T, 72))  # [T, 3 J] also read
    np.testing.assert_array_equal(hybrik.read_hybrik(write_result(tmp_path / "flat.pk", flat), "hybrik"),
                                  result["pred_xyz_24_struct"][:, :22])


def test_frame_of_tells_hybriks_axes_from_the_projects():
    pose = project_pose()[None].repeat(3, axis=0)
    assert hybrik.frame_of(pose) == "project"
    assert hybrik.frame_of(as_hybrik(pose)) == "hybrik"


def test_bx_clips_are_in_hybriks_frame(bx_dir):
    std = load_records(bx_dir / "BX_standard.pkl", need_labels=False)[0]["coordinates"]
    assert hybrik.frame_of(std) == "hybrik"


# ------------------------------------------------------------------------------ bad files
def test_another_layout_is_one_line_naming_the_missing_key(tmp_path):
    path = write_result(tmp_path / "res.pk", hybrik_result(drop=("pred_xyz_24_struct", "pred_xyz_29")))
    with pytest.raises(DataError) as info:
        hybrik.read_hybrik(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing key 'pred_xyz_24_struct'" in message and "pred_xyz_29" in message
    with pytest.raises(DataError, match="missing key 'pred_xyz_29'"):
        hybrik.read_hybrik(write_result(tmp_path / "b.pk", hybrik_result(drop=("pred_xyz_29",))),
                           joints="pred_xyz_29")
    bad_shape = dict(hybrik_result(), pred_xyz_24_struct=np.zeros((T, 21, 3), np.float32))
    with pytest.raises(DataError, match=r"'pred_xyz_24_struct'.*shape \(5, 21, 3\)"):
        hybrik.read_hybrik(write_result(tmp_path / "c.pk", bad_shape))
    with pytest.raises(DataError, match="expected a dict"):
        hybrik.read_hybrik(write_result(tmp_path / "d.pk", [1, 2]))


class _RunsCode:
    """Unpickling this would call os.system (it must never get that far)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = write_result(tmp_path / "res.pk", dict(hybrik_result(), pred_camera=_RunsCode(marker)))
    with pytest.raises(UnsafePickleError, match="system"):
        hybrik.read_hybrik(path)
    done = subprocess.run([sys.executable, "-m", "dataloaders.hybrik", str(path), "--out", str(tmp_path / "x.npy")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "refused to unpickle" in done.stderr
    with pytest.raises(UnsafePickleError):
        inputs.records_from_inputs([path])
    assert not marker.exists() and not (tmp_path / "x.npy").exists()


# ------------------------------------------------------------------------------ command line
def test_command_line_writes_npy_and_a_dataset_pickle(tmp_path, capsys):
    path = write_result(tmp_path / "res_jab" / "res.pk", hybrik_result())
    assert hybrik.main([str(path), "--out", str(tmp_path / "jab.npy")]) == 0
    assert "metres, y up" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "jab.npy"), hybrik.read_hybrik(path))
    assert hybrik.main([str(path), "--out", str(tmp_path / "jab.pkl"), "--frame", "hybrik",
                        "--motion_type", "Jab", "--label", "Keep the guard up."]) == 0
    (rec,) = load_records(tmp_path / "jab.pkl")
    assert rec["video_name"] == "res_jab" and rec["motion_type"] == "Jab" and rec["labels"] == ["Keep the guard up."]
    np.testing.assert_array_equal(rec["coordinates"], hybrik.read_hybrik(path, "hybrik"))
    capsys.readouterr()
    assert hybrik.main([str(path), "--out", str(tmp_path / "jab.npy")]) == 2  # never overwrite silently
    assert "--overwrite" in capsys.readouterr().err
    assert hybrik.main([str(path), "--out", str(tmp_path / "jab.npy"), "--overwrite", "--depth-factor", "1"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "jab.npy") * 2.2, hybrik.read_hybrik(path), atol=1e-6)
    bad = write_result(tmp_path / "other" / "res.pk", {"poses": np.zeros((3, 72))})
    assert hybrik.main([str(bad), "--out", str(tmp_path / "other.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing key 'pred_xyz_24_struct'" in err[0] and "poses" in err[0]


# ------------------------------------------------------------------------ through inference
def test_inference_reads_hybrik_results_beside_npy_and_dataset_pickles(tmp_path):
    res = write_result(tmp_path / "res_dance" / "res.pk", hybrik_result())
    as_pkl = write_result(tmp_path / "kick.pkl", hybrik_result())  # a dict in a .pkl is a HybrIK result too
    np.save(tmp_path / "hml.npy", project_pose()[None].repeat(4, axis=0))
    records = inputs.records_from_inputs([res, as_pkl, tmp_path / "hml.npy"], hybrik_frame="project")
    assert [r["video_name"] for r in records] == ["res_dance", "kick", "hml"]
    np.testing.assert_array_equal(records[0]["coordinates"], hybrik.read_hybrik(res))
    frames = []
    records = inputs.records_from_inputs([res], hybrik_frame=lambda: frames.append(1) or "hybrik")
    np.testing.assert_array_equal(records[0]["coordinates"], hybrik.read_hybrik(res, "hybrik"))
    assert frames == [1]
    inputs.records_from_inputs([tmp_path / "hml.npy"], hybrik_frame=lambda: frames.append(1) or "hybrik")
    assert frames == [1]  # only asked when a HybrIK input is met
    standards = inputs.read_standards(res, "Jab")
    assert list(standards) == ["Jab"] and standards["Jab"].shape == (T, 22, 3)
    assert inputs.standard_for_every_clip(res, None) == "res_dance"


def test_data_frame_follows_the_runs_training_data(tmp_path):
    synthetic = SimpleNamespace(data=SimpleNamespace(kind="synthetic", frame="stored"))
    assert inputs.data_frame(synthetic) == "project"
    pose = project_pose()[None].repeat(4, axis=0)
    for frame, coords in (("hybrik", as_hybrik(pose)), ("project", pose)):
        root = tmp_path / frame
        write_result(root / "standard.pkl", [{"video_name": "Jab", "coordinates": coords.reshape(4, 66)}])
        cfg = SimpleNamespace(data=SimpleNamespace(kind="pickle", root=str(root), train="train.pkl", val="",
                                                   test="test.pkl", standard="standard.pkl", frame="stored"))
        assert inputs.data_frame(cfg, tmp_path / "run" / "checkpoints" / "best.pt") == frame
        # a run in the canonical body frame reads a HybrIK result in metres, y up, whatever its data
        canonical = SimpleNamespace(data=SimpleNamespace(**{**vars(cfg.data), "frame": "canonical"}))
        assert inputs.data_frame(canonical, tmp_path / "run" / "checkpoints" / "best.pt") == "project"
    missing = SimpleNamespace(data=SimpleNamespace(kind="pickle", root=str(tmp_path / "absent"), train="t.pkl",
                                                   val="", test="t.pkl", standard="s.pkl", frame="stored"))
    assert inputs.data_frame(missing) == "project"
