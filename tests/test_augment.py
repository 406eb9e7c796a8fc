"""dataloaders.augment and data.mirror: mirroring twice is the identity, mirrored features equal
the features of mirrored coordinates (computed independently), side words swap with their case,
and the dataset mirrors a share of samples that depends on (seed, epoch) only; rotation and speed
against independently transformed coordinates."""
from __future__ import annotations

import numpy as np
import torch

from dataloaders.augment import MIRRORED_JOINTS, mirror_features, rotate_features, swap_left_right
from dataloaders.dataset import MotionTextDataset
from dataloaders.features import compute_features

# left/right twins of SMPL-22, written out (not derived from the names) to stay independent
TWINS = {1: 2, 4: 5, 7: 8, 10: 11, 13: 14, 16: 17, 18: 19, 20: 21}


def mirrored_coordinates(coords: np.ndarray) -> np.ndarray:
    out = coords.copy()
    out[..., 0] *= -1
    for a, b in TWINS.items():
        out[:, [a, b]] = out[:, [b, a]]
    return out


def test_twins_and_mirroring_twice_is_the_identity():
    expected = list(range(22))
    for a, b in TWINS.items():
        expected[a], expected[b] = b, a
    assert list(MIRRORED_JOINTS) == expected
    feats = torch.randn(6, 9, 22)
    torch.testing.assert_close(mirror_features(mirror_features(feats)), feats, rtol=0, atol=0)
    text = "Left hand up, RIGHT foot back; keep the rear hand left of the chin."
    assert swap_left_right(swap_left_right(text)) == text


def test_mirrored_features_equal_the_features_of_mirrored_coordinates():
    coords = np.random.default_rng(0).normal(size=(11, 22, 3)).astype(np.float32)
    for normalise in ("none", "root_first_frame"):
        direct = torch.from_numpy(compute_features(mirrored_coordinates(coords), normalise))
        torch.testing.assert_close(mirror_features(torch.from_numpy(compute_features(coords, normalise))), direct,
                                   rtol=0, atol=1e-6)


def test_a_left_wrist_raised_to_the_left_becomes_a_right_wrist_raised_to_the_right():
    coords = np.zeros((2, 22, 3), dtype=np.float32)
    coords[:, 20] = [0.5, 1.0, 0.0]  # left wrist, out at +x
    mirrored = mirror_features(torch.from_numpy(compute_features(coords, "none")))  # (6, T, V)
    assert mirrored[0:3, 0, 21].tolist() == [-0.5, 1.0, 0.0]  # now the right wrist, at -x
    assert mirrored[0:3, 0, 20].tolist() == [0.0, 0.0, 0.0]


def test_side_words_swap_with_their_case_and_nothing_else_changes():
    assert swap_left_right("Shift to the left. Right hand up, LEFT foot out.") == \
        "Shift to the right. Left hand up, RIGHT foot out."
    assert swap_left_right("leftover bright rear lead") == "leftover bright rear lead"


def records(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"video_name": f"c{i}", "coordinates": rng.normal(size=(8, 22, 3)).astype(np.float32),
             "labels": [f"move the left hand {i}"]} for i in range(n)]


def test_the_dataset_mirrors_a_share_of_samples_drawn_from_seed_and_epoch():
    plain = MotionTextDataset(records(), seed=3)
    every = MotionTextDataset(records(), seed=3, mirror=1.0)
    for i in range(len(plain)):
        torch.testing.assert_close(every[i]["features"], mirror_features(plain[i]["features"]))
        assert every[i]["text"] == plain[i]["text"].replace("left", "right")
        assert every[i]["references"] == [t.replace("left", "right") for t in plain[i]["references"]]
    half = MotionTextDataset(records(200), seed=3, mirror=0.5)
    flags = [half[i]["text"].startswith("move the right") for i in range(len(half))]
    assert 60 < sum(flags) < 140
    again = MotionTextDataset(records(200), seed=3, mirror=0.5)
    assert [again[i]["text"] for i in range(len(again))] == [half[i]["text"] for i in range(len(half))]
    half.set_epoch(1)
    assert [half[i]["text"].startswith("move the right") for i in range(len(half))] != flags
    evaluation = MotionTextDataset(records(), seed=3, mirror=1.0, train=False)
    assert evaluation[0]["text"] == "move the left hand 0"  # never at evaluation


def turned_coordinates(coords: np.ndarray, degrees: float) -> np.ndarray:
    """Every point multiplied by the rotation matrix about y (written out as a matrix)."""
    a = np.deg2rad(degrees)
    matrix = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return (coords.astype(np.float64) @ matrix.T).astype(np.float32)


def test_turned_features_equal_the_features_of_turned_coordinates():
    coords = np.random.default_rng(2).normal(size=(9, 22, 3)).astype(np.float32)
    for degrees in (-170.0, -30.0, 0.0, 45.0, 90.0):
        for normalise in ("none", "root_first_frame"):
            direct = torch.from_numpy(compute_features(turned_coordinates(coords, degrees), normalise))
            turned = rotate_features(torch.from_numpy(compute_features(coords, normalise)), degrees)
            torch.testing.assert_close(turned, direct, rtol=0, atol=1e-5)
    feats = torch.randn(6, 5, 22)
    torch.testing.assert_close(rotate_features(rotate_features(feats, 35.0), -35.0), feats, rtol=0, atol=1e-6)
    # a quarter turn: a wrist out at +x ends at -z (y, the vertical, untouched)
    coords = np.zeros((1, 22, 3), dtype=np.float32)
    coords[0, 20] = [0.5, 1.0, 0.0]
    out = rotate_features(torch.from_numpy(compute_features(coords, "none")), 90.0)
    torch.testing.assert_close(out[0:3, 0, 20], torch.tensor([0.0, 1.0, -0.5]), rtol=0, atol=1e-6)


def test_the_dataset_turns_samples_by_angles_drawn_from_seed_and_epoch():
    plain = MotionTextDataset(records(), seed=3)
    turned = MotionTextDataset(records(), seed=3, rotate=30.0)
    for i in range(len(plain)):
        assert turned[i]["text"] == plain[i]["text"]
        torch.testing.assert_close(turned[i]["features"][1], plain[i]["features"][1])  # heights kept
    # each sample's angle, recovered from one joint's x and z, lies within +-30 degrees and they differ
    recovered = []
    for i in range(len(plain)):
        p, q = plain[i]["features"][0:3:2, 0, 20].numpy(), turned[i]["features"][0:3:2, 0, 20].numpy()  # wrist (x, z)
        recovered.append(float(np.degrees(np.arctan2(p[1], p[0]) - np.arctan2(q[1], q[0]))))
    recovered = [(a + 180) % 360 - 180 for a in recovered]
    assert all(abs(a) <= 30.0 + 1e-3 for a in recovered) and len({round(a, 3) for a in recovered}) == len(recovered)
    for i, a in enumerate(recovered):
        torch.testing.assert_close(turned[i]["features"], rotate_features(plain[i]["features"], a), rtol=0, atol=1e-4)
    again = MotionTextDataset(records(), seed=3, rotate=30.0)
    torch.testing.assert_close(again[2]["features"], turned[2]["features"], rtol=0, atol=0)
    turned.set_epoch(1)
    assert not torch.equal(turned[2]["features"], again[2]["features"])
    evaluation = MotionTextDataset(records(), seed=3, rotate=30.0, train=False)
    torch.testing.assert_close(evaluation[0]["features"], plain[0]["features"], rtol=0, atol=0)  # never at evaluation


def played_at(coords: np.ndarray, length: int) -> np.ndarray:
    """Each coordinate of each joint interpolated at ``length`` evenly spaced times (np.interp)."""
    source = np.arange(len(coords))
    times = np.linspace(0.0, len(coords) - 1, length)
    flat = coords.reshape(len(coords), -1)
    return np.stack([np.interp(times, source, flat[:, j]) for j in range(flat.shape[1])], axis=1) \
        .reshape(length, *coords.shape[1:]).astype(np.float32)


def test_speed_changes_the_frames_as_resampled_coordinates_would_and_keeps_the_texts():
    recs = records(200)
    fast = MotionTextDataset(recs, seed=4, speed=0.5, min_frames=3)
    lengths = [fast[i]["features"].shape[1] for i in range(len(fast))]
    assert min(lengths) >= round(8 / 1.5) and max(lengths) <= round(8 / 0.5) and len(set(lengths)) > 4
    for i in range(0, 200, 37):
        item = fast[i]
        expected = compute_features(played_at(recs[i]["coordinates"], item["features"].shape[1]), "root_first_frame")
        torch.testing.assert_close(item["features"], torch.from_numpy(expected), rtol=0, atol=1e-5)
        assert item["text"] == recs[i]["labels"][0]
    again = MotionTextDataset(recs, seed=4, speed=0.5, min_frames=3)
    assert [again[i]["features"].shape[1] for i in range(len(again))] == lengths
    fast.set_epoch(1)
    assert [fast[i]["features"].shape[1] for i in range(len(fast))] != lengths
    assert MotionTextDataset(recs, seed=4, speed=0.5, train=False)[0]["features"].shape[1] == 8  # never at evaluation
    short = MotionTextDataset(records(1), speed=0.9, min_frames=7)
    seen = []
    for epoch in range(20):
        short.set_epoch(epoch)
        seen.append(short[0]["features"].shape[1])
    assert min(seen) == 7 and max(seen) > 8  # sped up, but never below min_frames; slowed down too


def test_a_speed_of_one_or_more_is_refused_naming_the_key():
    import pytest

    from configs import schema

    with pytest.raises(schema.ConfigError, match=r"data.speed: expected a number in \[0, 1\), found 1.0"):
        schema.load_config("configs/synthetic.yaml", ["data.speed=1.0"])
    with pytest.raises(ValueError, match="speed"):
        MotionTextDataset(records(), speed=-0.1)

