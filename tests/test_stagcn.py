"""STA-GCN encoder: shapes and strides, masking (padding invariance), BatchNorm on valid frames,
graph convolution against a naive loop, attention maps, gradient flow."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.graph import Graph
from models.stagcn import STAGCN, MaskedBatchNorm, graph_conv

V = 22
# A small encoder: one extractor block and one branch block.
TINY = dict(channels=(16, 32), strides=(1, 2), temporal_kernel=5, num_attention_graphs=2,
            extractor_blocks=1)


def tiny(**overrides) -> STAGCN:
    torch.manual_seed(0)
    return STAGCN(**{**TINY, **overrides})


def padded_batch(lengths, t_max, seed=0, junk=True):
    """Random clips padded to t_max; padded frames hold junk (large values) unless junk=False."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), 6, t_max, V, generator=g)
    mask = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]  # (N, T)
    pad = 1e3 * torch.randn(x.shape, generator=g) if junk else torch.zeros_like(x)
    x = torch.where(mask[:, None, :, None], x, pad)  # (N, T) -> (N, 1, T, 1)
    return x, mask


def warm_up(model: STAGCN, steps: int = 3) -> None:
    """A few train-mode passes so BatchNorm running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for s in range(steps):
            x, mask = padded_batch([12, 7, 20], 20, seed=100 + s)
            model(x, mask)
    model.eval()


# ----------------------------------------------------------------------------- shapes ---------
def test_tiny_output_shapes_and_mask_downsampling():
    model = tiny().eval()
    x, mask = padded_batch([13, 6, 1], 13)
    feats, mask_out, att = model(x, mask)
    assert model.temporal_stride_total == 2 and model.out_channels == 32
    assert feats.shape == (3, 7, V, 32)  # ceil(13 / 2)
    assert mask_out.dtype == torch.bool and mask_out.shape == (3, 7)
    assert mask_out.sum(1).tolist() == [7, 3, 1]  # ceil(13/2), ceil(6/2), ceil(1/2)
    assert att["node"].shape == (3, 7, V) and att["graphs"].shape == (3, 2, V, V)
    assert torch.all(feats[~mask_out] == 0)  # padded output frames are zero
    assert torch.all(att["node"][~mask_out] == 0)
    valid_node = att["node"][mask_out]
    assert torch.all((valid_node > 0) & (valid_node < 1))


def test_default_config_shapes():
    model = STAGCN().eval()
    assert model.channels == (64, 64, 128, 128, 256) and model.strides == (1, 1, 2, 1, 2)
    assert model.temporal_stride_total == 4 and model.out_channels == 256
    x, mask = padded_batch([17, 9], 17)
    feats, mask_out, att = model(x, mask)
    assert feats.shape == (2, 5, V, 256) and mask_out.sum(1).tolist() == [5, 3]
    assert att["graphs"].shape == (2, 4, V, V) and att["node"].shape == (2, 5, V)


@pytest.mark.parametrize("strides,lengths,expected", [
    ((1, 1), [9, 4], [9, 4]),
    ((2, 2), [9, 4, 1], [3, 1, 1]),  # ceil(ceil(9/2)/2) = 3
    ((2, 3), [13, 6], [3, 1]),  # ceil(13/2)=7 -> ceil(7/3)=3; ceil(6/2)=3 -> 1
])
def test_valid_length_follows_strides(strides, lengths, expected):
    model = tiny(strides=strides).eval()
    x, mask = padded_batch(lengths, max(lengths))
    _, mask_out, _ = model(x, mask)
    assert mask_out.sum(1).tolist() == expected
    assert [model.output_length(n) for n in lengths] == expected
    assert mask_out.shape[1] == math.ceil(max(lengths) / model.temporal_stride_total)


def test_default_strides_when_omitted():
    model = STAGCN(channels=(8, 8, 16, 16), strides=None, num_attention_graphs=1)
    assert model.strides == (1, 1, 2, 2) and model.extractor_blocks == 2


def test_accepts_graph_kwargs():
    model = STAGCN(graph={"layout": "smpl22", "strategy": "distance", "max_hop": 2},
                   channels=(8, 16), strides=(1, 2), temporal_kernel=3, num_attention_graphs=1).eval()
    assert model.A.shape == (3, V, V)
    feats, _, att = model(torch.randn(1, 6, 5, V), torch.ones(1, 5, dtype=torch.bool))
    assert feats.shape == (1, 3, V, 16) and att["graphs"].shape == (1, 1, V, V)


@pytest.mark.parametrize("kwargs,match", [
    (dict(in_channels=5), "even"),
    (dict(channels=(8, 16), strides=(1,)), "one entry per block"),
    (dict(channels=(8,), strides=(1,)), "extractor_blocks"),
    (dict(channels=(8, 16), strides=(1, 2), temporal_kernel=4), "odd"),
])
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        STAGCN(**kwargs)


def test_bad_input_shapes():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(N, 6, T, 22\)"):
        model(torch.randn(1, 6, 5, 25))
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(1, 6, 5, 22), torch.ones(1, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- masking --------
@pytest.mark.parametrize("strides", [(1, 1), (1, 2), (2, 2)])
def test_padding_invariance_eval(strides):
    model = tiny(strides=strides)
    warm_up(model)
    lengths = [3, 8, 11, 16]
    x, mask = padded_batch(lengths, 19)  # extra padding beyond the longest clip, junk in it
    with torch.no_grad():
        feats, mask_out, att = model(x, mask)
        for i, n in enumerate(lengths):
            alone, alone_mask, alone_att = model(x[i:i + 1, :, :n], torch.ones(1, n, dtype=torch.bool))
            t_out = alone.shape[1]
            assert t_out == model.output_length(n) == int(mask_out[i].sum())
            torch.testing.assert_close(feats[i, :t_out], alone[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(att["node"][i, :t_out], alone_att["node"][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(att["graphs"][i], alone_att["graphs"][0], atol=1e-5, rtol=0)


def test_padding_invariance_default_config():
    model = STAGCN(channels=(16, 16, 32, 32, 48), temporal_kernel=9)  # default block plan, slimmer
    warm_up(model, steps=1)
    x, mask = padded_batch([6, 21], 23)
    with torch.no_grad():
        feats, _, _ = model(x, mask)
        alone, _, _ = model(x[:1, :, :6], None)
    torch.testing.assert_close(feats[0, :alone.shape[1]], alone[0], atol=1e-5, rtol=0)


def test_train_mode_ignores_padding_amount():
    """With valid-frame BatchNorm statistics, even training outputs ignore how much padding there is."""
    model = tiny()
    model.train()
    lengths = [5, 9, 12]
    x_short, mask_short = padded_batch(lengths, 12, junk=False)
    x_long = torch.cat([x_short, 50 * torch.randn(3, 6, 9, V)], dim=2)  # 9 more junk frames
    mask_long = torch.cat([mask_short, torch.zeros(3, 9, dtype=torch.bool)], dim=1)
    feats_short, m_short, _ = model(x_short, mask_short)
    feats_long, m_long, _ = model(x_long, mask_long)
    t = feats_short.shape[1]
    valid = m_short[..., None, None]  # (N, T') -> (N, T', 1, 1)
    torch.testing.assert_close(feats_long[:, :t] * valid, feats_short * valid, atol=1e-5, rtol=0)


def test_masked_batchnorm_matches_batchnorm_on_valid_frames():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 5)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2], dtype=torch.bool)
    x_junk = torch.where(mask[:, None, :, None], x, torch.full_like(x, 1e4))
    ours, ref = MaskedBatchNorm(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0); ours.bias.uniform_(-1, 1)
        ref.weight.copy_(ours.weight); ref.bias.copy_(ours.bias)
    out = ours.train()(x_junk, mask)
    # Reference: nn.BatchNorm2d on the valid frames laid side by side along time.
    valid = torch.cat([x[i, :, :int(mask[i].sum())] for i in range(3)], dim=1)[None]  # (1, C, sum T, V)
    expected = ref.train()(valid)
    got = torch.cat([out[i, :, :int(mask[i].sum())] for i in range(3)], dim=1)[None]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    torch.testing.assert_close(ours.eval()(x, mask), ref.eval()(x))


def test_masked_batchnorm_parts_normalise_as_one_batch_with_no_gradient_into_the_others():
    """forward_parts([a, b]) gives what forward(cat([a, b])) gives (outputs, running statistics),
    and a's gradient is the one-batch gradient with b a constant; b's output carries no graph."""
    torch.manual_seed(0)
    x = 3 * torch.randn(5, 4, 7, 3) + 1
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    one, parts = MaskedBatchNorm(4), MaskedBatchNorm(4)
    with torch.no_grad():
        one.weight.uniform_(0.5, 2.0); one.bias.uniform_(-1, 1)
    parts.load_state_dict(one.state_dict())
    r = torch.randn(2, 4, 7, 3)
    a_one, a_parts = x[:2].clone().requires_grad_(True), x[:2].clone().requires_grad_(True)
    expected = one.train()(torch.cat([a_one, x[2:]]), mask)
    got = parts.train().forward_parts([a_parts, x[2:].requires_grad_(True)], [mask[:2], mask[2:]])
    torch.testing.assert_close(torch.cat(got), expected, rtol=1e-5, atol=1e-6)
    for name, buffer in one.named_buffers():
        torch.testing.assert_close(parts.get_buffer(name), buffer, rtol=1e-5, atol=1e-6)
    assert not got[1].requires_grad
    (expected[:2] * r).sum().backward()
    (got[0] * r).sum().backward()
    torch.testing.assert_close(a_parts.grad, a_one.grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(torch.cat(parts.eval().forward_parts([x[:2], x[2:]], [mask[:2], mask[2:]])),
                       one.eval()(x, mask))


def test_no_grad_rows_give_the_one_batch_values():
    """The last rows run without gradient: eval mode gives exactly the one-batch features, training
    the same ones up to rounding, with the same running statistics."""
    x, mask = padded_batch([20, 12, 7, 20, 12, 7], 20, seed=5)
    split, one = tiny(channels=(16, 32, 32), strides=(1, 2, 2), extractor_blocks=None), \
        tiny(channels=(16, 32, 32), strides=(1, 2, 2), extractor_blocks=None)
    warm_up(split)
    one.load_state_dict(split.state_dict())
    for mode in ("eval", "train"):
        getattr(split, mode)(), getattr(one, mode)()
        got, got_mask, got_att = split(x, mask, no_grad_rows=3)
        expected, expected_mask, expected_att = one(x, mask)
        assert torch.equal(got_mask, expected_mask)
        if mode == "eval":
            assert torch.equal(got, expected) and torch.equal(got_att["graphs"], expected_att["graphs"])
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_att["node"], expected_att["node"], rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(split.named_buffers(), one.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="no_grad_rows"):
            split(x, mask, no_grad_rows=bad)


def test_inference_on_a_cpu_in_chunks_equals_one_pass(monkeypatch):
    """Eval mode without gradient on a CPU runs CPU_CHUNK rows at a time: the same features,
    masks and attention as one pass over the batch (every row is computed on its own), up to the
    rounding of convolutions run on another number of rows."""
    import models.stagcn as stagcn

    model = tiny().eval()
    warm_up(model)
    x, mask = padded_batch([20, 12, 7, 20, 3], 20, seed=9)
    with torch.no_grad():
        whole = model(x, mask)
        monkeypatch.setattr(stagcn, "CPU_CHUNK", 2)
        calls = []
        original = stagcn.STAGCN._chunked
        monkeypatch.setattr(stagcn.STAGCN, "_chunked", lambda self, *a: calls.append(1) or original(self, *a))
        chunked = model(x, mask)
    assert calls == [1]  # the batch of 5 went through in chunks of 2, 2 and 1
    assert torch.equal(whole[1], chunked[1])
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    for key in ("node", "graphs"):
        torch.testing.assert_close(chunked[2][key], whole[2][key], rtol=1e-5, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------- operators ------
def test_graph_conv_matches_naive_loops():
    torch.manual_seed(0)
    n, k, c, t, v = 2, 3, 4, 5, 6
    x = torch.randn(n, k * c, t, v)
    A = torch.randn(k, v, v)
    A_batched = torch.randn(n, k, v, v)
    expected = torch.zeros(n, c, t, v)
    expected_b = torch.zeros(n, c, t, v)
    for i in range(n):
        for kk in range(k):
            for ch in range(c):
                for w in range(v):
                    for u in range(v):
                        expected[i, ch, :, w] += x[i, kk * c + ch, :, u] * A[kk, u, w]
                        expected_b[i, ch, :, w] += x[i, kk * c + ch, :, u] * A_batched[i, kk, u, w]
    torch.testing.assert_close(graph_conv(x, A), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(graph_conv(x, A_batched), expected_b, atol=1e-5, rtol=1e-5)


def test_attention_graphs_are_masked_softmax_plus_bias():
    model = tiny()
    warm_up(model)
    branch = model.attention
    f = torch.randn(2, 32, 6, V)
    mask = torch.tensor([[1] * 6, [1] * 2 + [0] * 4], dtype=torch.bool)
    with torch.no_grad():
        branch.graph_bias.normal_()
        graphs = branch.attention_graphs(f, mask)
        # Naive reference for sample 1: embeddings of its two valid frames only.
        k, ce = branch.num_graphs, branch.embed_channels
        theta = branch.theta(f[1:, :, :2]).view(k, ce, 2, V)  # (1, K*Ce, 2, V) -> (K, Ce, 2, V)
        phi = branch.phi(f[1:, :, :2]).view(k, ce, 2, V)
        for kk in range(k):
            sim = sum(theta[kk, :, s].T @ phi[kk, :, s] for s in range(2)) / (2 * math.sqrt(ce))
            expected = torch.softmax(sim, dim=0) + branch.graph_bias[kk]
            torch.testing.assert_close(graphs[1, kk], expected, atol=1e-5, rtol=1e-5)
        soft = graphs - branch.graph_bias
        torch.testing.assert_close(soft.sum(dim=-2), torch.ones(2, k, V), atol=1e-5, rtol=0)


def test_node_attention_is_applied_residually():
    """A node map of zeros leaves the perception input unchanged: f * (1 + 0) = f."""
    model = tiny()
    warm_up(model)
    x, mask = padded_batch([6, 4], 6)
    with torch.no_grad():
        feats, _, att = model(x, mask)
        model.attention.node_bn_out.bias.fill_(-1e4)  # sigmoid -> 0
        feats_zero, _, att_zero = model(x, mask)
        half = 3
        # the inner modules take parts (lists of batches; here one)
        (joints,), mask_e = model.joint_stream([x[:, :half] * mask[:, None, :, None]], [mask], model.A)
        (bones,), _ = model.bone_stream([x[:, half:] * mask[:, None, :, None]], [mask], model.A)
        (plain,), _ = model.perception([torch.cat([joints, bones], 1)], mask_e, model.A, [att_zero["graphs"]])
    assert att_zero["node"].abs().max() < 1e-6
    torch.testing.assert_close(feats_zero, plain.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    assert not torch.allclose(feats, feats_zero)


def test_no_attention_graphs_option():
    model = tiny(num_attention_graphs=0).eval()
    feats, _, att = model(torch.randn(1, 6, 4, V))
    assert att["graphs"].shape == (1, 0, V, V) and feats.shape == (1, 2, V, 32)


# ----------------------------------------------------------------------------- training -------
def test_every_parameter_gets_a_gradient():
    model = tiny(dropout=0.1)
    model.train()
    x, mask = padded_batch([10, 6, 3], 10, junk=False)
    feats, mask_out, _ = model(x, mask)
    target = torch.randn_like(feats)
    loss = ((feats - target) ** 2 * mask_out[..., None, None]).mean()  # (N, T') -> (N, T', 1, 1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_a_few_steps_reduce_a_regression_loss():
    torch.manual_seed(0)
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, mask = padded_batch([8, 5], 8, junk=False)
    target = torch.randn(2, 4, V, 32).clamp(min=0)
    losses = []
    for _ in range(15):
        feats, mask_out, _ = model(x, mask)
        loss = ((feats - target) ** 2 * mask_out[..., None, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_graph_buffer_matches_graph():
    g = Graph("smpl22", "distance", max_hop=2)
    model = STAGCN(graph=g, channels=(8, 8), strides=(1, 1), temporal_kernel=3, num_attention_graphs=1)
    torch.testing.assert_close(model.A, torch.tensor(g.A))
    assert "A" not in model.state_dict()  # rebuilt from the config, not stored in checkpoints
