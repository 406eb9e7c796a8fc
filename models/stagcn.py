"""STA-GCN: a two-stream (joint, bone) spatial temporal attention graph network, as an encoder.

``forward(x (N, C=6, T, V), mask (N, T))`` -> features ``(N, T', V, C_out)``, the output frame
mask ``(N, T')`` and the attention maps ``{"node": (N, T', V), "graphs": (N, K_att, V, V)}``.

A block: graph convolution over the joints with the partitions ``A (K, V, V)`` (and, in the
perception branch, the attention graphs), BatchNorm, ReLU, a temporal convolution (odd kernel,
stride ``s``), BatchNorm, dropout, residual, ReLU: ``(N, C_in, T, V) -> (N, C_out, ceil(T/s), V)``.
The joint channels ``x[:, :3]`` and the bone channels ``x[:, 3:]`` have their own extractor blocks,
whose outputs are concatenated; an attention branch turns that into the node map and the attention
graphs, and a perception branch of the same block plan reads it scaled by ``1 + node``.

Masking invariant: padded frames (at the end of the time axis) never influence valid outputs;
exactly so in eval mode, and in training BatchNorm statistics use valid frames only. Blocks zero
padded frames before the temporal convolution and on their output; the 'same' zero padding of an
odd kernel centres output frame ``t'`` on input frame ``t' * s``, so the mask becomes
``mask[:, ::s]``; reductions over time are masked means.

Rows without gradient (``forward(..., no_grad_rows=k)``, the reference branch's standards): the
last ``k`` samples go through every layer beside the others but under ``torch.no_grad()``, so they
record no autograd graph and cost no backward pass, while each BatchNorm still normalises all rows
together as one batch (in training with the statistics of every row's valid frames, theirs
entering as constants; its running statistics updated once per call). Internally every module
therefore works on *parts*: lists of tensors, one per group of rows, the first as autograd records
it and the others without gradient (:func:`each`); a batch without such rows is a single part.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.graph import Graph


# ============================================================================ helpers =========
def frame_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The frame mask as a broadcastable multiplier: (N, T) -> (N, 1, T, 1) in ``like``'s dtype."""
    return mask[:, None, :, None].to(like.dtype)  # (N, T) -> (N, 1, T, 1)


def downsample_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """Frame mask after a 'same'-padded temporal conv with an odd kernel: keeps frames 0, s, 2s..."""
    return mask[:, ::stride]  # (N, T) -> (N, ceil(T / s))


def each(fn: Callable[..., Any], *parts: Sequence) -> list:
    """``fn`` applied part by part: ``parts`` are lists with one entry per part, and
    ``fn(parts[0][i], parts[1][i], ...)`` is computed for each part ``i``; the first part as autograd
    records it (with gradient where it is enabled), the others under ``torch.no_grad()``."""
    first, *rest = zip(*parts)
    out = [fn(*first)]
    if rest:
        with torch.no_grad():
            out += [fn(*args) for args in rest]
    return out


def joined(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parts as one batch (concatenated along the first axis)."""
    return parts[0] if len(parts) == 1 else torch.cat(list(parts))


def graph_conv(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Sum over subsets of ``x_k @ A_k`` along joints.

    x: (N, K*C, T, V) (a 1x1 conv's output, K blocks of C channels); A: (K, V, V) shared by the
    batch, or (N, K, V, V) one set per sample. Returns (N, C, T, V).
    """
    n, kc, t, v = x.shape
    k = A.shape[-3]
    x = x.view(n, k, kc // k, t, v)  # (N, K*C, T, V) -> (N, K, C, T, V)
    if A.dim() == 3:
        return torch.einsum("nkctv,kvw->nctw", x, A)  # (N, K, C, T, V) x (K, V, V) -> (N, C, T, V)
    return torch.einsum("nkctv,nkvw->nctw", x, A)  # (N, K, C, T, V) x (N, K, V, V) -> (N, C, T, V)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over ``(N, C, T, V)`` whose training statistics use valid frames only.

    Same parameters and buffers as ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var,
    num_batches_tracked). Deliberately NOT a ``_BatchNorm`` subclass, so
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` leaves it alone (statistics stay per process).
    Statistics are computed in float32 also under autocast.

    ``forward(x, mask)`` normalises a batch; ``forward_parts(xs, masks)`` normalises the parts of one
    batch (see the module docstring) together, as their concatenation would be normalised (the same
    numbers up to rounding), except that no gradient flows through the parts after the first:
    their share of the batch statistics is a constant.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V), frame mask (N, T) -> (N, C, T, V)."""
        return self.forward_parts([x], [mask])[0]

    def forward_parts(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Parts ``(N_i, C, T, V)`` with masks ``(N_i, T)`` -> the parts normalised as one batch.

        Training: mean and (biased) variance over every part's valid ``(n, t, v)`` positions. The
        first part's squared deviations are taken from the joint mean; another part's sum of them
        is ``M2_i + n_i (m_i - mean)^2`` (its own mean ``m_i`` and sum ``M2_i`` computed without
        gradient), the same number, written so that the variance's gradient through the joint mean
        is what it is for the concatenated batch (zero) while nothing flows into that part.
        """
        if not self.training:
            return each(lambda x: F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                               False, 0.0, self.eps), xs)
        xfs = each(lambda x: x.float(), xs)
        ws = [frame_weights(m, xf) for m, xf in zip(masks, xfs)]  # (N_i, 1, T, 1)
        counts = [w.sum() * xf.shape[3] for w, xf in zip(ws, xfs)]  # valid (n, t, v) positions per part
        sums = each(lambda xf, w: (xf * w).sum(dim=(0, 2, 3)), xfs, ws)  # (C,) per part
        count, total = counts[0], sums[0]
        for c, s in zip(counts[1:], sums[1:]):
            count, total = count + c, total + s
        count = count.clamp(min=1.0)
        mean = total / count  # (C,)
        centred = each(lambda xf: xf - mean[None, :, None, None], xfs)  # (C,) -> (1, C, 1, 1)
        squares = (centred[0].square() * ws[0]).sum(dim=(0, 2, 3))  # (C,)
        for xf, w, c, s in zip(xfs[1:], ws[1:], counts[1:], sums[1:]):
            with torch.no_grad():
                own_mean = s / c.clamp(min=1.0)  # (C,)
                own_squares = ((xf - own_mean[None, :, None, None]).square() * w).sum(dim=(0, 2, 3))  # (C,)
            squares = squares + own_squares + c * (own_mean - mean).square()
        var = squares / count  # (C,) biased
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1.0)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
            self.num_batches_tracked += 1
        scale = self.weight.float() * torch.rsqrt(var + self.eps)  # (C,)
        bias = self.bias.float()
        return each(lambda c, x: (c * scale[None, :, None, None] + bias[None, :, None, None]).to(x.dtype),
                    centred, xs)  # (C,) -> (1, C, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


# ============================================================================ blocks ==========
class STGCBlock(nn.Module):
    """One ST-GC block: graph conv -> BN -> ReLU -> temporal conv (stride) -> BN -> dropout,
    plus a residual, then ReLU. Optional attention graphs enter through their own 1x1 kernel.

    forward(xs, masks, A (K, V, V), graphs or None): parts (module docstring) x (N_i, C_in, T, V)
    with masks (N_i, T) and graphs (N_i, K_att, V, V) -> (parts y (N_i, C_out, ceil(T / stride), V)
    zero on padded frames, their masks (N_i, ceil(T / stride))).
    """

    def __init__(self, in_channels: int, out_channels: int, num_subsets: int, num_nodes: int, *,
                 stride: int = 1, temporal_kernel: int = 9, dropout: float = 0.0,
                 residual: bool = True, num_attention_graphs: int = 0) -> None:
        super().__init__()
        self.stride = stride
        self.gcn = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)
        self.edge_importance = nn.Parameter(torch.ones(num_subsets, num_nodes, num_nodes))
        self.att_gcn = (nn.Conv2d(in_channels, out_channels * num_attention_graphs, kernel_size=1)
                        if num_attention_graphs > 0 else None)
        self.bn_spatial = MaskedBatchNorm(out_channels)
        self.tcn = nn.Conv2d(out_channels, out_channels, kernel_size=(temporal_kernel, 1),
                             stride=(stride, 1), padding=((temporal_kernel - 1) // 2, 0))
        self.bn_temporal = MaskedBatchNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.residual_mode = ("none" if not residual else
                              "identity" if in_channels == out_channels and stride == 1 else "conv")
        if self.residual_mode == "conv":
            self.res_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1))
            self.res_bn = MaskedBatchNorm(out_channels)

    def residual(self, xs: list[torch.Tensor], masks_out: list[torch.Tensor]) -> list[torch.Tensor | float]:
        if self.residual_mode == "none":
            return [0.0] * len(xs)
        if self.residual_mode == "identity":
            return list(xs)
        return self.res_bn.forward_parts(each(self.res_conv, xs), masks_out)  # 1x1 conv: no mixing across frames

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor], A: torch.Tensor,
                graphs: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        A = A * self.edge_importance  # (K, V, V)
        attend = self.att_gcn is not None and graphs is not None

        def spatial(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            y = graph_conv(self.gcn(x), A)  # (N, C_out, T, V)
            if attend:
                y = y + graph_conv(self.att_gcn(x), g)  # (N, C_out, T, V)
            return y

        def temporal(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            y = F.relu(y)
            y = y * frame_weights(mask, y)  # zero padded frames before the temporal conv
            return self.tcn(y)  # (N, C_out, T, V) -> (N, C_out, ceil(T / s), V)

        def finish(y: torch.Tensor, r: torch.Tensor | float, mask_out: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.dropout(y) + r)
            return y * frame_weights(mask_out, y)

        ys = self.bn_spatial.forward_parts(each(spatial, xs, graphs if attend else [None] * len(xs)), masks)
        ys = each(temporal, ys, masks)
        masks_out = [downsample_mask(m, self.stride) for m in masks]
        ys = self.bn_temporal.forward_parts(ys, masks_out)
        return each(finish, ys, self.residual(xs, masks_out), masks_out), masks_out


class BlockStack(nn.Module):
    """A sequence of ST-GC blocks threading the frame mask through."""

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int],
                 num_subsets: int, num_nodes: int, *, temporal_kernel: int, dropout: float,
                 first_residual: bool = True, num_attention_graphs: int = 0) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            STGCBlock(widths[i], widths[i + 1], num_subsets, num_nodes, stride=strides[i],
                      temporal_kernel=temporal_kernel, dropout=dropout,
                      residual=first_residual or i > 0, num_attention_graphs=num_attention_graphs)
            for i in range(len(channels)))

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor], A: torch.Tensor,
                graphs: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        for block in self.blocks:
            xs, masks = block(xs, masks, A, graphs)
        return xs, masks


class StreamExtractor(nn.Module):
    """Input BatchNorm over (joint, channel) pairs, then the extractor's ST-GC blocks."""

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int],
                 num_subsets: int, num_nodes: int, *, temporal_kernel: int, dropout: float) -> None:
        super().__init__()
        self.data_bn = MaskedBatchNorm(in_channels * num_nodes)
        self.blocks = BlockStack(in_channels, channels, strides, num_subsets, num_nodes,
                                 temporal_kernel=temporal_kernel, dropout=dropout,
                                 first_residual=False)

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor], A: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        def flatten(x: torch.Tensor) -> torch.Tensor:
            n, c, t, v = x.shape
            return x.permute(0, 3, 1, 2).reshape(n, v * c, t, 1)  # (N, C, T, V) -> (N, V*C, T, 1)

        def unflatten(flat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            n, c, t, v = x.shape
            y = flat.view(n, v, c, t).permute(0, 2, 3, 1)  # (N, V*C, T, 1) -> (N, C, T, V)
            return y * frame_weights(mask, y)

        flats = self.data_bn.forward_parts(each(flatten, xs), masks)
        return self.blocks(each(unflatten, flats, xs, masks), masks, A)


class AttentionBranch(nn.Module):
    """ST-GC blocks, then the node attention map and the attention graphs.

    Node map: ``sigmoid(BN(conv1x1(BN(f))))``, ``(N, T', V)``. Graph ``k``: two 1x1 embeddings
    ``theta_k, phi_k`` of width ``C_e``; their joint-by-joint similarity averaged over the valid
    frames and divided by ``sqrt(C_e)``, a softmax over the input joints, plus a learned bias
    ``(V, V)`` that starts at zero.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int],
                 num_subsets: int, num_nodes: int, *, temporal_kernel: int, dropout: float,
                 num_attention_graphs: int) -> None:
        super().__init__()
        width = channels[-1]
        self.num_graphs = num_attention_graphs
        self.num_nodes = num_nodes
        self.embed_channels = max(width // 4, 1)
        self.blocks = BlockStack(in_channels, channels, strides, num_subsets, num_nodes,
                                 temporal_kernel=temporal_kernel, dropout=dropout)
        self.node_bn_in = MaskedBatchNorm(width)
        self.node_conv = nn.Conv2d(width, 1, kernel_size=1, bias=False)
        self.node_bn_out = MaskedBatchNorm(1)
        if num_attention_graphs > 0:
            self.theta = nn.Conv2d(width, num_attention_graphs * self.embed_channels, kernel_size=1)
            self.phi = nn.Conv2d(width, num_attention_graphs * self.embed_channels, kernel_size=1)
            self.graph_bias = nn.Parameter(torch.zeros(num_attention_graphs, num_nodes, num_nodes))

    def node_attention(self, fs: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Parts (N_i, C, T', V) -> (N_i, T', V) in (0, 1), zero on padded frames."""
        a = each(self.node_conv, self.node_bn_in.forward_parts(fs, masks))  # (N_i, 1, T', V)
        a = self.node_bn_out.forward_parts(a, masks)

        def squash(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (torch.sigmoid(a) * frame_weights(mask, a))[:, 0]  # (N, 1, T', V) -> (N, T', V)

        return each(squash, a, masks)

    def attention_graphs(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, C, T', V) -> (N, K_att, V, V): softmax of the masked mean similarity, plus B."""
        n, _, t, v = f.shape
        k, ce = self.num_graphs, self.embed_channels
        if k == 0:
            return f.new_zeros(n, 0, v, v)
        w = frame_weights(mask, f)  # (N, 1, T', 1)
        theta = (self.theta(f) * w).view(n, k, ce, t, v)  # (N, K*Ce, T', V) -> (N, K, Ce, T', V)
        phi = (self.phi(f) * w).view(n, k, ce, t, v)  # (N, K*Ce, T', V) -> (N, K, Ce, T', V)
        frames = mask.sum(dim=1).clamp(min=1).to(f.dtype)  # (N,)
        sim = torch.einsum("nkctv,nkctw->nkvw", theta, phi)  # (N, K, V, V), summed over valid t
        sim = sim / (frames[:, None, None, None] * math.sqrt(ce))  # (N,) -> (N, 1, 1, 1)
        return torch.softmax(sim, dim=-2) + self.graph_bias  # columns of the softmax sum to 1

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor], A: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Parts -> (node maps, attention graphs, masks), one of each per part."""
        fs, masks = self.blocks(xs, masks, A)
        return self.node_attention(fs, masks), each(self.attention_graphs, fs, masks), masks


# ============================================================================ the encoder =====
def default_strides(num_blocks: int, extractor_blocks: int) -> tuple[int, ...]:
    """Stride 2 at the first and at the last block after the extractor, 1 elsewhere."""
    strides = [1] * num_blocks
    strides[extractor_blocks] = 2
    strides[-1] = 2
    return tuple(strides)


def resolve_graph(graph: Graph | Mapping | None) -> Graph:
    if graph is None:
        return Graph()
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, Mapping):
        return Graph(**graph)
    raise TypeError(f"graph must be a models.graph.Graph, a dict of Graph arguments or None, "
                    f"got {type(graph).__name__}")


# Rows an inference forward on a CPU takes at a time: the convolutions' working set of a large batch
# outgrows the caches (configs/boxing.yaml's encoder, 64 clips x 96 frames, one thread: 1.80 s at
# once, 0.83 s as four chunks of 16, 0.84 s as eight of 8).
CPU_CHUNK = 16


class STAGCN(nn.Module):
    """Two-stream STA-GCN encoder (see the module docstring).

    Args:
        in_channels: input channels, split evenly: the first half is the joint stream, the second
            the bone stream (6 = xyz joints + xyz bones).
        graph: a ``Graph``, a dict of ``Graph`` arguments, or None for SMPL-22 / spatial.
        channels: output width of every ST-GC block; the first ``extractor_blocks`` form each
            stream's extractor, the rest the attention branch and (the same plan) the perception
            branch. ``out_channels = channels[-1]``.
        strides: temporal stride per block (same length as ``channels``); None: stride 2 at the
            first and last branch blocks.
        temporal_kernel: odd temporal kernel size.
        dropout: dropout after every temporal conv.
        num_attention_graphs: number of data-dependent attention graphs (0 disables them).
        extractor_blocks: how many leading blocks are per-stream; None: ``len(channels) // 2``.

    forward(x (N, C_in, T, V), mask (N, T) bool or None, no_grad_rows=0) ->
        (feats (N, T', V, C_out) zero on padded frames, mask' (N, T') bool,
         {"node": (N, T', V), "graphs": (N, K_att, V, V)}), ``T' = ceil(T / temporal_stride_total)``.
        With ``0 < no_grad_rows < N`` (and gradient enabled) the last ``no_grad_rows`` samples run
        beside the others under ``torch.no_grad()`` (module docstring): no autograd graph, no
        backward; the values are those of the batch run as one, up to rounding.
    """

    def __init__(self, in_channels: int = 6, graph: Graph | Mapping | None = None,
                 channels: Sequence[int] = (64, 64, 128, 128, 256),
                 strides: Sequence[int] | None = (1, 1, 2, 1, 2), temporal_kernel: int = 9,
                 dropout: float = 0.0, num_attention_graphs: int = 4,
                 extractor_blocks: int | None = None) -> None:
        super().__init__()
        self.graph = resolve_graph(graph)
        channels = tuple(int(c) for c in channels)
        extractor_blocks = len(channels) // 2 if extractor_blocks is None else extractor_blocks
        strides = (default_strides(len(channels), extractor_blocks) if strides is None
                   else tuple(int(s) for s in strides))
        self._check_arguments(in_channels, channels, strides, temporal_kernel, num_attention_graphs,
                              extractor_blocks)
        self.in_channels = in_channels
        self.channels, self.strides = channels, strides
        self.extractor_blocks = extractor_blocks
        self.num_attention_graphs = num_attention_graphs
        self.out_channels = channels[-1]
        self.register_buffer("A", torch.tensor(self.graph.A), persistent=False)
        k, v = self.graph.num_subsets, self.graph.num_nodes
        common = dict(temporal_kernel=temporal_kernel, dropout=dropout)
        ext_c, ext_s = channels[:extractor_blocks], strides[:extractor_blocks]
        branch_c, branch_s = channels[extractor_blocks:], strides[extractor_blocks:]
        half = in_channels // 2
        self.joint_stream = StreamExtractor(half, ext_c, ext_s, k, v, **common)
        self.bone_stream = StreamExtractor(half, ext_c, ext_s, k, v, **common)
        fused = 2 * ext_c[-1]
        self.attention = AttentionBranch(fused, branch_c, branch_s, k, v,
                                         num_attention_graphs=num_attention_graphs, **common)
        self.perception = BlockStack(fused, branch_c, branch_s, k, v,
                                     num_attention_graphs=num_attention_graphs, **common)
        self.branch_stride = math.prod(branch_s)

    @staticmethod
    def _check_arguments(in_channels: int, channels: tuple, strides: tuple, temporal_kernel: int,
                         num_attention_graphs: int, extractor_blocks: int) -> None:
        if in_channels < 2 or in_channels % 2:
            raise ValueError(f"in_channels must be even (joint half + bone half), got {in_channels}")
        if len(strides) != len(channels):
            raise ValueError(f"strides {strides} must have one entry per block of channels {channels}")
        if not 1 <= extractor_blocks < len(channels):
            raise ValueError(f"extractor_blocks must be in 1..{len(channels) - 1} (channels "
                             f"{channels} need at least one extractor and one branch block), "
                             f"got {extractor_blocks}")
        if any(s < 1 for s in strides) or any(c < 1 for c in channels):
            raise ValueError(f"channels {channels} and strides {strides} must be positive")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd (same padding keeps frames aligned with "
                             f"the mask), got {temporal_kernel}")
        if num_attention_graphs < 0:
            raise ValueError(f"num_attention_graphs must be >= 0, got {num_attention_graphs}")

    @property
    def temporal_stride_total(self) -> int:
        """Product of all strides on the path from input to output: ``T' = ceil(T / this)``."""
        return math.prod(self.strides)

    def output_length(self, length: int) -> int:
        """Valid output frames for ``length`` valid input frames."""
        for s in self.strides:
            length = -(-length // s)
        return length

    def _chunked(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Inference on a CPU, :data:`CPU_CHUNK` rows at a time: in eval mode every row is computed
        on its own (BatchNorm uses its running statistics), so the result is the whole batch's up
        to the rounding of convolutions run on another number of rows."""
        outs = [self.forward(x[i:i + CPU_CHUNK], mask[i:i + CPU_CHUNK]) for i in range(0, len(x), CPU_CHUNK)]
        feats, masks, attention = zip(*outs)
        return torch.cat(feats), torch.cat(masks), {k: torch.cat([a[k] for a in attention]) for k in attention[0]}

    def _check_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[3] != self.graph.num_nodes:
            raise ValueError(f"STAGCN expects x of shape (N, {self.in_channels}, T, "
                             f"{self.graph.num_nodes}), got {tuple(x.shape)}")
        if mask is None:
            return torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
        if mask.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"mask must have shape (N, T) = {(x.shape[0], x.shape[2])}, "
                             f"got {tuple(mask.shape)}")
        return mask.bool()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, no_grad_rows: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        mask = self._check_input(x, mask)
        if not self.training and not torch.is_grad_enabled() and x.device.type == "cpu" and len(x) > CPU_CHUNK:
            return self._chunked(x, mask)
        n = x.shape[0] - no_grad_rows
        if not 0 <= no_grad_rows < max(x.shape[0], 1):
            raise ValueError(f"no_grad_rows must be in 0..{x.shape[0] - 1} (some rows keep their gradient), "
                             f"got {no_grad_rows}")
        if no_grad_rows and torch.is_grad_enabled():
            xs, masks = [x[:n], x[n:]], [mask[:n], mask[n:]]  # rows with gradient, rows without
        else:
            xs, masks = [x], [mask]
        xs = each(lambda x, m: x * frame_weights(m, x), xs, masks)  # whatever the padding holds, it is zero from here on
        half = self.in_channels // 2
        joints, masks_e = self.joint_stream(each(lambda x: x[:, :half], xs), masks, self.A)  # (N_i, C_e, T_e, V)
        bones, _ = self.bone_stream(each(lambda x: x[:, half:], xs), masks, self.A)  # (N_i, C_e, T_e, V)
        fused = each(lambda j, b: torch.cat([j, b], dim=1), joints, bones)  # (N_i, 2*C_e, T_e, V)
        node, graphs, _ = self.attention(fused, masks_e, self.A)  # (N_i, T', V), (N_i, K_att, V, V)

        def attend(f: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
            node_e = node.repeat_interleave(self.branch_stride, dim=1)[:, :f.shape[2]]  # (N, T', V) -> (N, T_e, V)
            return f * (1.0 + node_e[:, None])  # (N, T_e, V) -> (N, 1, T_e, V)

        out, masks_out = self.perception(each(attend, fused, node), masks_e, self.A, graphs)  # (N_i, C_out, T', V)
        feats = each(lambda o: o.permute(0, 2, 3, 1), out)  # (N_i, C_out, T', V) -> (N_i, T', V, C_out)
        return joined(feats), joined(masks_out), {"node": joined(node), "graphs": joined(graphs)}
