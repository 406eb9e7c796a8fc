"""Projection of skeleton features ``(N, T, V, C)`` into T5 tokens ``(N, L, D)`` with a token mask.

Policies
--------
* ``time_pool``: max over the VALID frames of every joint (padded frames are excluded, not
  zero-filled), one token per joint: ``L = V``, mask all true.
* ``skeleton_pool``: mean over joints, one token per frame: ``L = T``, mask = frame mask.
* ``origin``: every (frame, joint) pair is a token, t-major (token ``t * V + v``): ``L = T * V``,
  mask = frame mask repeated ``V`` times per frame.

Each token is ``Linear(C -> D)`` of the pooled feature plus a positional term, then LayerNorm and
dropout:

* ``time_pool``: a learned joint embedding ``(V, D)`` (the joints have no order T5 could infer).
* ``skeleton_pool``: fixed sinusoidal frame positions (Vaswani et al.), so any clip length works
  with no maximum; T5's relative attention bias adds relative order on top.
* ``origin``: sinusoidal frame positions plus the learned joint embedding.

Only the embeddings a policy uses are created, so every parameter receives a gradient (DDP without
``find_unused_parameters``). Tokens at padded positions are set to zero; they are also masked out.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from configs.schema import POLICIES
from dataloaders.skeleton import NUM_JOINTS



def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings of (possibly fractional) positions, ``(...,) -> (..., D)`` float32.

    Feature ``2i`` is ``sin(p / 10000^(2i / D))`` and feature ``2i + 1`` its cosine (Vaswani et
    al.); an odd ``D`` ends on a sine.
    """
    rates = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
                      * (-math.log(10000.0) / dim))  # (ceil(D / 2),)
    angles = positions.float()[..., None] * rates  # (...,) -> (..., 1) x (ceil(D / 2),)
    table = torch.empty(*positions.shape, dim, device=positions.device, dtype=torch.float32)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return table  # (..., D)


def _frame_encodings(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Sinusoidal positions of frames ``0..length-1``, ``(T, D)`` on ``like``'s device and dtype."""
    frames = torch.arange(length, device=like.device)  # (T,)
    return sinusoidal_positions(frames, dim).to(like.dtype)  # (T, D)


class Projection(nn.Module):
    """``forward(feats (N, T, V, C), mask (N, T)) -> (tokens (N, L, D), token_mask (N, L) bool)``."""

    def __init__(self, in_channels: int, d_model: int, policy: str = "time_pool",
                 num_joints: int = NUM_JOINTS, dropout: float = 0.0) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"unknown projection policy {policy!r}; expected one of {POLICIES}")
        self.in_channels, self.d_model = in_channels, d_model
        self.policy, self.num_joints = policy, num_joints
        self.linear = nn.Linear(in_channels, d_model)
        if policy in ("time_pool", "origin"):
            self.joint_embedding = nn.Parameter(torch.randn(num_joints, d_model) * 0.02)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _check(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if feats.dim() != 4 or feats.shape[2] != self.num_joints or feats.shape[3] != self.in_channels:
            raise ValueError(f"Projection expects feats (N, T, {self.num_joints}, "
                             f"{self.in_channels}), got {tuple(feats.shape)}")
        if mask is None:
            return torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        if mask.shape != feats.shape[:2]:
            raise ValueError(f"mask must have shape (N, T) = {tuple(feats.shape[:2])}, "
                             f"got {tuple(mask.shape)}")
        return mask.bool()

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self._check(feats, mask)
        if self.policy == "time_pool":
            tokens, token_mask = self._time_pool(feats, mask)
        elif self.policy == "skeleton_pool":
            tokens, token_mask = self._skeleton_pool(feats, mask)
        else:
            tokens, token_mask = self._origin(feats, mask)
        tokens = self.dropout(self.norm(tokens)) * token_mask[..., None].to(tokens.dtype)
        return tokens, token_mask

    def _time_pool(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, v, _ = feats.shape
        hidden = feats.masked_fill(~mask[:, :, None, None], float("-inf"))  # (N, T) -> (N, T, 1, 1)
        pooled = hidden.amax(dim=1)  # (N, T, V, C) -> (N, V, C)
        # A clip with no valid frame would pool to -inf: give it zeros instead.
        pooled = torch.where(mask.any(dim=1)[:, None, None], pooled, torch.zeros_like(pooled))  # (N,) -> (N, 1, 1)
        tokens = self.linear(pooled) + self.joint_embedding  # (N, V, D) + (V, D)
        return tokens, torch.ones(n, v, dtype=torch.bool, device=feats.device)  # L = V

    def _skeleton_pool(self, feats: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        t = feats.shape[1]
        pooled = feats.mean(dim=2)  # (N, T, V, C) -> (N, T, C)
        frames = _frame_encodings(t, self.d_model, feats)  # (T, D)
        return self.linear(pooled) + frames, mask  # (N, L=T, D)

    def _origin(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, v, _ = feats.shape
        frames = _frame_encodings(t, self.d_model, feats)  # (T, D)
        position = frames[:, None, :] + self.joint_embedding[None, :, :]  # (T, 1, D) + (1, V, D) -> (T, V, D)
        tokens = self.linear(feats) + position  # (N, T, V, D)
        tokens = tokens.reshape(n, t * v, self.d_model)  # (N, T, V, D) -> (N, L=T*V, D), t-major
        token_mask = mask.repeat_interleave(v, dim=1)  # (N, T) -> (N, L=T*V)
        return tokens, token_mask
