"""MotionTextDataset: segment crops, labels modes, reference resampling, cheap items."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataloaders import dataset as dataset_module
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import DataError, validate_records
from dataloaders.skeleton import SMPL22_PARENTS


def naive_features(coords: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Independent reference: loops over frames and joints, (6, T, 22)."""
    n = len(coords)
    out = np.zeros((6, n, 22), np.float32)
    origin = coords[0, 0] if normalise else np.zeros(3)
    for t in range(n):
        for j in range(22):
            out[0:3, t, j] = coords[t, j] - origin
            p = SMPL22_PARENTS[j]
            out[3:6, t, j] = coords[t, j] - coords[t, p] if p >= 0 else 0.0
    return out


def naive_resample(feats: np.ndarray, length: int) -> np.ndarray:
    src = feats.shape[1]
    out = np.zeros((feats.shape[0], length, feats.shape[2]), np.float32)
    for i in range(length):
        pos = i * (src - 1) / (length - 1) if length > 1 else 0.0
        lo = int(np.floor(pos))
        hi = min(lo + 1, src - 1)
        w = pos - lo
        out[:, i] = feats[:, lo] * (1 - w) + feats[:, hi] * w
    return out


RNG = np.random.default_rng(0)
STANDARDS = {"Jab": RNG.normal(size=(30, 22, 3)).astype(np.float32),
             "Cross": RNG.normal(size=(25, 22, 3)).astype(np.float32)}


def make_records() -> list[dict]:
    raw = []
    for i, (n, mt) in enumerate([(12, "Jab"), (20, "Cross"), (9, "Jab")]):
        raw.append({
            "video_name": f"clip{i}", "motion_type": mt,
            "coordinates": RNG.normal(size=(n, 66)).astype(np.float32),
            "labels": [f"text {i} a", f"text {i} b", f"text {i} c"][: i + 1],
            "augmented_labels": [f"para {i}"],
            "aligned_start_frame": 1, "aligned_end_frame": n - 1,
            "aligned_std_start_frame": 3 + i, "aligned_std_end_frame": 20 + i,
            "aligned_seq_len": n - 2,
            "gt_start_frame": 2, "gt_end_frame": 6, "gt_std_start_frame": 0, "gt_std_end_frame": 1,
        })
    return validate_records(raw, "<test>", standards=STANDARDS)


RECORDS = make_records()


def test_labels_all_gives_one_sample_per_text():
    ds = MotionTextDataset(RECORDS)
    assert len(ds) == 1 + 2 + 3
    texts = [ds[i]["text"] for i in range(len(ds))]
    assert texts == [t for r in RECORDS for t in r["labels"]]
    item = ds[1]
    assert item["video_name"] == "clip1" and item["references"] == ["text 1 a", "text 1 b"]
    assert item["motion_type"] == "Cross" and item["standard"] is None
    assert ds.clip_ids() == ["clip0", "clip1", "clip2"]
    assert ds.references() == {r["video_name"]: r["labels"] for r in RECORDS}
    with_aug = MotionTextDataset(RECORDS, augmented_labels=True)
    assert len(with_aug) == 6 + 3 and "para 2" in [with_aug[i]["text"] for i in range(len(with_aug))]
    assert with_aug.references()["clip2"] == RECORDS[2]["labels"]  # paraphrases are not references


def test_labels_random_one_sample_per_clip_redrawn_per_epoch():
    ds = MotionTextDataset(RECORDS, labels="random", augmented_labels=True, seed=3)
    assert len(ds) == 3
    draws = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        draws.append([ds[i]["text"] for i in range(3)])
    for texts in draws:
        for i, t in enumerate(texts):
            assert t in RECORDS[i]["labels"] + RECORDS[i]["augmented_labels"]
    assert len({tuple(d) for d in draws}) > 1  # texts change across epochs
    assert len({d[2] for d in draws}) > 2  # clip 2 has 4 texts; several are drawn
    again = MotionTextDataset(RECORDS, labels="random", augmented_labels=True, seed=3)
    again.set_epoch(5)
    assert [again[i]["text"] for i in range(3)] == draws[5]  # deterministic in (seed, epoch)


def test_eval_mode_one_sample_per_clip_first_label():
    ds = MotionTextDataset(RECORDS, train=False, labels="all", augmented_labels=True)
    assert len(ds) == 3
    assert [ds[i]["text"] for i in range(3)] == ["text 0 a", "text 1 a", "text 2 a"]
    assert ds[2]["references"] == ["text 2 a", "text 2 b", "text 2 c"]


@pytest.mark.parametrize("normalise", ["root_first_frame", "none"])
def test_features_and_segment_crop_equal_naive(normalise):
    full = MotionTextDataset(RECORDS, train=False, normalise=normalise)
    aligned = MotionTextDataset(RECORDS, train=False, segment="aligned", normalise=normalise)
    gt = MotionTextDataset(RECORDS, train=False, segment="gt", normalise=normalise)
    for i, rec in enumerate(RECORDS):
        coords = rec["coordinates"]
        norm = normalise == "root_first_frame"
        np.testing.assert_allclose(full[i]["features"].numpy(), naive_features(coords, norm), atol=1e-5)
        crop = coords[rec["aligned_start_frame"]:rec["aligned_end_frame"]]
        np.testing.assert_allclose(aligned[i]["features"].numpy(), naive_features(crop, norm), atol=1e-5)
        assert gt[i]["features"].shape == (6, 4, 22)
        assert full[i]["features"].dtype == torch.float32


def test_reference_carries_the_standard_segment_resampled_to_the_learner():
    ds = MotionTextDataset(RECORDS, STANDARDS, train=False, segment="aligned", reference=True)
    for i, rec in enumerate(RECORDS):
        item = ds[i]
        length = rec["aligned_end_frame"] - rec["aligned_start_frame"]
        std = STANDARDS[rec["motion_type"]][rec["aligned_std_start_frame"]:rec["aligned_std_end_frame"]]
        expected = naive_resample(naive_features(std), length)
        assert item["standard"].shape == item["features"].shape == (6, length, 22)
        np.testing.assert_allclose(item["standard"].numpy(), expected, atol=1e-5)
    one = MotionTextDataset(RECORDS, STANDARDS, train=False, segment="gt", reference=True)
    std_frame = naive_features(STANDARDS["Jab"][0:1])  # a 1-frame standard segment, repeated
    np.testing.assert_allclose(one[0]["standard"].numpy(), np.repeat(std_frame, 4, axis=1), atol=1e-6)
    whole = MotionTextDataset(RECORDS, STANDARDS, train=False, segment="none", reference=True)
    np.testing.assert_allclose(whole[1]["standard"].numpy(),
                               naive_resample(naive_features(STANDARDS["Cross"]), 20), atol=1e-5)


def test_a_missing_standard_end_is_the_standards_last_frame_not_start_plus_seq_len():
    """``seq_len`` is the learner segment's length; it says nothing about the standard's segment,
    which after a DTW alignment is longer or shorter than the learner's."""
    rec = dict(RECORDS[0], aligned_std_end_frame=None)  # learner [1, 11), seq_len 10; standard from 3
    jab = STANDARDS["Jab"]  # 30 frames
    ds = MotionTextDataset([rec], STANDARDS, train=False, segment="aligned", reference=True)
    np.testing.assert_allclose(ds[0]["standard"].numpy(), naive_resample(naive_features(jab[3:]), 10),
                               atol=1e-5)
    late = dict(rec, aligned_std_start_frame=26)  # 26 + seq_len would run past the standard's end
    ds = MotionTextDataset([late], STANDARDS, train=False, segment="aligned", reference=True)
    np.testing.assert_allclose(ds[0]["standard"].numpy(), naive_resample(naive_features(jab[26:]), 10),
                               atol=1e-5)


def test_no_standard_without_reference_or_without_standards():
    assert MotionTextDataset(RECORDS, STANDARDS, reference=False)[0]["standard"] is None
    # pretraining: reference wanted but no standards exist -> None (the model repeats frame 0)
    assert MotionTextDataset(RECORDS, None, reference=True)[0]["standard"] is None


def test_missing_segment_fields_and_bad_motion_type_are_clear_errors():
    with pytest.raises(DataError, match=r"record 0 \(video_name='clip0'\): key 'error_start_frame'.*"
                                        r"segment='error'"):
        MotionTextDataset(RECORDS, segment="error", source="train.pkl")
    recs = [dict(RECORDS[0], gt_std_start_frame=None)]  # -1 in the file: not annotated
    with pytest.raises(DataError, match="key 'gt_std_start_frame'"):
        MotionTextDataset(recs, STANDARDS, segment="gt", reference=True)
    MotionTextDataset(recs, STANDARDS, segment="gt", reference=False)  # standard not needed
    recs = [dict(RECORDS[0], motion_type="Hook")]
    with pytest.raises(DataError, match="key 'motion_type'.*'Hook'"):
        MotionTextDataset(recs, STANDARDS, reference=True)
    recs = [dict(RECORDS[0], aligned_end_frame=None)]  # end from start + seq_len
    ds = MotionTextDataset(recs, segment="aligned", train=False)
    assert ds[0]["features"].shape[1] == RECORDS[0]["aligned_seq_len"]
    recs = [dict(RECORDS[0], aligned_end_frame=None, aligned_seq_len=None)]  # no learner end at all
    with pytest.raises(DataError, match="key 'aligned_end_frame'"):
        MotionTextDataset(recs, segment="aligned")
    recs = [dict(RECORDS[0], aligned_end_frame=40)]
    with pytest.raises(DataError, match=r"0 <= aligned_start_frame < aligned_end_frame <= 12"):
        MotionTextDataset(recs, segment="aligned")
    with pytest.raises(DataError, match="at least one training text"):
        MotionTextDataset([dict(RECORDS[0], labels=[], augmented_labels=[])])
    assert MotionTextDataset([dict(RECORDS[0], labels=[])], train=False)[0]["text"] == ""


def test_option_errors():
    with pytest.raises(ValueError, match="segment"):
        MotionTextDataset(RECORDS, segment="aligned_std")
    with pytest.raises(ValueError, match="labels"):
        MotionTextDataset(RECORDS, labels="first")
    with pytest.raises(ValueError, match="normalise"):
        MotionTextDataset(RECORDS, normalise="zscore")
    with pytest.raises(DataError, match="no records"):
        MotionTextDataset([])


def test_getitem_does_no_feature_computation(monkeypatch):
    ds = MotionTextDataset(RECORDS, STANDARDS, segment="aligned", reference=True, labels="random")

    def forbidden(*args, **kwargs):
        raise AssertionError("features computed in __getitem__")

    monkeypatch.setattr(dataset_module, "compute_features", forbidden)
    monkeypatch.setattr(dataset_module, "resample_time", forbidden)
    for epoch in range(2):
        ds.set_epoch(epoch)
        items = [ds[i] for i in range(len(ds))]
    assert items[0]["features"] is ds[0]["features"]  # precomputed tensors, shared, not copied
