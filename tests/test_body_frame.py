"""The canonical body frame (dataloaders/body_frame.py): every source read into metres, y up, feet
on the floor, the first frame's root at x = z = 0 and facing +z; what a run records and how its
inputs are converted."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from configs import schema
from dataloaders import body_frame as bf
from dataloaders.hybrik import DEPTH_FACTOR
from dataloaders.records import load_records
from dataloaders.skeleton import SMPL22_JOINT_NAMES
from dataloaders.synthetic import generate
from tests.test_humanml3d_vecs import sample_files

REPO_ROOT = Path(__file__).resolve().parents[1]


def turn_y(joints: np.ndarray, degrees: float) -> np.ndarray:
    """Joints turned about +y by ``degrees`` (+z towards +x), written out for the test."""
    a = np.radians(degrees)
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    return np.stack([np.cos(a) * x + np.sin(a) * z, y, -np.sin(a) * x + np.cos(a) * z], axis=-1)


def as_hybrik(joints: np.ndarray) -> np.ndarray:
    """y-up metres -> HybrIK's camera axes and units (y down, z away from the camera, 2.2 m)."""
    return joints * np.array([1.0, -1.0, -1.0]) / DEPTH_FACTOR


def t_pose() -> np.ndarray:
    """A standing body facing +z, its left at +x: hips and shoulders only matter to the facing."""
    joints = np.zeros((2, 22, 3))
    joints[:, :, 1] = 1.0
    for name, x in (("left_hip", 0.1), ("right_hip", -0.1), ("left_shoulder", 0.2), ("right_shoulder", -0.2)):
        joints[:, SMPL22_JOINT_NAMES.index(name), 0] = x
    joints[:, SMPL22_JOINT_NAMES.index("head"), 1] = 1.7
    joints[:, SMPL22_JOINT_NAMES.index("left_ankle"), 1] = 0.1
    joints[:, SMPL22_JOINT_NAMES.index("right_ankle"), 1] = 0.1
    return joints


def test_facing_of_a_hand_made_body():
    pose = t_pose()
    assert bf.facing_degrees(pose) == pytest.approx(0.0, abs=1e-9)
    for degrees in (30.0, 90.0, -135.0):
        assert bf.facing_degrees(turn_y(pose, degrees)) == pytest.approx(degrees, abs=1e-9)
    turned = bf.canonical(turn_y(pose, 90.0) + np.array([2.0, 0.5, -1.0]))
    np.testing.assert_allclose(turned, pose - np.array([0.0, 0.1, 0.0]), atol=1e-6)  # floor: the ankles at y = 0.1


def test_the_released_humanml3d_sample_is_already_canonical():
    joints = np.load(sample_files()[0])  # (170, 22, 3): HumanML3D's processed frame
    canonical = bf.canonical(joints)
    np.testing.assert_allclose(canonical, joints, atol=1e-6)  # measured: 3.0e-7 at most
    assert bf.axes_of([joints]) == "y_up"
    assert bf.facing_degrees(joints) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("degrees", [0.0, 70.0, -160.0])
def test_every_source_comes_back_to_the_same_body(degrees):
    """The sample moved, turned and lifted (y-up metres) or also put in HybrIK's camera axes
    (as BX stores clips) comes back to the released canonical joints."""
    joints = np.load(sample_files()[0]).astype(np.float64)
    moved = turn_y(joints, degrees) + np.array([0.7, 0.3, -2.0])  # (T, V, 3)
    np.testing.assert_allclose(bf.to_canonical(moved, "y_up"), joints, atol=2e-5)
    np.testing.assert_allclose(bf.to_canonical(as_hybrik(moved), "hybrik"), joints, atol=2e-5)
    assert bf.axes_of([as_hybrik(moved)]) == "hybrik" and bf.axes_of([moved]) == "y_up"
    twice = bf.canonical(bf.canonical(moved))
    np.testing.assert_allclose(twice, bf.canonical(moved), atol=1e-6)


def test_synthetic_clips_face_plus_z_with_feet_on_the_floor():
    records = generate(seed=0, n_train_per_kind=2, n_test_per_kind=1, mode="describe")[0]
    assert bf.axes_of([np.asarray(r["coordinates"]).reshape(-1, 22, 3) for r in records]) == "y_up"
    for rec in records:
        raw = np.asarray(rec["coordinates"], dtype=np.float64).reshape(-1, 22, 3)
        out = bf.to_canonical(raw, "y_up")
        assert out[:, :, 1].min() == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(out[0, 0, [0, 2]], 0.0, atol=1e-6)
        assert bf.facing_degrees(out) == pytest.approx(0.0, abs=1e-3)
        # a rigid motion: every distance between two joints of a frame is kept
        np.testing.assert_allclose(np.linalg.norm(out[:, 1] - out[:, 15], axis=-1),
                                   np.linalg.norm(raw[:, 1] - raw[:, 15], axis=-1), atol=1e-5)


def test_bx_clips_are_read_from_hybrik_axes_into_metres(bx_dir):
    records = load_records(bx_dir / "BX_test.pkl")
    assert bf.axes_of([r["coordinates"] for r in records]) == "hybrik"
    converted = bf.convert_records(records, "canonical", "BX_test.pkl")
    for before, after in zip(records, converted):
        c = after["coordinates"]
        assert c[:, :, 1].min() == pytest.approx(0.0, abs=1e-6)
        assert bf.facing_degrees(c) == pytest.approx(0.0, abs=1e-3)
        head_above_ankles = c[:, 15, 1] - c[:, [7, 8], 1].mean(axis=1)  # (T,) metres
        assert (head_above_ankles > 0.8).all()  # a crouching boxer: 1.0 m and more in most frames
        thigh = np.linalg.norm(c[:, 4] - c[:, 1], axis=-1)  # left knee - left hip (T,)
        thigh_stored = np.linalg.norm(before["coordinates"][:, 4] - before["coordinates"][:, 1], axis=-1)
        np.testing.assert_allclose(thigh, thigh_stored * DEPTH_FACTOR, rtol=1e-5)
    assert bf.convert_records(records, "stored", "BX_test.pkl")[0] is records[0]


def test_bx_and_humanml3d_features_have_comparable_ranges(bx_dir):
    """The encoder's channels of BX (canonical) and the HumanML3D sample: bone spreads within a
    factor 1.5 (they are 2.2 times apart in the stored frame); printed by the body frame command."""
    bx = [r["coordinates"] for r in load_records(bx_dir / "BX_test.pkl")]
    hml = [np.load(sample_files()[0])]
    canonical = bf.feature_ranges(bx, "canonical")[3:, 2] / bf.feature_ranges(hml, "canonical")[3:, 2]  # bone stds
    stored = bf.feature_ranges(bx, "stored")[3:, 2] / bf.feature_ranges(hml, "stored")[3:, 2]
    assert ((canonical > 1 / 1.5) & (canonical < 1.5)).all(), canonical  # measured: 0.96, 0.95, 1.25
    assert (stored < 1 / 1.5).all(), stored  # measured: 0.36, 0.43, 0.62
    done = subprocess.run([sys.executable, "-m", "dataloaders.body_frame", str(bx_dir / "BX_test.pkl"),
                           str(sample_files()[0])], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "41 clip(s) stored in HybrIK's camera axes" in done.stdout and "canonical frame" in done.stdout


def test_inputs_of_several_files_are_judged_clip_by_clip():
    pose = np.repeat(t_pose(), 5, axis=0)  # (10, 22, 3)
    records = [{"video_name": "up", "coordinates": pose.astype(np.float32)},
               {"video_name": "cam", "coordinates": as_hybrik(turn_y(pose, 40.0)).astype(np.float32)}]
    out = bf.convert_records(records, "canonical", "inputs", per_clip=True)
    np.testing.assert_allclose(out[0]["coordinates"], out[1]["coordinates"], atol=1e-5)
    with pytest.raises(ValueError, match="data.frame must be one of"):
        bf.convert_records(records, "camera", "inputs")


# ============================================================================ what a run records ===
def test_a_saved_config_without_the_key_reads_as_the_stored_frame(tmp_path):
    from training.run import prepare_run_dir

    cfg = schema.load_config("configs/boxing.yaml")
    assert cfg.data.frame == "canonical"
    old = schema.to_dict(cfg)
    del old["data"]["frame"]  # a config written before the key existed
    assert schema.from_dict(old).data.frame == "stored"
    assert schema.from_dict(schema.to_dict(cfg)).data.frame == "canonical"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(SystemExit, match="data.frame: 'stored' -> 'canonical'"):  # resuming would change the inputs
        prepare_run_dir(run_dir, Path("configs/boxing.yaml"), schema.to_dict(cfg), defaults=schema.saved_defaults())
    stored = schema.to_dict(schema.load_config("configs/boxing.yaml", ["data.frame=stored"]))
    prepare_run_dir(run_dir, Path("configs/boxing.yaml"), stored, defaults=schema.saved_defaults())


def test_inference_puts_inputs_in_the_runs_frame():
    """A run in the canonical frame gets the same features from a clip in HybrIK's axes, the same
    clip turned in y-up metres and the clip canonical; a run on stored clips gets them as given."""
    from inference.inputs import build_dataset

    joints = np.load(sample_files()[0])[:60]
    forms = {"canonical": joints, "turned": turn_y(joints, 120.0) + np.array([1.0, 0.2, 0.0]),
             "camera": as_hybrik(turn_y(joints, -50.0))}
    records = [{"video_name": k, "coordinates": v.astype(np.float32), "labels": []} for k, v in forms.items()]
    model = SimpleNamespace(reference="none")
    for frame in ("canonical", "stored"):
        cfg = SimpleNamespace(seed=0, data=SimpleNamespace(frame=frame, segment="none", normalise="root_first_frame"),
                              model=SimpleNamespace(encoder=SimpleNamespace(temporal_kernel=9)))
        dataset = build_dataset(model, cfg, records, None, segment="none")
        features = [np.asarray(dataset[i]["features"]) for i in range(3)]  # (C, T, V) each
        same = [np.allclose(features[0], f, atol=1e-4) for f in features[1:]]
        assert same == ([True, True] if frame == "canonical" else [False, False])
