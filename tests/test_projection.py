"""Projection to T5 tokens: values against naive references, masks, padding invariance through the
encoder, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from models.projection import POLICIES, Projection, sinusoidal_positions
from models.stagcn import STAGCN

N, T, V, C, D = 3, 6, 22, 8, 16


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, T, V, C, generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor([6, 4, 1])[:, None]  # (N, T)
    feats = torch.where(mask[:, :, None, None], feats, torch.full_like(feats, 1e6))  # junk padding
    return feats, mask


def projection(policy, **kw):
    torch.manual_seed(0)
    return Projection(C, D, policy=policy, num_joints=V, **kw).eval()


def layer_norm(x, proj):
    return torch.nn.functional.layer_norm(x, (D,), proj.norm.weight, proj.norm.bias, proj.norm.eps)


def frame_table(length, dim):
    return sinusoidal_positions(torch.arange(length), dim)  # (T, D)


def test_sinusoidal_positions_by_formula():
    pe = frame_table(5, 6)
    for t in range(5):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert pe[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    odd = frame_table(4, 5)
    assert odd.shape == (4, 5)  # odd width works: it ends on a sine
    assert odd[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-6)


def test_sinusoidal_positions_of_fractional_positions_in_a_batch():
    positions = torch.tensor([[0.0, 1.5, 3.0], [0.25, 2.0, 7.5]])  # (N, T)
    pe = sinusoidal_positions(positions, 8)
    assert pe.shape == (2, 3, 8) and pe.dtype == torch.float32
    for n in range(2):
        for t in range(3):
            p = positions[n, t].item()
            for i in range(4):
                angle = p / 10000 ** (2 * i / 8)
                assert pe[n, t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
                assert pe[n, t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_time_pool_is_masked_max_plus_joint_embedding():
    proj = projection("time_pool")
    feats, mask = features()
    with torch.no_grad():
        tokens, token_mask = proj(feats, mask)
        assert tokens.shape == (N, V, D) and token_mask.shape == (N, V) and token_mask.all()
        for n in range(N):
            valid = int(mask[n].sum())
            for v in range(V):
                pooled = feats[n, :valid, v].max(dim=0).values  # naive max over valid frames
                expected = layer_norm(proj.linear(pooled) + proj.joint_embedding[v], proj)
                torch.testing.assert_close(tokens[n, v], expected, atol=1e-5, rtol=1e-5)


def test_skeleton_pool_is_joint_mean_with_frame_positions():
    proj = projection("skeleton_pool")
    feats, mask = features()
    with torch.no_grad():
        tokens, token_mask = proj(feats, mask)
        assert tokens.shape == (N, T, D)
        assert torch.equal(token_mask, mask)
        pe = frame_table(T, D)
        for n in range(N):
            for t in range(T):
                if not mask[n, t]:
                    assert torch.all(tokens[n, t] == 0)
                    continue
                pooled = sum(feats[n, t, v] for v in range(V)) / V
                expected = layer_norm(proj.linear(pooled) + pe[t], proj)
                torch.testing.assert_close(tokens[n, t], expected, atol=1e-5, rtol=1e-5)
    assert not hasattr(proj, "joint_embedding")


def test_origin_is_t_major_with_frame_and_joint_positions():
    proj = projection("origin")
    feats, mask = features()
    with torch.no_grad():
        tokens, token_mask = proj(feats, mask)
        assert tokens.shape == (N, T * V, D) and token_mask.shape == (N, T * V)
        pe = frame_table(T, D)
        for n in range(N):
            for t in range(T):
                for v in range(V):
                    i = t * V + v
                    assert bool(token_mask[n, i]) == bool(mask[n, t])
                    if mask[n, t]:
                        expected = layer_norm(proj.linear(feats[n, t, v]) + pe[t]
                                              + proj.joint_embedding[v], proj)
                        torch.testing.assert_close(tokens[n, i], expected, atol=1e-5, rtol=1e-5)
                    else:
                        assert torch.all(tokens[n, i] == 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_padding_invariance_encoder_and_projection(policy):
    """In eval mode a clip alone gives the same tokens as inside a padded batch."""
    torch.manual_seed(0)
    encoder = STAGCN(channels=(16, 32), strides=(1, 2), temporal_kernel=5, num_attention_graphs=2)
    proj = Projection(encoder.out_channels, D, policy=policy, num_joints=V, dropout=0.1)
    encoder.train()
    with torch.no_grad():  # move BatchNorm running statistics off the identity
        for _ in range(2):
            encoder(torch.randn(3, 6, 12, V), torch.ones(3, 12, dtype=torch.bool))
    encoder.eval()
    proj.eval()
    lengths = [2, 7, 12, 15]
    t_max = 17
    x = torch.randn(len(lengths), 6, t_max, V)
    mask = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]  # (N, T)
    x = torch.where(mask[:, None, :, None], x, 1e3 * torch.randn_like(x))  # junk in the padding
    with torch.no_grad():
        tokens, token_mask = proj(*encoder(x, mask)[:2])
        for i, n in enumerate(lengths):
            alone, alone_mask = proj(*encoder(x[i:i + 1, :, :n], None)[:2])
            L = alone.shape[1]
            assert alone_mask.all()
            assert int(token_mask[i].sum()) == L
            assert token_mask[i, :L].all() and not token_mask[i, L:].any()
            torch.testing.assert_close(tokens[i, :L], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_parameter_gets_a_gradient(policy):
    proj = Projection(C, D, policy=policy, num_joints=V, dropout=0.1).train()
    feats, mask = features()
    feats = feats.clamp(max=10).requires_grad_(True)
    tokens, token_mask = proj(feats, mask)
    (tokens * token_mask[..., None]).square().mean().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # Padded frames get no gradient: they never reach a valid token.
    assert torch.all(feats.grad[~mask] == 0)


def test_errors():
    with pytest.raises(ValueError, match="policy"):
        Projection(C, D, policy="mean")
    proj = projection("time_pool")
    with pytest.raises(ValueError, match="feats"):
        proj(torch.randn(1, 4, 21, C), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        proj(torch.randn(1, 4, V, C), torch.ones(1, 5, dtype=torch.bool))
