"""HumanML3D's 263-dim representation (dataloaders/humanml3d_vecs.py) against the released sample.

The sample is motion 012314 of the HumanML3D release: ``new_joints/012314.npy`` [170, 22, 3] and
``new_joint_vecs/012314.npy`` [170, 263] (../shared/data/HumanML3D-sample, or the folder named by
MOTION2TEXT_HUMANML3D_SAMPLE; the sample's tests skip when it is absent). HumanML3D computed the
vectors from 171 processed frames and then made ``new_joints`` *from the vectors*, so the joints
hold frames 0..169 and lack frame 170, which the last vector row (169) steps to.

Tolerances (absolute; measured value in brackets, numpy 2 / scipy 1.17, float64 here against
HumanML3D's float32 torch arithmetic):

* joints from the released vectors: 1e-6 m on every frame [2.4e-7]; frame 0 exactly.
* features from the released joints, group by group, rows 0..89 (``HEAD``: those whose smoothing
  window, 4 sigma = 80 frames, does not reach the missing frame 170):

  ======================  ==============  ==============  ==============================
  group                   rows 0..89      rows 90..168    frame 170 restored, rows 0..169
  ======================  ==============  ==============  ==============================
  root_angular_velocity   1e-6 [1.3e-7]   1e-3 [3.0e-4]   1e-6 [1.3e-7]
  root_linear_velocity    1e-7 [3.4e-8]   5e-4 [1.2e-4]   1e-7 [4.1e-8]
  root_height             exact           exact           exact
  positions               1e-6 [2.1e-7]   2e-2 [6.8e-3]   1e-6 [2.1e-7]
  rotations               2e-5 [7.7e-6]   3e-2 [1.3e-2]   2e-5 [7.7e-6]
  velocities              1e-6 [3.4e-7]   1e-3 [4.0e-4]   1e-6 [3.4e-7]
  foot_contacts           exact           exact           exact
  ======================  ==============  ==============  ==============================

  Rows 90..168 differ only because the smoothing of the forward direction sees frame 169 repeated
  where HumanML3D saw frame 170: restoring frame 170 from the released last row (frame 169 plus
  its velocities turned back by the root rotation) brings every row, 169 included, to the tight
  tolerances. Row 169 cannot be computed from ``new_joints`` alone.
* The rotations (6D) match only to 2e-5, not to float32 rounding like the other groups: HumanML3D
  found each bone's arc in float32 and chained the products, so the rounding grows towards the
  hands (largest at the right wrist, a swing of about 150 degrees there). What can be checked
  exactly is checked: the released rotations, chained by forward kinematics with the sample's
  constant bone lengths, give back the released joints to 5e-6 m [1.5e-6].
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dataloaders import humanml3d_vecs as hv
from dataloaders.synthetic import generate

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("MOTION2TEXT_HUMANML3D_SAMPLE",
                                 REPO_ROOT.parent / "shared" / "data" / "HumanML3D-sample"))
SAMPLE_ID = "012314"
HEAD = slice(0, 90)  # rows whose 80-frame smoothing window ends before the missing frame 170
TAIL = slice(90, 169)  # the other rows computable from the 170 released frames

# group -> (tolerance on HEAD rows and with frame 170 restored, tolerance on TAIL rows)
TOLERANCE = {
    "root_angular_velocity": (1e-6, 1e-3),
    "root_linear_velocity": (1e-7, 5e-4),
    "root_height": (0.0, 0.0),
    "positions": (1e-6, 2e-2),
    "rotations": (2e-5, 3e-2),
    "velocities": (1e-6, 1e-3),
    "foot_contacts": (0.0, 0.0),
}


def sample_files(root: Path = SAMPLE_DIR) -> tuple[Path, Path]:
    """The released joints and vectors of the sample motion; skips the test when absent."""
    joints, vecs = (root / "new_joints" / f"{SAMPLE_ID}.npy",
                    root / "new_joint_vecs" / f"{SAMPLE_ID}.npy")
    if not (joints.is_file() and vecs.is_file()):
        pytest.skip(f"HumanML3D sample not found at {root} (set MOTION2TEXT_HUMANML3D_SAMPLE)")
    return joints, vecs


@pytest.fixture(scope="module")
def released() -> tuple[np.ndarray, np.ndarray]:
    """(new_joints [170, 22, 3], new_joint_vecs [170, 263]) of the sample, float32 as released."""
    joints, vecs = sample_files()
    return np.load(joints), np.load(vecs)


@pytest.fixture(scope="module")
def computed(released) -> np.ndarray:
    """Features from the 170 released joints: [169, 263]."""
    return hv.features_from_joints(released[0])


def restored_last_frame(joints: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Frame 170 of the processed motion: frame 169 plus the last row's joint velocities turned
    back from frame 169's facing frame. [170, 22, 3], [170, 263] -> [171, 22, 3]."""
    rotation, _ = hv.recover_root(vecs)  # (170, 4)
    step = vecs[-1, hv.GROUPS["velocities"]].reshape(22, 3).astype(np.float64)  # (22, 3)
    last = joints[-1] + hv.qrot(hv.qinv(rotation[-1]), step)  # (22, 3)
    return np.concatenate([joints, last[None].astype(joints.dtype)])


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ---------------------------------------------------------------------------------------------
# The released sample.

def test_sample_shapes(released):
    joints, vecs = released
    assert joints.shape == (170, 22, 3) and vecs.shape == (170, hv.FEATURE_DIM)
    assert sum(s.stop - s.start for s in hv.GROUPS.values()) == hv.FEATURE_DIM
    assert hv.GROUPS["foot_contacts"].stop == hv.FEATURE_DIM


def test_joints_from_released_vectors_equal_released_joints(released):
    joints, vecs = released
    recovered = hv.joints_from_features(vecs)  # (170, 22, 3)
    assert recovered.shape == joints.shape
    assert _error(recovered, joints) <= 1e-6  # float32 rounding [2.4e-7]
    # frame 0: no rotation and the root at x = z = 0, so the positions group is the joints as they
    # are; it comes back bit for bit
    np.testing.assert_array_equal(recovered[0], joints[0])
    np.testing.assert_array_equal(recovered[0, 0], [0.0, vecs[0, 3], 0.0])


@pytest.mark.parametrize("group", list(TOLERANCE))
def test_features_from_released_joints_group_by_group(released, computed, group):
    _, vecs = released
    head, tail = TOLERANCE[group]
    span = hv.GROUPS[group]
    assert computed.shape == (169, hv.FEATURE_DIM)
    assert _error(computed[HEAD, span], vecs[HEAD, span]) <= head
    # the tail rows: the smoothing window reaches frame 170, which new_joints lacks
    assert _error(computed[TAIL, span], vecs[TAIL, span]) <= tail


@pytest.mark.parametrize("group", list(TOLERANCE))
def test_features_with_the_last_frame_restored_match_every_row(released, group):
    joints, vecs = released
    full = restored_last_frame(joints, vecs)  # (171, 22, 3)
    features = hv.features_from_joints(full)  # (170, 263)
    span = hv.GROUPS[group]
    assert _error(features[:, span], vecs[:, span]) <= TOLERANCE[group][0]


def test_the_tail_differs_only_through_the_missing_frame(released, computed):
    """Without frame 170 the tail is off by more than float32 rounding (so TAIL's looser bounds
    are needed and measure something), and every difference starts after row 89."""
    _, vecs = released
    rows = np.abs(computed.astype(np.float64) - vecs[:169]).max(axis=1)  # (169,)
    assert rows[HEAD].max() <= 2e-5 and rows[TAIL].max() > 1e-3
    assert rows[-1] == rows.max()  # largest at the end, nearest the missing frame


def test_released_rotations_reproduce_the_joints_by_forward_kinematics(released):
    joints, vecs = released
    lengths = hv.bone_lengths(joints.astype(np.float64))  # (170, 22)
    assert np.ptp(lengths, axis=0).max() <= 5e-6  # one skeleton for the whole motion [2.0e-6]
    rotation, root = hv.recover_root(vecs)  # (170, 4), (170, 3)
    local = hv.cont6d_to_matrix(vecs[:, hv.GROUPS["rotations"]].reshape(-1, 21, 6)
                                .astype(np.float64))  # (170, 21, 3, 3)
    rebuilt = hv.forward_kinematics(local, rotation, root, lengths[0])  # (170, 22, 3)
    assert _error(rebuilt, joints) <= 5e-6  # [1.5e-6]


def test_the_conventions_are_needed(released, monkeypatch):
    """The across vector of HumanML3D's inverse kinematics (left hip - right hip + right shoulder -
    left shoulder) and the smoothing are what the release used: the consistent across vector
    (right - left for both pairs), or no smoothing, misses the root angular velocity by far more
    than the tolerance."""
    joints, vecs = released
    span = hv.GROUPS["root_angular_velocity"]

    unsmoothed = hv.features_from_joints(joints, smooth=False)
    assert _error(unsmoothed[HEAD, span], vecs[HEAD, span]) > 1e-2

    def consistent(j, smooth=True, sigma=hv.FORWARD_SIGMA):
        across = (j[:, 2] - j[:, 1]) + (j[:, 17] - j[:, 16])  # right - left, both pairs
        forward = np.cross([0.0, 1.0, 0.0], across)
        if smooth:
            from scipy.ndimage import gaussian_filter1d
            forward = gaussian_filter1d(forward, sigma, axis=0, mode="nearest")
        return forward / np.linalg.norm(forward, axis=-1, keepdims=True)

    monkeypatch.setattr(hv, "forward_directions", consistent)
    other = hv.features_from_joints(joints)
    assert _error(other[HEAD, span], vecs[HEAD, span]) > 1e-2


def test_foot_contacts_and_first_row(released, computed):
    _, vecs = released
    contacts = computed[:, hv.GROUPS["foot_contacts"]]
    assert set(np.unique(contacts)) <= {0.0, 1.0} and 0 < contacts.mean() < 1
    # row 0's angular velocity is the jump from the forced identity of frame 0 to the smoothed
    # direction of frame 1 (HumanML3D issue #74): far larger than the rows after it
    angular = vecs[:, 0]
    assert abs(angular[0]) > 5 * np.abs(angular[1:11]).max()  # 0.106 against at most 0.005


# ---------------------------------------------------------------------------------------------
# Synthetic motions (no sample needed).

@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    """The project's synthetic clips (y up, metres, facing +z): name -> joints [T, 22, 3]."""
    train, _, _ = generate(0, 3, 0, "describe", kinds=("walk", "turn", "jump"))
    return {r["video_name"]: r["coordinates"].reshape(-1, 22, 3).astype(np.float64) for r in train}


def _shifted_to_origin(joints: np.ndarray) -> np.ndarray:
    """What joints_from_features gives back: the frames but the last, the root's first x/z at 0."""
    return joints[:-1] - joints[0, 0] * np.array([1.0, 0.0, 1.0])


def test_round_trip_on_synthetic_joints(synthetic):
    for name, joints in synthetic.items():
        features = hv.features_from_joints(joints, fix_turn_sign=True)  # (T-1, 263)
        assert features.shape == (len(joints) - 1, hv.FEATURE_DIM) and features.dtype == np.float32
        back = hv.joints_from_features(features)  # (T-1, 22, 3)
        assert _error(back, _shifted_to_origin(joints)) <= 2e-7, name  # float32 [1.2e-7]


def test_turning_through_minus_z_needs_the_sign_fix(synthetic):
    """As released, a frame where the facing direction crosses -z gets an angular velocity of the
    wrong sign (HumanML3D issue #156) and the recovered body turns the wrong way from there on;
    clips that never cross it come back either way."""
    joints = synthetic["train_turn_000"]  # turns around: crosses -z once
    released_way = hv.joints_from_features(hv.features_from_joints(joints))
    assert _error(released_way, _shifted_to_origin(joints)) > 1e-2
    fixed = hv.features_from_joints(joints, fix_turn_sign=True)
    as_released = hv.features_from_joints(joints)
    differs = np.flatnonzero(fixed[:, 0] != as_released[:, 0])
    assert len(differs) == 1 and fixed[differs[0], 0] == pytest.approx(-as_released[differs[0], 0])
    walk = synthetic["train_walk_000"]
    np.testing.assert_array_equal(hv.features_from_joints(walk),
                                  hv.features_from_joints(walk, fix_turn_sign=True))


def test_rotations_reproduce_synthetic_joints(synthetic):
    joints = synthetic["train_walk_000"]
    features = hv.features_from_joints(joints).astype(np.float64)  # (T-1, 263)
    rotation, root = hv.recover_root(features)
    local = hv.cont6d_to_matrix(features[:, hv.GROUPS["rotations"]].reshape(-1, 21, 6))
    lengths = hv.bone_lengths(joints[:-1])  # (T-1, 22): the synthetic clips carry noise
    rebuilt = hv.forward_kinematics(local, rotation, root, lengths)
    assert _error(rebuilt, _shifted_to_origin(joints)) <= 1e-5  # 6D stored as float32


def test_features_of_a_still_body():
    joints = np.repeat(next(iter(generate(0, 1, 0, "describe", kinds=("squat",))[0]))
                       ["coordinates"].reshape(-1, 22, 3)[:1], 30, axis=0)  # (30, 22, 3)
    features = hv.split_features(hv.features_from_joints(joints))
    for group in ("root_linear_velocity", "velocities"):
        assert np.abs(features[group]).max() == 0.0, group
    # no turning, but row 0 turns from the identity forced on frame 0 to the body's facing: half
    # the angle between its forward direction and +z
    forward = hv.forward_directions(joints)[0]
    angular = features["root_angular_velocity"][:, 0]
    assert abs(angular[0]) == pytest.approx(np.arccos(forward[2]) / 2, abs=1e-6)
    assert np.abs(angular[1:]).max() == 0.0
    assert (features["foot_contacts"] == 1.0).all()
    np.testing.assert_allclose(features["root_height"][:, 0], joints[0, 0, 1], rtol=1e-6)


def test_mirror_joints_is_the_release_mirror():
    joints = np.random.default_rng(0).normal(size=(5, 22, 3))
    mirrored = hv.mirror_joints(joints)
    np.testing.assert_array_equal(mirrored[:, 1], joints[:, 2] * [-1, 1, 1])  # left hip <- right
    np.testing.assert_array_equal(mirrored[:, 20], joints[:, 21] * [-1, 1, 1])  # wrists
    np.testing.assert_array_equal(mirrored[:, 15], joints[:, 15] * [-1, 1, 1])  # head stays
    np.testing.assert_array_equal(hv.mirror_joints(mirrored), joints)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected joints"):
        hv.features_from_joints(np.zeros((1, 22, 3)))
    with pytest.raises(ValueError, match="expected features"):
        hv.joints_from_features(np.zeros((4, 262)))
