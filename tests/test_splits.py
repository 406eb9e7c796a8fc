"""Validation splits and learner folds: disjoint, covering, whole learners, reproducible."""
from __future__ import annotations

import pytest

from dataloaders.splits import learner_folds, learner_of, split_off


def clips(counts: dict[str, int]) -> list[dict]:
    """``{learner: number of clips}`` -> records named like BX's (``<learner>_<view>_<n>``)."""
    return [{"video_name": f"{learner}_front_{i}"} for learner, n in counts.items() for i in range(n)]


COUNTS = {"0": 17, "1": 14, "2": 15, "3": 18, "4": 18, "5": 17, "6": 18, "7": 16, "8": 16, "9": 14}  # BX train


def test_learner_is_the_field_or_the_name_prefix():
    assert learner_of({"video_name": "2_back_5"}) == "2"
    assert learner_of({"video_name": "solo"}) == "solo"
    assert learner_of({"video_name": "2_back_5", "learner": "anna"}) == "anna"
    assert learner_of({"video_name": "2_back_5", "learner": ""}) == "2"


@pytest.mark.parametrize("group_by", ["none", "learner"])
@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.5])
def test_split_is_disjoint_covering_and_reproducible(group_by, fraction):
    records = clips(COUNTS)
    rest, held = split_off(records, fraction, group_by, seed=3)
    names = [r["video_name"] for r in rest + held]
    assert sorted(names) == sorted(r["video_name"] for r in records) and len(set(names)) == len(records)
    assert len(held) >= round(fraction * len(records))
    if group_by == "none":
        assert len(held) == round(fraction * len(records))
    else:  # whole learners: no learner on both sides, and no more learners than needed
        assert not {learner_of(r) for r in rest} & {learner_of(r) for r in held}
        largest = max(COUNTS[learner_of(r)] for r in held)  # the last learner taken is at most this
        assert len(held) - largest < round(fraction * len(records))
    # original order kept on both sides; the same seed gives the same split, another seed another
    assert rest == [r for r in records if r in rest] and held == [r for r in records if r in held]
    assert split_off(records, fraction, group_by, seed=3) == (rest, held)
    assert any(split_off(records, fraction, group_by, seed=s)[1] != held for s in range(4, 9))


def test_split_refuses_what_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2 groups"):
        split_off(clips({"0": 5}), 0.2, "learner")
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_off(clips(COUNTS), 1.0)
    with pytest.raises(ValueError, match="group_by"):
        split_off(clips(COUNTS), 0.2, "camera")
    # never every group, even for a large fraction
    rest, held = split_off(clips({"0": 1, "1": 1}), 0.9, "learner")
    assert len(rest) == len(held) == 1


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_learner_folds_partition_the_learners(k):
    folds = learner_folds(clips(COUNTS), k, seed=0)
    flat = [learner for fold in folds for learner in fold]
    assert sorted(flat) == sorted(COUNTS) and len(folds) == k
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert learner_folds(clips(COUNTS), k, seed=0) == folds
    with pytest.raises(ValueError, match="2 <= k <= 10"):
        learner_folds(clips(COUNTS), 11)


def test_bx_learner_split_holds_out_whole_learners(bx_dir):
    from dataloaders.records import load_records

    train = load_records(bx_dir / "BX_train.pkl")
    rest, held = split_off(train, 0.15, "learner", seed=0)
    assert {learner_of(r) for r in rest}.isdisjoint({learner_of(r) for r in held})
    assert len(held) >= round(0.15 * len(train)) and len(rest) + len(held) == 163
