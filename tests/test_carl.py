"""CARL-style embedder: loss values, augmentations, model invariances, training and resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignment import carl
from alignment import config as C
from alignment import train_carl
from dataloaders.features import compute_features
from dataloaders.skeleton import SMPL22_PARENTS

TINY = dict(width=32, heads=2, ff=64, layers=1, pose_hidden=32, embed_dim=16, dropout=0.0,
            max_positions=16)
TINY_OVERRIDES = [f"model.{k}={v}" for k, v in TINY.items()]


def _bone_lengths(coords: torch.Tensor) -> torch.Tensor:
    parents = torch.tensor(SMPL22_PARENTS[1:])
    return (coords[..., 1:, :] - coords[..., parents, :]).norm(dim=-1)  # (.., V-1)


def _clips(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    from dataloaders import synthetic
    train, _, _ = synthetic.generate(seed, 1, 0, "coach")
    return [r["coordinates"].reshape(-1, 22, 3) for r in train[:n]]


# ============================================================================ loss ============
def _naive_loss(z1, z2, t1, t2, m1, m2, temperature, variance):
    """Per-frame Python loops over the definition (both directions, mean over real frames)."""
    total, count = 0.0, 0
    for n in range(z1.shape[0]):
        for a, b, ta, tb, ma, mb in ((z1[n], z2[n], t1[n], t2[n], m1[n], m2[n]),
                                     (z2[n], z1[n], t2[n], t1[n], m2[n], m1[n])):
            valid_j = [j for j in range(b.shape[0]) if mb[j]]
            for i in range(a.shape[0]):
                if not ma[i]:
                    continue
                ai = a[i] / np.linalg.norm(a[i])
                sims = [float(ai @ (b[j] / np.linalg.norm(b[j]))) / temperature for j in valid_j]
                lse = math.log(sum(math.exp(s) for s in sims))
                weights = [math.exp(-(ta[i] - tb[j]) ** 2 / (2 * variance)) for j in valid_j]
                norm = sum(weights)
                total += -sum(w / norm * (s - lse) for w, s in zip(weights, sims))
                count += 1
    return total / count


def test_loss_equals_naive_loop_with_masks():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 6, 4))
    t1 = np.sort(rng.uniform(0, 20, size=(2, 5)), axis=1)
    t2 = np.sort(rng.uniform(0, 20, size=(2, 6)), axis=1)
    m1 = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    m2 = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=bool)
    got = carl.sequence_contrastive_loss(*(torch.tensor(a) for a in (z1, z2, t1, t2, m1, m2)),
                                         temperature=0.1, variance=10.0)
    expected = _naive_loss(z1, z2, t1, t2, m1, m2, 0.1, 10.0)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_loss_hand_computed_two_frames():
    # identical views of two orthogonal frames at t = 0, 1: logits [10, 0] / [0, 10]; target
    # weights 1 and exp(-1/20); loss = log(1 + e^10) - 10 / (1 + e^-0.05) in every row.
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    got = carl.sequence_contrastive_loss(z, z, t, t)
    expected = math.log(1 + math.exp(10)) - 10 / (1 + math.exp(-0.05))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_aligned_views_reach_the_floor_and_shuffled_views_do_not():
    # embeddings on a circle, z_t = (cos 0.1t, sin 0.1t): logits 10 cos(0.1 dt) ~ 10 - dt^2 / 20,
    # the log of the Gaussian target (variance 10) up to a constant, so the loss ~ its entropy
    t = torch.arange(30, dtype=torch.float64)[None]
    z = torch.stack([torch.cos(0.1 * t), torch.sin(0.1 * t)], dim=-1)  # (1, T, 2)
    aligned = carl.sequence_contrastive_loss(z, z, t, t)
    target = torch.softmax(-(t[0, :, None] - t[0, None, :]) ** 2 / 20.0, dim=-1)
    entropy = float(-(target * target.log()).sum(-1).mean())  # cross-entropy >= entropy
    assert entropy <= float(aligned) < entropy + 0.02
    perm = torch.tensor(np.random.default_rng(1).permutation(30))
    shuffled = carl.sequence_contrastive_loss(z, z[:, perm], t, t)
    assert float(shuffled) > float(aligned) + 1.0


# ============================================================================ features/augment ==
def test_pose_features_equal_compute_features():
    clip = _clips(1)[0]
    ours = carl.pose_features(torch.tensor(clip)[None], 6)[0]   # (T, C, V)
    ref = compute_features(clip, normalise="root_first_frame")    # (C, T, V)
    np.testing.assert_allclose(ours.numpy(), ref.transpose(1, 0, 2), atol=1e-6)
    assert carl.pose_features(torch.tensor(clip)[None], 3).shape == (1, clip.shape[0], 3, 22)


def test_rotation_and_scale_keep_shapes_and_bone_lengths():
    clips = _clips(3)
    coords, lengths = carl.pad_clips(clips)
    mask = torch.arange(coords.shape[1])[None] < lengths[:, None]
    cfg = carl.AugmentConfig(rotation_deg=30, scale=[1.0, 1.0], jitter=0.0)
    out = carl.augment_coords(coords, mask, cfg, np.random.default_rng(0))
    assert out.shape == coords.shape
    for k, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(_bone_lengths(out[k, :n]), _bone_lengths(coords[k, :n]),
                                   atol=1e-5, rtol=1e-5)
        # the vertical coordinate (y) is untouched by a rotation about y
        torch.testing.assert_close(out[k, :n, :, 1], coords[k, :n, :, 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[k, :n], coords[k, :n], atol=1e-3)
        assert torch.all(out[k, n:] == 0)  # padding stays zero
    scaled = carl.augment_coords(coords, mask, carl.AugmentConfig(rotation_deg=0, scale=[1.2, 1.2],
                                                                   jitter=0.0),
                                 np.random.default_rng(0))
    torch.testing.assert_close(_bone_lengths(scaled[0, :lengths[0]]),
                               1.2 * _bone_lengths(coords[0, :lengths[0]]), atol=1e-5, rtol=1e-5)


def test_jitter_has_the_configured_size():
    coords = torch.zeros(4, 50, 22, 3)
    mask = torch.ones(4, 50, dtype=torch.bool)
    cfg = carl.AugmentConfig(rotation_deg=0, scale=[1, 1], jitter=0.01)
    out = carl.augment_coords(coords, mask, cfg, np.random.default_rng(0))
    assert float(out.std()) == pytest.approx(0.01, rel=0.05)


def test_vertical_rotation_matrices_are_rotations():
    rot = carl.vertical_rotation(torch.tensor([0.3, -1.0], dtype=torch.float64), up_axis=1)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye)
    torch.testing.assert_close(rot[:, 1], torch.tensor([[0.0, 1, 0], [0, 1, 0]], dtype=torch.float64))


def test_interpolate_frames_reads_fractional_times_inside_each_clip():
    clip = torch.arange(11, dtype=torch.float64)[:, None, None].expand(11, 22, 3)  # value = time
    coords = torch.stack([clip, 2 * clip])  # (N=2, T, V, 3)
    times = torch.tensor([[0.0, 2.5, 10.0, 12.0], [0.5, 1.0, 7.25, -1.0]], dtype=torch.float64)
    out = carl.interpolate_frames(coords, torch.tensor([11, 8]), times)  # (N, L, V, 3)
    assert out.shape == (2, 4, 22, 3)
    # Times are clamped to the clip: item 0 has 11 frames, item 1 only 8 (its last is frame 7).
    torch.testing.assert_close(out[0, :, 5, 1], torch.tensor([0.0, 2.5, 10.0, 10.0], dtype=torch.float64))
    torch.testing.assert_close(out[1, :, 5, 1], torch.tensor([1.0, 2.0, 14.0, 0.0], dtype=torch.float64))


def test_view_times_follow_the_reference_sampling():
    cfg = carl.AugmentConfig()
    rng = np.random.default_rng(3)
    for length in (20, 48, 90):
        t1, t2 = carl.sample_view_times(length, 32, cfg, rng)
        n = min(length, 32)
        for t in (t1, t2):
            assert t.shape == (n,) and np.all(np.diff(t) > 0)
            assert t[0] >= 0 and t[-1] <= length - 1 + 1e-9
        assert abs(t2[0] - t1[0]) <= 0.8 * n + cfg.speed[1] * 0.5 * n + 1e-9


def test_make_views_shapes_and_masks():
    clips = _clips(4)
    views = carl.make_views(clips, 40, 6, carl.AugmentConfig(), np.random.default_rng(0))
    n_real = [min(c.shape[0], 40) for c in clips]
    assert views.x1.shape == (4, 40, 6, 22) and views.t2.shape == (4, 40)
    assert views.m1.sum(1).tolist() == n_real == views.m2.sum(1).tolist()


# ============================================================================ model ===========
def test_embeddings_are_unit_norm_and_padding_free():
    torch.manual_seed(0)
    model = carl.FrameEmbedder(carl.EmbedderConfig(**TINY)).eval()
    clips = _clips(3)
    alone = [carl.embed_clips(model, [c])[0] for c in clips]
    together = carl.embed_clips(model, clips)
    for a, b in zip(alone, together):
        assert a.shape == (b.shape[0], TINY["embed_dim"])
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_positions_map_long_clips_onto_the_training_range():
    pos = carl.frame_positions(torch.tensor([5, 31]), 31, 16)
    torch.testing.assert_close(pos[0, :5], torch.arange(5.0))
    torch.testing.assert_close(pos[1], torch.linspace(0, 15, 31))


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = carl.FrameEmbedder(carl.EmbedderConfig(**TINY))
    views = carl.make_views(_clips(8), 24, 6, carl.AugmentConfig(), np.random.default_rng(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = carl.training_loss(model, views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


# ============================================================================ config / training =
def test_config_errors_name_the_dotted_key(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown config key 'model.depth'"):
        C.load_config(None, ["model.depth=3"])
    with pytest.raises(C.ConfigError, match="train.batch_size: expected int"):
        C.load_config(None, ["train.batch_size=2.5"])
    with pytest.raises(C.ConfigError, match="'augment.scale'"):
        C.load_config(None, ["augment.scale=[1.2, 0.9]"])
    for name in ("carl_synthetic.yaml", "carl_bx.yaml"):
        cfg = C.load_config(train_carl.REPO_ROOT / "configs" / name)
        assert (cfg.model.width, cfg.model.layers, cfg.model.heads, cfg.model.ff,
                cfg.model.embed_dim) == (256, 3, 8, 1024, 128)
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-4, 1e-5, 10.0)


def _train(tmp_path, monkeypatch, name, *extra):
    monkeypatch.setattr(train_carl, "REPO_ROOT", tmp_path)
    cfg = train_carl.REPO_ROOT.parent / "cfg.yaml"
    argv = ["--cfg_file", str(cfg), f"experiment={name}", "data.synthetic.train_per_kind=1",
            "data.synthetic.test_per_kind=0", "train.batch_size=8", "train.num_frames=16",
            *TINY_OVERRIDES, *extra]
    assert train_carl.main(argv) == 0
    return tmp_path / "results" / name


def test_training_writes_the_run_folder_and_resumes_exactly(tmp_path, monkeypatch):
    (tmp_path / "cfg.yaml").write_text("data: {kind: synthetic}\n")
    sub = tmp_path / "repo"
    sub.mkdir()
    # two epochs at once ...
    straight = _train(sub, monkeypatch, "straight", "train.epochs=2")
    # ... equal two epochs with a stop (time budget spent after epoch 1) and a resume
    _train(sub, monkeypatch, "resumed", "train.epochs=2", "train.max_minutes=1e-9")
    assert sorted(p.name for p in (sub / "results/resumed/checkpoints").iterdir()) == \
        ["epoch_0001.pt", "last.pt"]
    resumed = _train(sub, monkeypatch, "resumed", "train.epochs=2")
    for run in (straight, resumed):
        assert (run / "config.yaml").is_file() and (run / "train.log").is_file()
        assert any((run / "tb").iterdir())
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
            ["epoch_0001.pt", "epoch_0002.pt", "last.pt"]
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2 and a["state"]["step"] == b["state"]["step"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert "resumed from" in (resumed / "train.log").read_text()
    # a finished run is not an error; a third epoch keeps only two epoch files
    _train(sub, monkeypatch, "resumed", "train.epochs=2")
    _train(sub, monkeypatch, "resumed", "train.epochs=3")
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == \
        ["epoch_0002.pt", "epoch_0003.pt", "last.pt"]
    model = carl.load_embedder(str(resumed / "checkpoints" / "last.pt"))
    assert model.cfg.width == TINY["width"]
    # another config in the same folder is refused
    with pytest.raises(SystemExit, match="different config"):
        _train(sub, monkeypatch, "resumed", "train.epochs=3", "train.lr=0.01")


def test_positions_none_is_order_free_and_offsets_shift_positions():
    torch.manual_seed(0)
    clip = torch.tensor(_clips(1)[0])[None]                          # (1, T, V, 3)
    x = carl.pose_features(clip, 6)                                  # (1, T, C, V)
    perm = torch.randperm(x.shape[1])
    free = carl.FrameEmbedder(carl.EmbedderConfig(**{**TINY, "positions": "none"})).eval()
    torch.testing.assert_close(free(x[:, perm]), free(x)[:, perm], atol=1e-5, rtol=1e-5)
    model = carl.FrameEmbedder(carl.EmbedderConfig(**TINY)).eval()
    assert not torch.allclose(model(x[:, perm]), model(x)[:, perm], atol=1e-3)
    shifted = model(x, position_offset=torch.tensor([5.0]))
    assert not torch.allclose(shifted, model(x), atol=1e-4)
    views = carl.make_views(_clips(3), 16, 6, carl.AugmentConfig(position_shift=10.0),
                            np.random.default_rng(0))
    assert views.o1.shape == (3,) and float(views.o1.min()) >= 0 and float(views.o2.max()) <= 10
    with pytest.raises(ValueError, match="positions"):
        carl.FrameEmbedder(carl.EmbedderConfig(positions="learned"))
