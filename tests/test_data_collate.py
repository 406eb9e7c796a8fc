"""Collator: pad to the batch's longest clip, frame mask, standards, -100 label padding,
DistributedSampler coverage."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dataloaders.collate import IGNORE_INDEX, Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import validate_records

TEXTS = ["a person raises their left arm", "someone walks forward slowly",
         "the punch does not fully extend", "keep the guard up", "a man jumps high into the air"]


@functools.lru_cache(maxsize=1)
def tokenizer():
    """A tiny T5 tokenizer trained offline on the test texts (no hub access)."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(extra_ids=0).train_new_from_iterator(TEXTS * 5, vocab_size=120)


def item(name: str, length: int, text: str = "keep the guard up", standard: bool = False) -> dict:
    gen = torch.Generator().manual_seed(length)
    feats = torch.randn(6, length, 22, generator=gen)
    return {"video_name": name, "features": feats,
            "standard": feats * 2 + 1 if standard else None, "text": text,
            "references": [text], "motion_type": "Jab"}


def test_padding_mask_and_values():
    items = [item("a", 5), item("b", 9), item("c", 2)]
    batch = Collator()(items)
    assert batch["x"].shape == (3, 6, 9, 22) and batch["x"].dtype == torch.float32
    assert batch["mask"].dtype == torch.bool
    assert batch["mask"].sum(1).tolist() == [5, 9, 2] == batch["lengths"].tolist()
    for i, it in enumerate(items):
        n = it["features"].shape[1]
        assert torch.equal(batch["x"][i, :, :n], it["features"])
        assert batch["x"][i, :, n:].abs().sum() == 0
        assert batch["mask"][i, :n].all() and not batch["mask"][i, n:].any()
    assert batch["std_x"] is None and batch["labels"] is None
    assert batch["video_names"] == ["a", "b", "c"] and batch["texts"] == ["keep the guard up"] * 3
    assert batch["references"] == [["keep the guard up"]] * 3 and batch["motion_types"] == ["Jab"] * 3


def test_standards_are_padded_like_x():
    items = [item("a", 4, standard=True), item("b", 7, standard=True)]
    batch = Collator()(items)
    assert batch["std_x"].shape == batch["x"].shape == (2, 6, 7, 22)
    assert torch.equal(batch["std_x"][0, :, :4], items[0]["standard"])
    assert batch["std_x"][0, :, 4:].abs().sum() == 0
    with pytest.raises(ValueError, match="standard for every clip or for none"):
        Collator()([item("a", 4, standard=True), item("b", 7)])


def test_labels_are_the_tokens_with_minus_100_on_padding():
    tok = tokenizer()
    texts = [TEXTS[0], TEXTS[3], TEXTS[4]]
    batch = Collator(tok, max_target_len=64)([item(str(i), 3 + i, t) for i, t in enumerate(texts)])
    labels = batch["labels"]
    assert labels.dtype == torch.long
    for i, text in enumerate(texts):
        ids = tok(text)["input_ids"]  # tokenised alone: no padding at all
        assert ids[-1] == tok.eos_token_id
        assert labels[i, : len(ids)].tolist() == ids
        assert (labels[i, len(ids):] == IGNORE_INDEX).all()
    assert labels.shape[1] == max(len(tok(t)["input_ids"]) for t in texts)
    assert not (labels == tok.pad_token_id).any()


def test_truncation_to_max_target_len():
    tok = tokenizer()
    batch = Collator(tok, max_target_len=4)([item("a", 3, TEXTS[1]), item("b", 3, "up")])
    assert batch["labels"].shape[1] <= 4


def test_batch_is_padded_to_its_own_longest_clip_not_the_dataset():
    raw = [{"video_name": f"c{i}", "coordinates": np.zeros((n, 66), np.float32) + i,
            "labels": [TEXTS[i % 5]]} for i, n in enumerate([5, 6, 7, 80])]
    ds = MotionTextDataset(validate_records(raw, "<test>"), train=False)
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=Collator(tokenizer()))
    first, second = list(loader)
    assert first["x"].shape[2] == 6 and second["x"].shape[2] == 80


@pytest.mark.parametrize("n_clips", [8, 7])
def test_distributed_sampler_covers_every_clip(n_clips):
    raw = [{"video_name": f"clip{i}", "coordinates": np.full((3 + i, 66), float(i), np.float32),
            "labels": [TEXTS[i % 5]]} for i in range(n_clips)]
    ds = MotionTextDataset(validate_records(raw, "<test>"), train=False)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=Collator(tokenizer()))
        for batch in loader:
            for name, x, n in zip(batch["video_names"], batch["x"], batch["lengths"]):
                i = int(name[4:])
                assert int(n) == 3 + i and torch.all(x[:3, :n] == 0)  # root-relative joints
                seen.append(name)
    if n_clips % 2 == 0:
        assert sorted(seen) == sorted(ds.clip_ids())  # every clip exactly once
    else:
        assert set(seen) == set(ds.clip_ids()) and len(seen) == n_clips + 1  # sampler pads one


def test_collator_works_in_worker_processes():
    raw = [{"video_name": f"c{i}", "coordinates": np.zeros((4 + i, 66), np.float32),
            "labels": [TEXTS[i]]} for i in range(4)]
    ds = MotionTextDataset(validate_records(raw, "<test>"), train=False)
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=Collator(tokenizer()))
    assert [b["video_names"] for b in loader] == [["c0", "c1"], ["c2", "c3"]]
