"""Synthetic data: deterministic by seed, valid records, plausible skeletons, exact segments."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from dataloaders import synthetic
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards
from dataloaders.safe_pickle import safe_load
from dataloaders.skeleton import SMPL22_PARENTS

PARENTS = np.array(SMPL22_PARENTS[1:])
CHILDREN = np.arange(1, 22)


@functools.lru_cache(maxsize=None)
def data(mode: str, seed: int = 0):
    return synthetic.generate(seed, 4, 1, mode)  # 4 per kind: good + every fault


def bone_lengths(coords: np.ndarray) -> np.ndarray:
    """(T, 21) bone lengths of a [T, 66] or [T, 22, 3] clip."""
    xyz = coords.reshape(len(coords), 22, 3)
    return np.linalg.norm(xyz[:, CHILDREN] - xyz[:, PARENTS], axis=-1)


def same(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.keys() != y.keys():
            return False
        for k in x:
            if isinstance(x[k], np.ndarray):
                if not np.array_equal(x[k], y[k]):
                    return False
            elif x[k] != y[k]:
                return False
    return True


@pytest.mark.parametrize("mode", synthetic.MODES)
def test_deterministic_for_a_seed_and_different_across_seeds(mode):
    first = synthetic.generate(5, 2, 1, mode)
    second = synthetic.generate(5, 2, 1, mode)
    other = synthetic.generate(6, 2, 1, mode)
    assert all(same(a, b) for a, b in zip(first, second))
    assert not same(first[0], other[0]) and not same(first[1], other[1])
    for a, b in zip(first[0], other[0]):
        assert not np.array_equal(a["coordinates"], b["coordinates"])
    # more clips per kind leave the existing clips unchanged
    bigger = synthetic.generate(5, 3, 1, mode)
    assert same([r for r in bigger[0] if not r["video_name"].split("_")[-1 if mode == "describe" else -2] == "002"],
                first[0])


@pytest.mark.parametrize("mode", synthetic.MODES)
def test_written_files_pass_validation(tmp_path, mode):
    synthetic.main(["--out", str(tmp_path), "--seed", "0", "--mode", mode,
                    "--train-per-kind", "3", "--test-per-kind", "1"])
    standards = load_standards(tmp_path / "standard.pkl")
    assert sorted(standards) == sorted(synthetic.KINDS) and len(synthetic.KINDS) >= 8
    train = load_records(tmp_path / "train.pkl", standards=standards)
    test = load_records(tmp_path / "test.pkl", standards=standards)
    assert len(train) == 3 * len(synthetic.KINDS) and len(test) == len(synthetic.KINDS)
    raw = safe_load(tmp_path / "train.pkl")  # the raw file, as written
    assert raw[0]["coordinates"].dtype == np.float32 and raw[0]["coordinates"].shape[1] == 66
    for rec in train + test:
        assert len(rec["labels"]) >= 3 and len(rec["augmented_labels"]) >= 3
        assert len(set(rec["labels"] + rec["augmented_labels"])) == 6
        assert 30 <= rec["coordinates"].shape[0] <= 90
    if mode == "coach":  # every segment kind crops cleanly, with the standard
        for segment in ("aligned", "gt", "error"):
            ds = MotionTextDataset(train, standards, segment=segment, reference=True, train=False)
            assert all(ds[i]["standard"].shape == ds[i]["features"].shape for i in range(len(ds)))


@pytest.mark.parametrize("mode", synthetic.MODES)
def test_bone_lengths_constant_within_noise_and_plausible(mode):
    train, test, standards = data(mode)
    for rec in standards:
        assert bone_lengths(rec["coordinates"]).std(axis=0).max() < 1e-5  # noise-free
    for rec in train + test:
        lengths = bone_lengths(rec["coordinates"])
        sigma = rec["noise_std"]
        # a bone is the difference of two noisy joints: its length jitters by about sigma * sqrt(2)
        assert lengths.std(axis=0).max() < 4 * sigma * np.sqrt(2) + 1e-5, rec["video_name"]
        mean = lengths.mean(axis=0) / rec["body_scale"]
        thigh, shin = mean[3], mean[6]  # left knee - hip, left ankle - knee
        assert 0.3 < thigh < 0.45 and 0.3 < shin < 0.45
        xyz = rec["coordinates"].reshape(-1, 22, 3)
        height = xyz[0, 15, 1] - xyz[0, [7, 8, 10, 11], 1].min()
        assert 1.2 < height / rec["body_scale"] < 1.8  # head above the feet at rest (y up)
        assert xyz[:, [10, 11], 1].min() > -0.05  # feet not below the floor


def test_captions_follow_the_templates():
    train, _, _ = data("describe")
    by_kind = {r["motion_type"]: r for r in train}
    assert by_kind["raise_left_arm"]["labels"][0].startswith("a person raises their left arm")
    assert "squat" in by_kind["squat"]["labels"][0] and "jab" in by_kind["jab"]["labels"][0]
    for rec in train:
        canonical = rec["labels"][0]
        assert canonical.startswith("a person ")
        adverbs = {"fast": "quickly", "slow": "slowly"}
        if rec["speed"] in adverbs:
            assert canonical.endswith(adverbs[rec["speed"]])
        frames = rec["coordinates"].shape[0]
        assert {"fast": frames <= 44, "normal": 50 <= frames <= 64, "slow": frames >= 72}[rec["speed"]]


def test_coach_texts_state_the_fault_and_canonical_label_is_fixed():
    train, _, _ = data("coach")
    canonical: dict[tuple[str, str], set[str]] = {}
    for rec in train:
        canonical.setdefault((rec["motion_type"], rec["fault"]), set()).add(rec["labels"][0])
    assert all(len(v) == 1 for v in canonical.values())  # one exact target per (kind, fault)
    text = {k: next(iter(v)) for k, v in canonical.items()}
    assert text[("jump", "low")] == "The jump is too low."
    assert text[("jab", "short")] == "The punch does not fully extend."
    assert text[("jab", "elbow")] == "The left elbow drops."
    assert text[("turn", "incomplete")] == "The turn is incomplete."
    assert text[("squat", "shallow")] == "The knees do not bend enough."
    assert text[("jab", "good")].startswith("Good jab")
    faults = {f for _, f in canonical}
    assert "good" in faults and len(faults) >= 8


def local_pose(xyz: np.ndarray, facing_deg: float, scale: float) -> np.ndarray:
    """Root-relative joints with the facing undone and the body size divided out: (T, 22, 3)."""
    a = np.radians(-facing_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return ((xyz - xyz[:, :1]) @ rot.T) / scale


def test_coach_segments_are_correct_by_construction():
    train, _, standards = data("coach")
    std = {r["video_name"]: r["coordinates"].reshape(-1, 22, 3) for r in standards}
    last = synthetic.STANDARD_FRAMES - 1
    errors = {"good": [], "fault": []}
    for rec in train:
        n = rec["coordinates"].shape[0]
        phase = rec["phase"]
        assert phase.shape == (n,) and np.all(np.diff(phase) > 0)
        assert rec["aligned_start_frame"] == 0 and rec["aligned_end_frame"] == n
        assert rec["aligned_std_start_frame"] == round(phase[0] * last)
        assert rec["aligned_std_end_frame"] == round(phase[-1] * last) + 1
        inside = np.flatnonzero((phase >= synthetic.MOVE_START) & (phase <= synthetic.MOVE_END))
        assert (rec["gt_start_frame"], rec["gt_end_frame"]) == (inside[0], inside[-1] + 1)
        assert rec["gt_std_start_frame"] / last >= synthetic.MOVE_START - 1e-9
        assert (rec["gt_std_start_frame"] - 1) / last < synthetic.MOVE_START
        # the learner's pose at each frame matches the standard at the same phase (good clips)
        ref = std[rec["motion_type"]]
        pos = phase * last
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, last)
        w = (pos - lo)[:, None, None]
        std_at_phase = ref[lo] * (1 - w) + ref[hi] * w  # (T, 22, 3)
        learner = local_pose(rec["coordinates"].reshape(n, 22, 3), rec["facing_deg"], rec["body_scale"])
        standard = local_pose(std_at_phase, 0.0, 1.0)
        seg = slice(rec["error_start_frame"], rec["error_end_frame"])
        err = np.linalg.norm(learner[seg] - standard[seg], axis=-1).mean()
        errors["good" if rec["fault"] == "good" else "fault"].append(err)
        # outside the movement both rest in the same pose
        rest = np.linalg.norm(learner[: rec["gt_start_frame"]] - standard[: rec["gt_start_frame"]], axis=-1)
        assert rest.size == 0 or rest.mean() < 0.03, rec["video_name"]
    assert max(errors["good"]) < 0.06  # good clips follow the standard (5% amplitude jitter)
    assert np.mean(errors["fault"]) > 2 * np.mean(errors["good"])  # faults are visible
