"""The released boxing data (../shared/data/BX; skipped when absent)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards


@pytest.fixture(scope="module")
def bx(bx_dir):
    start = time.perf_counter()
    standards = load_standards(bx_dir / "BX_standard.pkl")
    train = load_records(bx_dir / "BX_train.pkl", standards=standards)
    seconds = time.perf_counter() - start
    return standards, train, seconds


def test_bx_train_loads_163_clips_with_3_labels_and_3_paraphrases(bx, record_property):
    standards, train, seconds = bx
    frames = [len(r["coordinates"]) for r in train]
    stats = {"clips": len(train), "labels": sum(len(r["labels"]) for r in train),
             "augmented_labels": sum(len(r["augmented_labels"]) for r in train),
             "frames_min": min(frames), "frames_mean": float(np.mean(frames)), "frames_max": max(frames)}
    print(f"\nBX_train.pkl: {stats['clips']} clips, {stats['labels']} labels, "
          f"{stats['augmented_labels']} augmented labels, frames min/mean/max "
          f"{stats['frames_min']}/{stats['frames_mean']:.1f}/{stats['frames_max']}, "
          f"load + validation {seconds * 1000:.0f} ms")
    for key, value in stats.items():
        record_property(key, value)
    record_property("load_seconds", round(seconds, 4))
    assert stats["clips"] == 163
    assert all(len(r["labels"]) == 3 and len(r["augmented_labels"]) == 3 for r in train)
    assert all(r["coordinates"].dtype == np.float32 and r["coordinates"].shape[1:] == (22, 3)
               for r in train)


def test_bx_standards_for_jab_and_cross(bx):
    standards, train, _ = bx
    assert {"Jab", "Cross"} <= set(standards)
    assert {r["motion_type"] for r in train} <= set(standards)


def test_bx_aligned_segments_are_valid(bx):
    standards, train, _ = bx
    for r in train:
        n, std_n = len(r["coordinates"]), len(standards[r["motion_type"]])
        assert 0 <= r["aligned_start_frame"] < r["aligned_end_frame"] <= n
        assert 0 <= r["aligned_std_start_frame"] < r["aligned_std_end_frame"] <= std_n
        assert r["aligned_end_frame"] - r["aligned_start_frame"] == r["aligned_seq_len"]
    ds = MotionTextDataset(train, standards, segment="aligned", reference=True, labels="all",
                           augmented_labels=True)
    assert len(ds) == 163 * 6 and len(ds.clip_ids()) == 163
    batch = Collator()([ds[i] for i in range(0, 60, 6)])
    assert batch["std_x"].shape == batch["x"].shape and batch["x"].shape[:2] == (10, 6)
    assert batch["texts"] == [r["labels"][0] for r in train[:10]]  # the texts as they are


def test_bx_test_split_and_json_references_agree(bx_dir):
    standards = load_standards(bx_dir / "BX_standard.pkl")
    test = load_records(bx_dir / "BX_test.pkl", standards=standards)
    assert len(test) == 41
    released = json.loads((bx_dir / "BX_test.json").read_text(encoding="utf-8"))
    assert {r["video_name"]: r["labels"] for r in released} == {r["video_name"]: r["labels"] for r in test}
