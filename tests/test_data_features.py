"""Joint + bone features against hand computation; time resampling against np.interp."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataloaders.features import compute_features, resample_time
from dataloaders.skeleton import NUM_JOINTS, SMPL22_PARENTS, bones


def toy_skeleton(n_frames: int = 3) -> np.ndarray:
    """Joint j at frame t sits at (j + t, j**2, 10 * t): easy to compute bones by hand."""
    t = np.arange(n_frames)[:, None]
    j = np.arange(22)[None, :]
    return np.stack([j + t, np.broadcast_to(j ** 2, (n_frames, 22)), np.broadcast_to(10 * t, (n_frames, 22))],
                    axis=-1).astype(np.float32)  # (T, V, 3)


def test_parents_are_the_smpl22_tree():
    assert SMPL22_PARENTS == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
    assert all(p < j for j, p in enumerate(SMPL22_PARENTS) if j)  # parents come first, no joint -1
    assert NUM_JOINTS == 22


def test_bones_of_numpy_arrays_and_torch_tensors_agree():
    coords = np.random.default_rng(2).normal(size=(2, 4, 22, 3)).astype(np.float32)  # (N, T, V, 3)
    from_numpy = bones(coords)
    from_torch = bones(torch.from_numpy(coords))
    assert isinstance(from_numpy, np.ndarray) and isinstance(from_torch, torch.Tensor)
    np.testing.assert_array_equal(from_torch.numpy(), from_numpy)
    np.testing.assert_array_equal(from_numpy[..., 0, :], 0.0)  # the root's bone
    np.testing.assert_array_equal(from_numpy[1, 2, 20], coords[1, 2, 20] - coords[1, 2, 18])  # wrist - elbow


def test_bones_equal_hand_computation():
    feats = compute_features(toy_skeleton(), normalise="none")
    assert feats.shape == (6, 3, 22) and feats.dtype == np.float32
    bones = feats[3:6]  # (3, T, V)
    # hand computed: bone(j) = (j - p, j^2 - p^2, 0) for every frame
    assert bones[:, 0, 0].tolist() == [0, 0, 0]  # root
    assert bones[:, 1, 4].tolist() == [4 - 1, 16 - 1, 0]  # left knee - left hip
    assert bones[:, 2, 15].tolist() == [15 - 12, 225 - 144, 0]  # head - neck
    assert bones[:, 0, 21].tolist() == [21 - 19, 441 - 361, 0]  # right wrist - right elbow
    assert bones[:, 0, 14].tolist() == [14 - 9, 196 - 81, 0]  # right collar - spine3
    assert bones[:, 0, 3].tolist() == [3, 9, 0]  # spine1 - pelvis


def test_features_against_a_naive_loop():
    coords = np.random.default_rng(1).normal(size=(5, 22, 3)).astype(np.float32)
    feats = compute_features(coords.reshape(5, 66), normalise="none")  # [T, 66] accepted too
    for t in range(5):
        for j in range(22):
            p = SMPL22_PARENTS[j]
            bone = coords[t, j] - coords[t, p] if p >= 0 else np.zeros(3)
            np.testing.assert_allclose(feats[0:3, t, j], coords[t, j], rtol=0, atol=1e-7)
            np.testing.assert_allclose(feats[3:6, t, j], bone, rtol=0, atol=1e-6)


def test_root_first_frame_normalisation():
    coords = toy_skeleton(4) + np.array([5.0, -2.0, 3.0], dtype=np.float32)
    raw = compute_features(coords, normalise="none")
    norm = compute_features(coords, normalise="root_first_frame")
    root0 = coords[0, 0]  # (5, -2, 3)
    np.testing.assert_allclose(norm[0:3], raw[0:3] - root0[:, None, None], atol=1e-6)
    assert norm[0:3, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert norm[0:3, 2, 0].tolist() == [2.0, 0.0, 20.0]  # root at frame 2 moved by (2, 0, 20)
    np.testing.assert_array_equal(norm[3:6], raw[3:6])  # bones do not depend on translation


def test_feature_errors():
    with pytest.raises(ValueError, match="normalise"):
        compute_features(toy_skeleton(), normalise="center")
    with pytest.raises(ValueError, match=r"\[T, 22, 3\]"):
        compute_features(np.zeros((3, 21, 3)))


@pytest.mark.parametrize("src,dst", [(7, 13), (13, 7), (5, 5), (4, 1), (2, 9), (30, 31)])
def test_resample_time_matches_np_interp(src, dst):
    feats = np.random.default_rng(src * 100 + dst).normal(size=(6, src, 22)).astype(np.float32)
    out = resample_time(feats, dst)
    assert out.shape == (6, dst, 22) and out.dtype == np.float32
    positions = np.linspace(0, src - 1, dst) if dst > 1 else np.zeros(1)
    for c in range(6):
        for v in range(22):
            np.testing.assert_allclose(out[c, :, v], np.interp(positions, np.arange(src), feats[c, :, v]),
                                       rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[:, 0], feats[:, 0])  # first frame kept
    if dst > 1:
        np.testing.assert_allclose(out[:, -1], feats[:, -1], atol=1e-6)  # last frame kept
    with pytest.raises(ValueError):
        resample_time(feats, 0)
