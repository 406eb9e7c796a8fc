"""A CARL-style contrastive frame embedder for SMPL-22 skeletons.

Model (Chen et al. 2022, "Frame-wise Action Representations for Long Videos via Sequence
Contrastive Learning", adapted from video frames to poses):

* a per-frame pose encoder: an MLP on the flattened ``(C, V)`` pose features of one frame
  (C = 6 joint + bone channels, or 3 joint channels);
* sinusoidal positions (a clip longer than the training views is mapped onto the training range
  with ``linspace``), a pre-LayerNorm transformer encoder (3 layers, width 256, 8 heads,
  feed-forward 1024) and a linear map to a 128-d, L2-normalised frame embedding;
* a projection head used only by the training loss.

Sequence contrastive loss: two augmented views of one clip are cropped and resampled in time;
each view frame carries its time stamp in the original clip (in frames). For frame ``i`` of one
view the target over the frames ``j`` of the other view is the normalised Gaussian
``exp(-(t_i - t_j)^2 / (2 * variance))`` (variance 10 frames^2), and the loss is the cross-entropy
between that target and ``softmax_j(cos(z_i, z_j) / temperature)`` (temperature 0.1), averaged over
the valid frames of both directions. Only the other view of the same clip is in the softmax.

Augmentations (on coordinates ``(N, T, V, 3)``): a small rotation about the vertical axis, a
uniform scale, Gaussian joint jitter, and a speed change folded into the view sampling (the
frames of a view are spaced ``speed`` original frames apart, read by linear interpolation).

A shortcut to watch: two views of one clip share their temporal layout, so frame ``i`` of one view
and frame ``i`` of the other often have close time stamps and the loss can be lowered by encoding
the frame's index alone (sinusoidal positions make that easy). Such an embedder scores a high
Kendall's tau even on a time-reversed clip. ``augment.position_shift`` starts each view's
positions at a random offset so that the index carries no absolute time; ``alignment.report``
prints the reversed-clip control.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataloaders.skeleton import NUM_JOINTS, ROOT, bones
from models.projection import sinusoidal_positions

POSITION_MODES = ("sinusoidal", "none")  # sinusoidal (CARL), or none: order-free context
POSE_CHANNELS = (3, 6)  # joints only, or joints + bones


# ============================================================================ configs =========
@dataclass
class EmbedderConfig:
    """Shape of the frame embedder (the CARL reference settings are the defaults)."""

    channels: int = 6          # 6: joints + bones, 3: joints only
    joints: int = NUM_JOINTS
    pose_hidden: int = 256     # hidden width of the per-frame pose MLP
    width: int = 256           # transformer width D
    layers: int = 3
    heads: int = 8
    ff: int = 1024
    dropout: float = 0.1
    embed_dim: int = 128
    max_positions: int = 48    # view length in training; longer clips are mapped onto it
    positions: str = "sinusoidal"  # "sinusoidal" (CARL) or "none" (order-free context)


@dataclass
class AugmentConfig:
    """Skeleton augmentations and view sampling."""

    rotation_deg: float = 15.0            # uniform in [-r, r] about the vertical axis
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    jitter: float = 0.005                 # std of Gaussian joint noise (data units)
    speed: list[float] = field(default_factory=lambda: [0.8, 1.25])  # original frames per view step
    crop_ratio: list[float] = field(default_factory=lambda: [1.0, 1.5])  # r ~ U: block = ceil(r n)
    max_offset: float = 0.8               # second view's start within +-max_offset * n frames
    position_shift: float = 0.0           # each view's positions start at U(0, shift) (training)
    up_axis: int = 1                      # vertical axis of the coordinates (y in SMPL data)


# ============================================================================ features ========
def pose_features(coords: torch.Tensor, channels: int = 6) -> torch.Tensor:
    """Joint (root-centred on the first frame) and bone channels, ``(N, T, V, 3) -> (N, T, C, V)``.

    Equal to :func:`dataloaders.features.compute_features` with ``normalise="root_first_frame"``
    (transposed); frame 0 of every item must be a real frame.
    """
    if channels not in POSE_CHANNELS:
        raise ValueError(f"channels must be 3 (joints) or 6 (joints + bones), found {channels}")
    joints = coords - coords[:, :1, ROOT:ROOT + 1, :]              # (N, T, V, 3) - (N, 1, 1, 3)
    parts = [joints] if channels == 3 else [joints, bones(joints)]  # (N, T, V, 3) each
    return torch.cat(parts, dim=-1).transpose(2, 3).contiguous()   # (N, T, V, C) -> (N, T, C, V)


# ============================================================================ model ===========
def frame_positions(lengths: torch.Tensor, t_max: int, max_positions: int) -> torch.Tensor:
    """Positions ``(N, T)``: ``0..L-1``, or ``linspace(0, max_positions - 1, L)`` when ``L`` is longer."""
    steps = torch.arange(t_max, dtype=torch.float32, device=lengths.device)[None, :]  # (1, T)
    lengths = lengths.float()[:, None]                                                # (N, 1)
    stretch = torch.where(lengths > max_positions,
                          (max_positions - 1) / (lengths - 1).clamp(min=1), torch.ones_like(lengths))
    return steps * stretch                                                            # (N, T)


class FrameEmbedder(nn.Module):
    """Pose MLP + positions + pre-LN transformer -> L2-normalised frame embeddings."""

    def __init__(self, cfg: EmbedderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or EmbedderConfig()
        if cfg.positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {POSITION_MODES}, found {cfg.positions!r}")
        in_dim = cfg.channels * cfg.joints
        self.pose = nn.Sequential(
            nn.Linear(in_dim, cfg.pose_hidden), nn.LayerNorm(cfg.pose_hidden), nn.GELU(),
            nn.Linear(cfg.pose_hidden, cfg.width))
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.ff, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(cfg.width),
                                             enable_nested_tensor=False)
        self.out = nn.Linear(cfg.width, cfg.embed_dim)
        self.head = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(),
                                  nn.Linear(cfg.embed_dim, cfg.embed_dim))  # training only

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                position_offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (N, T, C, V)``, ``mask (N, T)`` True on real frames -> embeddings ``(N, T, E)``.

        ``position_offset (N,)`` shifts each item's positions (a training augmentation that keeps
        the embedding from reading the frame's index within the view instead of its pose).
        """
        n, t, c, v = x.shape
        if (c, v) != (self.cfg.channels, self.cfg.joints):
            raise ValueError(f"expected pose features (N, T, {self.cfg.channels}, "
                             f"{self.cfg.joints}), found {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(n, t, dtype=torch.bool, device=x.device)
        h = self.pose(x.reshape(n, t, c * v))                       # (N, T, C*V) -> (N, T, D)
        if self.cfg.positions == "sinusoidal":
            pos = frame_positions(mask.sum(1), t, self.cfg.max_positions)  # (N, T)
            if position_offset is not None:
                pos = pos + position_offset[:, None].to(pos.dtype)  # (N, T) + (N, 1)
            h = h + sinusoidal_positions(pos, self.cfg.width)       # (N, T, D)
        h = self.encoder(h, src_key_padding_mask=~mask)             # (N, T, D)
        z = F.normalize(self.out(h), dim=-1)                        # (N, T, E)
        return z.masked_fill(~mask[..., None], 0.0)                # (N, T, E), (N, T, 1)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Projection head for the loss ``(N, T, E) -> (N, T, E)`` (not used for alignment)."""
        return self.head(z)


# ============================================================================ loss ============
def sequence_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, t1: torch.Tensor,
                              t2: torch.Tensor, m1: Optional[torch.Tensor] = None,
                              m2: Optional[torch.Tensor] = None, *, temperature: float = 0.1,
                              variance: float = 10.0) -> torch.Tensor:
    """Symmetric sequence contrastive loss between two views ``z1 (N, T1, E)``, ``z2 (N, T2, E)``.

    ``t1 (N, T1)``, ``t2 (N, T2)`` are the frames' time stamps in the original clip and ``m1``,
    ``m2`` mark real frames. Returns the mean over the real frames of both directions.
    """
    if m1 is None:
        m1 = torch.ones(z1.shape[:2], dtype=torch.bool, device=z1.device)
    if m2 is None:
        m2 = torch.ones(z2.shape[:2], dtype=torch.bool, device=z2.device)
    a, b = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = torch.einsum("nie,nje->nij", a, b) / temperature      # (N, T1, T2)
    dist2 = (t1[:, :, None] - t2[:, None, :]).to(logits.dtype) ** 2   # (N, T1, T2)
    prior = -dist2 / (2.0 * variance)                               # log of unnormalised Gaussian
    pair = m1[:, :, None] & m2[:, None, :]                          # (N, T1, T2)
    loss_12 = _soft_cross_entropy(logits, prior, pair)              # frames of view 1 over view 2
    loss_21 = _soft_cross_entropy(logits.transpose(1, 2), prior.transpose(1, 2),
                                  pair.transpose(1, 2))             # (N, T1, T2) -> (N, T2, T1)
    total = (loss_12 * m1).sum() + (loss_21 * m2).sum()
    return total / (m1.sum() + m2.sum()).clamp(min=1)


def _soft_cross_entropy(logits: torch.Tensor, log_target: torch.Tensor,
                        pair: torch.Tensor) -> torch.Tensor:
    """Per-row ``-sum_j p_j log softmax(logits)_j`` with ``p = softmax(log_target)`` over valid j."""
    log_p = torch.log_softmax(logits.masked_fill(~pair, torch.finfo(logits.dtype).min), dim=-1)
    target = torch.softmax(log_target.masked_fill(~pair, torch.finfo(log_target.dtype).min), dim=-1)
    return -(target * log_p).masked_fill(~pair, 0.0).sum(-1)       # (N, T1)


# ============================================================================ augmentation ====
def vertical_rotation(angles: torch.Tensor, up_axis: int = 1) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` about the ``up_axis`` by ``angles (N,)`` radians."""
    c, s = torch.cos(angles), torch.sin(angles)
    a, b = [k for k in range(3) if k != up_axis]
    rot = torch.zeros(angles.shape[0], 3, 3, dtype=angles.dtype, device=angles.device)
    rot[:, up_axis, up_axis] = 1.0
    rot[:, a, a], rot[:, a, b], rot[:, b, a], rot[:, b, b] = c, -s, s, c
    return rot


def augment_coords(coords: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig,
                   rng: np.random.Generator) -> torch.Tensor:
    """Rotate about the vertical axis, scale and jitter ``coords (N, T, V, 3)`` (per item).

    Rotation and scaling act about the first frame's root, so bone lengths change only by the
    scale factor (and the jitter); padded frames stay zero.
    """
    n = coords.shape[0]
    dtype = coords.dtype
    angles = torch.as_tensor(np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, n)),
                             dtype=dtype)
    scales = torch.as_tensor(rng.uniform(cfg.scale[0], cfg.scale[1], n), dtype=dtype)
    origin = coords[:, :1, :1, :]                                   # (N, 1, 1, 3)
    rot = vertical_rotation(angles, cfg.up_axis)                    # (N, 3, 3)
    out = torch.einsum("ntvc,nkc->ntvk", coords - origin, rot)      # (N, T, V, 3) rotated
    out = out * scales[:, None, None, None]                         # (N, 1, 1, 1) scales
    if cfg.jitter > 0:
        out = out + torch.as_tensor(rng.normal(0.0, cfg.jitter, size=tuple(coords.shape)),
                                    dtype=dtype)
    return (out + origin) * mask[:, :, None, None]                  # (N, T, 1, 1) mask


def interpolate_frames(coords: torch.Tensor, lengths: torch.Tensor,
                       times: torch.Tensor) -> torch.Tensor:
    """Read ``coords (N, T, V, 3)`` at fractional ``times (N, L)`` by linear interpolation."""
    last = (lengths - 1).clamp(min=0)[:, None]                      # (N, 1)
    times = torch.minimum(times.clamp(min=0), last.to(times.dtype))
    lower = times.floor().long()
    upper = torch.minimum(lower + 1, last)
    w = (times - lower.to(times.dtype))[..., None, None].to(coords.dtype)  # (N, L, 1, 1)
    idx = torch.arange(coords.shape[0])[:, None]                    # (N, 1)
    return coords[idx, lower] * (1 - w) + coords[idx, upper] * w    # (N, L, V, 3)


def sample_view_times(length: int, n_frames: int, cfg: AugmentConfig,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Time stamps (original frames, float) of two views of a clip of ``length`` frames.

    Each view has ``n = min(length, n_frames)`` frames drawn sorted, without replacement, from a
    block of ``ceil(r * n)`` slots, ``r ~ U(crop_ratio)``, spaced ``speed ~ U(speed)`` original
    frames apart (compressed when the block would not fit the clip); the second block starts
    within ``max_offset * n`` frames of the first.
    """
    n = min(length, n_frames)
    views, first_start = [], None
    for _ in range(2):
        slots = max(n, math.ceil(rng.uniform(*cfg.crop_ratio) * n))
        spacing = rng.uniform(*cfg.speed)
        if slots > 1:
            spacing = min(spacing, (length - 1) / (slots - 1))
        span = (slots - 1) * spacing
        room = max(length - 1 - span, 0.0)
        if first_start is None:
            start = rng.uniform(0.0, room)
            first_start = start
        else:
            offset = rng.uniform(-cfg.max_offset * n, cfg.max_offset * n)
            start = float(np.clip(first_start + offset, 0.0, room))
        picked = np.sort(rng.choice(slots, size=n, replace=False))
        views.append(start + picked * spacing)
    return views[0], views[1]


@dataclass
class ViewBatch:
    """Two augmented views of a batch of clips as pose features ``(N, L, C, V)``."""

    x1: torch.Tensor
    x2: torch.Tensor
    t1: torch.Tensor   # (N, L) time stamps in original frames
    t2: torch.Tensor
    m1: torch.Tensor   # (N, L) real frames
    m2: torch.Tensor
    o1: Optional[torch.Tensor] = None  # (N,) position offsets
    o2: Optional[torch.Tensor] = None


def pad_clips(clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack clips ``[T_i, V, 3]`` into ``(N, T_max, V, 3)`` (zero padding) and lengths ``(N,)``."""
    lengths = torch.tensor([c.shape[0] for c in clips])
    out = torch.zeros(len(clips), int(lengths.max()), clips[0].shape[1], 3)
    for k, c in enumerate(clips):
        out[k, :c.shape[0]] = torch.as_tensor(c, dtype=torch.float32)
    return out, lengths


def make_views(clips: Sequence[np.ndarray], n_frames: int, channels: int, cfg: AugmentConfig,
               rng: np.random.Generator) -> ViewBatch:
    """Sample, resample and augment two views of every clip and compute their pose features."""
    coords, lengths = pad_clips(clips)                              # (N, T, V, 3), (N,)
    n = len(clips)
    width = min(n_frames, int(lengths.max()))
    times = [np.zeros((n, width)), np.zeros((n, width))]
    masks = [torch.zeros(n, width, dtype=torch.bool), torch.zeros(n, width, dtype=torch.bool)]
    for k in range(n):
        for view, stamps in enumerate(sample_view_times(int(lengths[k]), n_frames, cfg, rng)):
            times[view][k, :stamps.size] = stamps
            times[view][k, stamps.size:] = stamps[-1]
            masks[view][k, :stamps.size] = True
    feats = []
    for view in range(2):
        t = torch.as_tensor(times[view], dtype=torch.float32)
        frames = interpolate_frames(coords, lengths, t)              # (N, L, V, 3)
        frames = augment_coords(frames, masks[view], cfg, rng)
        feats.append(pose_features(frames, channels) * masks[view][:, :, None, None])  # (N, L, C, V)
    offsets = [torch.as_tensor(rng.uniform(0.0, cfg.position_shift, n), dtype=torch.float32)
               if cfg.position_shift > 0 else None for _ in range(2)]
    return ViewBatch(x1=feats[0], x2=feats[1], t1=torch.as_tensor(times[0], dtype=torch.float32),
                     t2=torch.as_tensor(times[1], dtype=torch.float32), m1=masks[0], m2=masks[1],
                     o1=offsets[0], o2=offsets[1])


def training_loss(model: FrameEmbedder, views: ViewBatch, *, temperature: float = 0.1,
                  variance: float = 10.0) -> torch.Tensor:
    """Embed both views, project them and return the sequence contrastive loss."""
    p1 = model.project(model(views.x1, views.m1, views.o1))
    p2 = model.project(model(views.x2, views.m2, views.o2))
    return sequence_contrastive_loss(p1, p2, views.t1, views.t2, views.m1, views.m2,
                                     temperature=temperature, variance=variance)


# ============================================================================ inference =======
@torch.no_grad()
def embed_clips(model: FrameEmbedder, clips: Sequence[np.ndarray], batch_size: int = 32
                ) -> list[np.ndarray]:
    """Frame embeddings ``[T_i, E]`` (float64 numpy) of whole clips ``[T_i, V, 3]``, in eval mode."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for lo in range(0, len(clips), batch_size):
            chunk = clips[lo:lo + batch_size]
            coords, lengths = pad_clips(chunk)                      # (N, T, V, 3)
            mask = torch.arange(coords.shape[1])[None, :] < lengths[:, None]  # (N, T)
            z = model(pose_features(coords, model.cfg.channels), mask)        # (N, T, E)
            out += [z[k, :int(lengths[k])].double().numpy() for k in range(len(chunk))]
    finally:
        model.train(was_training)
    return out


def embedder_state(model: FrameEmbedder) -> dict:
    """What a checkpoint needs to rebuild the embedder: its config and weights."""
    return {"model_config": asdict(model.cfg), "model": model.state_dict()}


def load_embedder(path: str, map_location: str = "cpu") -> FrameEmbedder:
    """Rebuild a trained embedder from a training checkpoint (loaded with ``weights_only=True``)."""
    from core.io import CheckpointError, load_checkpoint

    state = load_checkpoint(path, map_location)
    if "model_config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a CARL embedder checkpoint "
                              f"(expected keys 'model_config' and 'model', found {sorted(state)})")
    model = FrameEmbedder(EmbedderConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model
