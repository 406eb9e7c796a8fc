"""Pictures of clips and runs: skeleton animations, STA-GCN node attention, T5 cross-attention, curves.

    python -m inference.pictures curves results/a results/b --out results/curves.png
    python -m inference.pictures clip --run results/synthetic results/synthetic/data/test.pkl \\
        --video_name test_jab_000_good --standard results/synthetic/data/standard.pkl --out-dir results/pictures

Functions (matplotlib's object-oriented API on the Agg canvas; pyplot's global state is not used):

* :func:`skeleton_animation`: a two-view (front, side) stick figure of a clip, as an animated GIF
  (and MP4 when ffmpeg is found) plus a PNG strip of key frames; with a standard, the learner and
  the standard side by side, the standard time-aligned by the record's ``aligned_*`` fields.
* :func:`node_attention_heatmap`: the STA-GCN node attention ``(T', V)`` of a clip, joint by frame.
* :func:`clip_attention`: generation with T5's cross-attentions: per generated token, the attention
  over the motion tokens (averaged over heads and decoder layers), and the clip's node attention.
* :func:`cross_attention_heatmap`: that matrix, generated words by encoder tokens.
* :func:`training_curves`: loss, learning rate and metrics of one or several runs on one figure,
  from ``metrics.jsonl`` and the TensorBoard event files in ``tb/``.
* :func:`clip_pictures`: all pictures of one clip (the ``clip`` command, ``caption.py --pictures``).

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (for TensorBoard's
``add_figure``); the file writers save it at ``figsize * dpi`` pixels (no tight bounding box).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import re
import shutil
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from dataloaders.records import DataError
from dataloaders.skeleton import SMPL22_JOINT_NAMES, SMPL22_PARENTS

__all__ = [
    "DPI", "require_matplotlib", "up_axis", "aligned_segment", "aligned_standard", "skeleton_animation",
    "node_attention_figure", "node_attention_heatmap", "ClipAttention", "clip_attention",
    "encoder_columns", "sum_to_joints", "cross_attention_figure", "cross_attention_heatmap",
    "read_run_scalars", "training_curves_figure", "training_curves", "clip_pictures",
    "pictures_for_records", "log_attention", "main",
]
log = logging.getLogger(__name__)

DPI = 100
VIEW_PANEL = (3.0, 3.4)  # inches per view panel of the animation
STRIP_PANEL = (1.6, 2.0)  # inches per key frame of the strip
TITLE_HEIGHT = 1.0  # inches reserved for the title (generated / reference texts)
KEY_FRAMES = 6
NODE_FIGSIZE = (9.0, 6.0)
CROSS_FIGSIZE = (10.0, 5.0)
CURVE_PANEL = (4.0, 3.0)
CURVE_COLUMNS = 3
MAX_TICK_LABELS = 40

HEAD, PELVIS, L_ANKLE, R_ANKLE = 15, 0, 7, 8
LEFT_JOINTS = {1, 4, 7, 10, 13, 16, 18, 20}
RIGHT_JOINTS = {2, 5, 8, 11, 14, 17, 19, 21}
SIDE_COLOURS = {"left": "tab:blue", "right": "tab:red", "centre": "0.2"}
METRIC_ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "BERTScore")


# ============================================================================ matplotlib =====
def require_matplotlib() -> None:
    """Raise ImportError with an install hint when matplotlib is missing."""
    try:
        importlib.import_module("matplotlib")
    except ImportError as exc:
        raise ImportError("the pictures need matplotlib: pip install matplotlib") from exc


def new_figure(figsize: tuple[float, float]):
    """A Figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_path: str | Path, dpi: int = DPI) -> Path:
    """Save at exactly ``figsize * dpi`` pixels, creating the folder."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def _wrap(text: str, width_in: float) -> str:
    """Wrap each line of ``text`` to about the figure's width (10 characters per inch)."""
    width = max(20, int(width_in * 10))
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines() if line.strip())


def _fit(text: str, width_in: float, height_in: float) -> str:
    """Wrapped text cut to the lines that fit in ``height_in`` inches (about 6 lines per inch)."""
    lines = _wrap(text, width_in).splitlines()
    keep = max(1, int(height_in * 6))
    return "\n".join(lines[:keep - 1] + [lines[keep - 1] + " ..."] if len(lines) > keep else lines)


# ============================================================================ skeletons ======
def up_axis(coords: np.ndarray) -> tuple[int, float]:
    """(axis, sign) of "up": the axis along which the head sits farthest from the ankles.

    Synthetic and HumanML3D data are y-up; HybrIK camera coordinates (BX) are y-down.
    """
    offset = (coords[:, HEAD] - coords[:, [L_ANKLE, R_ANKLE]].mean(axis=1)).mean(axis=0)  # (3,)
    axis = int(np.argmax(np.abs(offset)))
    return axis, float(np.sign(offset[axis]) or 1.0)


def view_coordinates(coords: np.ndarray, up: tuple[int, float]) -> np.ndarray:
    """``[T, V, 3]`` -> ``[T, V, 3]`` as (horizontal, depth, height): the two other axes, then up.

    A downward up axis is turned by 180 degrees about the horizontal axis (height and depth both
    negated), a rotation, so the figure is not mirrored.
    """
    axis, sign = up
    others = [a for a in range(3) if a != axis]
    out = coords[..., others + [axis]].astype(np.float32)  # (T, V, 3)
    out[..., 1:] *= sign
    return out


def aligned_segment(record: Mapping[str, Any] | None) -> tuple[int, int, int, int] | None:
    """``(start, end, std_start, std_end)`` from a record's ``aligned_*`` fields (end exclusive;
    as the dataset reads them, a missing learner end is ``start + aligned_seq_len`` and a missing
    standard end is the standard's last frame); None without them."""
    if not record:
        return None
    get = record.get
    start, end = get("aligned_start_frame"), get("aligned_end_frame")
    std_start, std_end = get("aligned_std_start_frame"), get("aligned_std_end_frame")
    length = get("aligned_seq_len")
    end = end if end is not None or start is None or length is None else start + length
    # the standard's own end (aligned_standard clips it to the standard); seq_len is the learner's
    std_end = std_end if std_end is not None or std_start is None else sys.maxsize
    if None in (start, end, std_start, std_end):
        return None
    return int(start), int(end), int(std_start), int(std_end)


def aligned_standard(standard: np.ndarray, length: int,
                     segment: tuple[int, int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """The standard shown beside each of the learner's ``length`` frames.

    Inside the learner's segment ``[start, end)`` the standard's segment ``[std_start, std_end)`` is
    linearly resampled to the learner segment's length (first and last frames kept, as
    :func:`dataloaders.features.resample_time` does); before / after it the standard holds its
    segment's first / last frame. Without a segment the whole standard is resampled to ``length``.

    Returns (``[length, V, 3]`` standard poses, ``[length]`` bool: inside the aligned segment).
    """
    n_std = standard.shape[0]
    start, end, std_start, std_end = segment if segment is not None else (0, length, 0, n_std)
    end, std_end = min(end, length), min(std_end, n_std)
    t = np.arange(length, dtype=np.float64)
    progress = np.clip((t - start) / max(end - 1 - start, 1), 0.0, 1.0)  # (length,) 0..1 in the segment
    position = std_start + progress * (std_end - 1 - std_start)  # fractional standard frame
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_std - 1)
    weight = (position - lower)[:, None, None].astype(np.float32)  # (length, 1, 1)
    poses = standard[lower] * (1.0 - weight) + standard[upper] * weight  # (length, V, 3)
    inside = (t >= start) & (t < end)
    return poses.astype(np.float32), inside


def _bone_segments(pose: np.ndarray, dims: tuple[int, int]) -> list[np.ndarray]:
    """Line segments ``[[parent_xy], [joint_xy]]`` of one pose ``[V, 3]`` in the view ``dims``."""
    return [pose[[parent, joint]][:, dims] for joint, parent in enumerate(SMPL22_PARENTS) if parent >= 0]


def _bone_colours() -> list[str]:
    side = ["left" if j in LEFT_JOINTS else "right" if j in RIGHT_JOINTS else "centre"
            for j, p in enumerate(SMPL22_PARENTS) if p >= 0]
    return [SIDE_COLOURS[s] for s in side]


def _view_limits(poses: np.ndarray, dims: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Square limits (equal scale on both axes) holding every frame of ``poses [T, V, 3]``."""
    lo = poses[..., list(dims)].reshape(-1, 2).min(axis=0)
    hi = poses[..., list(dims)].reshape(-1, 2).max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.1, 1e-3)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


VIEWS = (("front", (0, 2)), ("side", (1, 2)))  # (name, (horizontal dim, up dim)) of view_coordinates


def _draw_view(ax, poses: np.ndarray, dims: tuple[int, int], name: str):
    """An axes showing frame 0 of ``poses``; returns its LineCollection to update per frame."""
    from matplotlib.collections import LineCollection

    lines = LineCollection(_bone_segments(poses[0], dims), colors=_bone_colours(), linewidths=2.0)
    ax.add_collection(lines)
    xlim, ylim = _view_limits(poses, dims)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(name, fontsize=9)
    return lines


def _sequences(coords: np.ndarray, standard: np.ndarray | None,
               segment: tuple[int, int, int, int] | None) -> list[tuple[str, np.ndarray]]:
    """(label, view poses [T, V, 3]) of the learner and, when given, its aligned standard."""
    up = up_axis(coords)
    shown = [("learner", view_coordinates(coords, up))]
    if standard is not None:
        poses, _ = aligned_standard(standard, len(coords), segment)
        shown.append(("standard", view_coordinates(poses, up_axis(standard))))
    return shown


def skeleton_strip_figure(coords: np.ndarray, title: str = "", standard: np.ndarray | None = None,
                          segment: tuple[int, int, int, int] | None = None, key_frames: int = KEY_FRAMES):
    """Front views of ``key_frames`` evenly spaced frames; a second row for the aligned standard."""
    shown = _sequences(coords, standard, segment)
    frames = np.unique(np.linspace(0, len(coords) - 1, key_frames).round().astype(int))
    width = STRIP_PANEL[0] * len(frames)
    fig = new_figure((width, STRIP_PANEL[1] * len(shown) + TITLE_HEIGHT))
    grid = fig.add_gridspec(len(shown), len(frames), top=1 - TITLE_HEIGHT / fig.get_figheight(),
                            bottom=0.02, left=0.02, right=0.98, hspace=0.25, wspace=0.05)
    inside = (aligned_standard(standard, len(coords), segment)[1] if standard is not None
              else np.ones(len(coords), bool))
    for row, (label, poses) in enumerate(shown):
        for col, t in enumerate(frames):
            ax = fig.add_subplot(grid[row, col])
            lines = _draw_view(ax, poses, VIEWS[0][1], f"{label} {t}" if col == 0 else f"frame {t}")
            lines.set_segments(_bone_segments(poses[t], VIEWS[0][1]))
            if label == "standard" and not inside[t]:
                lines.set_alpha(0.35)  # outside the aligned segment: the standard is held still
    if title:
        fig.suptitle(_fit(title, width, TITLE_HEIGHT), fontsize=8, y=0.995, va="top")
    return fig


def _write_gif(fig, show, n_frames: int, moving: Sequence[Any], out: Path, fps: int, dpi: int) -> Path:
    """Write ``n_frames`` frames of ``fig`` (``show(t)`` updates the ``moving`` artists) as a GIF.

    The still parts (axes, titles) are drawn once and kept; each frame restores them and draws
    only the moving artists over them (Agg blitting), so a frame costs one small draw instead of
    the two full redraws matplotlib's ``FuncAnimation.save`` makes. Frames are quantised with
    Pillow's fast octree method (the default median cut costs more than drawing the frames).
    """
    from PIL import Image

    fast_octree = getattr(getattr(Image, "Quantize", None), "FASTOCTREE", 2)  # the enum is Pillow >= 9.1
    fig.set_dpi(dpi)
    canvas = fig.canvas
    for artist in moving:
        artist.set_animated(True)  # left out of canvas.draw(): the background holds the still parts only
    try:
        canvas.draw()
        background = canvas.copy_from_bbox(fig.bbox)
        frames = []
        for t in range(n_frames):
            show(t)
            canvas.restore_region(background)
            for artist in moving:
                fig.draw_artist(artist)
            rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3) view of the canvas
            frames.append(Image.fromarray(np.ascontiguousarray(rgb)).quantize(colors=64, method=fast_octree))
    finally:
        for artist in moving:
            artist.set_animated(False)
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return out


def skeleton_animation(coords: np.ndarray, out_path: str | Path, title: str = "",
                       standard: np.ndarray | None = None, aligned: Mapping[str, Any] | None = None,
                       fps: int = 20, dpi: int = DPI, key_frames: int = KEY_FRAMES,
                       mp4: bool | None = None) -> dict[str, Path]:
    """Animate a clip ``[T, 22, 3]`` (front and side views) and draw a strip of key frames.

    Args:
        coords: the learner's joints ``[T, 22, 3]`` (any up axis; it is detected).
        out_path: the GIF's path; the strip goes to ``<stem>_frames.png``, an MP4 to ``<stem>.mp4``.
        title: text above the figure, e.g. "generated: ...\\nreference: ...".
        standard: the standard's joints ``[S, 22, 3]``, shown beside the learner.
        aligned: a record (or mapping) with ``aligned_{start,end,std_start,std_end}_frame``: the
            standard's segment is resampled onto the learner's; without it, the whole standard is
            resampled onto the whole clip.
        mp4: also write an MP4 (None: when ffmpeg is found).

    Returns ``{"gif": path, "png": path[, "mp4": path]}``; the GIF has one frame per clip frame.
    """
    from matplotlib.animation import FFMpegWriter, FuncAnimation

    coords = np.asarray(coords, dtype=np.float32)
    out = Path(out_path).with_suffix(".gif")
    out.parent.mkdir(parents=True, exist_ok=True)
    segment = aligned_segment(aligned) if standard is not None else None
    shown = _sequences(coords, standard, segment)
    inside = (aligned_standard(standard, len(coords), segment)[1] if standard is not None
              else np.ones(len(coords), bool))
    width = VIEW_PANEL[0] * 2 * len(shown)
    fig = new_figure((width, VIEW_PANEL[1] + TITLE_HEIGHT))
    grid = fig.add_gridspec(1, 2 * len(shown), top=1 - TITLE_HEIGHT / fig.get_figheight(),
                            bottom=0.08, left=0.02, right=0.98, wspace=0.05)
    panels = []
    for i, (label, poses) in enumerate(shown):
        for j, (view, dims) in enumerate(VIEWS):
            ax = fig.add_subplot(grid[0, 2 * i + j])
            panels.append((label, poses, dims, _draw_view(ax, poses, dims, f"{label}: {view}")))
    if title:
        fig.suptitle(_fit(title, width, TITLE_HEIGHT), fontsize=9, y=0.995, va="top")
    counter = fig.text(0.02, 0.02, "", fontsize=9)

    def show(t: int):
        for label, poses, dims, lines in panels:
            lines.set_segments(_bone_segments(poses[t], dims))
            if label == "standard":
                lines.set_alpha(1.0 if inside[t] else 0.35)
        note = "" if inside[t] else "   (standard held: outside the aligned segment)"
        counter.set_text(f"frame {t + 1}/{len(coords)}{note}")  # also keeps GIF frames distinct
        return [p[3] for p in panels] + [counter]

    written = {"gif": _write_gif(fig, show, len(coords), [p[3] for p in panels] + [counter], out, fps, dpi)}
    if mp4 or (mp4 is None and shutil.which("ffmpeg") and FFMpegWriter.isAvailable()):
        written["mp4"] = out.with_suffix(".mp4")
        animation = FuncAnimation(fig, show, frames=len(coords), blit=False, repeat=False)
        animation.save(written["mp4"], writer=FFMpegWriter(fps=fps), dpi=dpi)
    strip = skeleton_strip_figure(coords, title, standard, segment, key_frames)
    written["png"] = save_figure(strip, out.with_name(out.stem + "_frames.png"), dpi)
    return written


# ============================================================================ node attention =
def node_attention_figure(node: np.ndarray, joint_names: Sequence[str] = SMPL22_JOINT_NAMES,
                          frame_stride: int = 1, frame_offset: int = 0, title: str = "",
                          figsize: tuple[float, float] = NODE_FIGSIZE):
    """Heat map of node attention ``(T', V)`` (valid frames only): joints down, frames across."""
    node = np.asarray(node, dtype=np.float32)
    if node.ndim != 2 or node.shape[1] != len(joint_names):
        raise ValueError(f"node attention: expected (T', {len(joint_names)}), found {node.shape}")
    fig = new_figure(figsize)
    ax = fig.add_axes((0.17, 0.1, 0.7, 0.8))
    image = ax.imshow(node.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(joint_names)))
    ax.set_yticklabels(joint_names, fontsize=7)
    ticks = _tick_positions(node.shape[0])
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(frame_offset + t * frame_stride) for t in ticks], fontsize=7)
    ax.set_xlabel(f"input frame (one column per {frame_stride} frames)" if frame_stride > 1 else "frame")
    ax.set_title(title or "STA-GCN node attention", fontsize=9)
    colourbar = fig.add_axes((0.89, 0.1, 0.02, 0.8))
    fig.colorbar(image, cax=colourbar)
    return fig


def node_attention_heatmap(node: np.ndarray, out_path: str | Path,
                           joint_names: Sequence[str] = SMPL22_JOINT_NAMES, frame_stride: int = 1,
                           frame_offset: int = 0, title: str = "",
                           figsize: tuple[float, float] = NODE_FIGSIZE, dpi: int = DPI) -> Path:
    """Write :func:`node_attention_figure` to ``out_path`` (PNG of ``figsize * dpi`` pixels)."""
    return save_figure(node_attention_figure(node, joint_names, frame_stride, frame_offset, title, figsize),
                       out_path, dpi)


def _tick_positions(n: int) -> list[int]:
    step = max(1, math.ceil(n / MAX_TICK_LABELS))
    return list(range(0, n, step))


# ============================================================================ cross-attention
@dataclass
class ClipAttention:
    """What the captioner attended to while writing one clip's caption.

    ``cross[i, j]``: attention of generated token ``i`` over motion token ``j`` (prompt and
    retrieved-text tokens dropped, rows renormalised to sum to 1; ``prefix_share[i]`` is the mass
    those non-motion tokens had);
    ``columns`` name the motion tokens (joints for time_pool, frames for skeleton_pool,
    frame:joint for origin); ``node`` is the STA-GCN node attention of the valid frames.
    """

    video_name: str
    text: str
    token_ids: list[int]
    words: list[str]
    cross: np.ndarray  # (W, L_motion)
    prefix_share: np.ndarray  # (W,)
    columns: list[str]
    node: np.ndarray  # (T', V)
    frame_stride: int
    policy: str
    extra: dict = field(default_factory=dict)


@contextmanager
def eager_attention(t5: Any) -> Iterator[None]:
    """Run T5 with eager attention (SDPA returns no attention weights), then switch back."""
    before = getattr(t5.config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(t5, "set_attn_implementation"):  # older T5: eager only
        yield
        return
    t5.set_attn_implementation("eager")
    try:
        yield
    finally:
        t5.set_attn_implementation(before)


def _mean_layers(per_layer: Sequence[torch.Tensor], layers: str) -> torch.Tensor:
    """Stack ``(N, H, Q, L)`` per decoder layer, average the chosen layers and the heads: (N, Q, L)."""
    stacked = torch.stack(list(per_layer), dim=0)  # (layers, N, H, Q, L)
    chosen = stacked[-1:] if layers == "last" else stacked
    return chosen.float().mean(dim=(0, 2))  # (N, Q, L)


def cross_attention_of(t5: Any, generated: Any, embeds: torch.Tensor, mask: torch.Tensor,
                       layers: str = "all") -> torch.Tensor:
    """Cross-attention ``(N, W, L)`` behind ``generated.sequences`` ``(N, 1 + W)``.

    Greedy or sampled output (one hypothesis per clip) brings its per-step attentions; for beam
    search, whose per-step attentions belong to beams that were later reordered, the finished
    sequences are passed through T5 once more, teacher-forced (the decoder is causal, so this gives
    the same attention as generation did).
    """
    steps = getattr(generated, "cross_attentions", None)
    if steps and getattr(generated, "beam_indices", None) is None:
        rows = [_mean_layers(step, layers)[:, -1] for step in steps]  # W x (N, L): the newest query
        return torch.stack(rows, dim=1)  # (N, W, L)
    out = t5(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=generated.sequences[:, :-1],
             output_attentions=True, return_dict=True)
    return _mean_layers(out.cross_attentions, layers)  # (N, W, L)


def encoder_columns(policy: str, num_tokens: int, frame_stride: int = 1,
                    joint_names: Sequence[str] = SMPL22_JOINT_NAMES, frame_offset: int = 0) -> list[str]:
    """Names of the motion tokens: joints (time_pool), input frames (skeleton_pool), frame:joint (origin)."""
    if policy == "time_pool":
        return list(joint_names)[:num_tokens]
    if policy == "skeleton_pool":
        return [f"t{frame_offset + t * frame_stride}" for t in range(num_tokens)]
    v = len(joint_names)
    return [f"t{frame_offset + (k // v) * frame_stride}:{joint_names[k % v]}" for k in range(num_tokens)]


def sum_to_joints(matrix: np.ndarray, num_joints: int = len(SMPL22_JOINT_NAMES)) -> np.ndarray:
    """Origin-policy attention ``(W, T' * V)`` (t-major tokens) summed over frames: ``(W, V)``."""
    w, n = matrix.shape
    return matrix.reshape(w, n // num_joints, num_joints).sum(axis=1)  # (W, T'*V) -> (W, T', V) -> (W, V)


def _words(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    return [p.replace("\u2581", " ").strip() or p for p in pieces]


@torch.no_grad()
def clip_attention(model: Any, batch: Mapping[str, Any], layers: str = "all",
                   **generate: Any) -> list[ClipAttention]:
    """Caption a batch with T5's attentions switched on; one :class:`ClipAttention` per clip.

    ``model.encode`` gives the encoder inputs (and the node attention), ``model.t5.generate`` the
    caption with ``output_attentions=True, return_dict_in_generate=True``. ``generate`` takes
    T5.generate arguments (num_beams, do_sample, max_new_tokens; one sequence per clip).
    """
    if layers not in ("all", "last"):
        raise ValueError(f"layers must be 'all' or 'last', got {layers!r}")
    generate = {"max_new_tokens": 64, **generate, "num_return_sequences": 1}
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model.t5):
            embeds, mask = model.encode(batch)  # (N, L, D), (N, L)
            node = model.last_attention["node"].float().cpu().numpy()  # (N, T', V)
            generated = model.t5.generate(inputs_embeds=embeds, attention_mask=mask, output_attentions=True,
                                          return_dict_in_generate=True, **generate)
            cross = cross_attention_of(model.t5, generated, embeds, mask, layers).cpu().numpy()  # (N, W, L)
    finally:
        model.train(was_training)
    return [_one_clip(model, batch, i, generated.sequences[i, 1:].tolist(), cross[i], mask[i].cpu().numpy(),
                      node[i]) for i in range(len(batch["video_names"]))]


def _one_clip(model: Any, batch: Mapping[str, Any], i: int, ids: list[int], cross: np.ndarray,
              mask: np.ndarray, node: np.ndarray) -> ClipAttention:
    """Trim clip ``i``'s attention to its tokens (through the first EOS) and its valid motion tokens."""
    eos = model.t5.config.eos_token_id
    n_words = ids.index(eos) + 1 if eos in ids else len(ids)
    ids = ids[:n_words]
    prefix = int(model.prefix_ids.numel())
    end = cross.shape[1] - (batch["retrieved_ids"].shape[1] if batch.get("retrieved_ids") is not None else 0)
    rows = cross[:n_words]  # (W, L): prompt, motion tokens, retrieved texts
    valid = mask[prefix:end].astype(bool)  # (L_motion,): padded frames are masked out
    motion = rows[:, prefix:end][:, valid]  # (W, L_motion)
    motion = motion / np.clip(motion.sum(axis=1, keepdims=True), 1e-12, None)
    stride = int(getattr(model.encoder, "temporal_stride_total", 1))
    frames = model.encoder.output_length(int(batch["lengths"][i])) if hasattr(model.encoder, "output_length") \
        else node.shape[0]
    policy = model.projection.policy
    text = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return ClipAttention(video_name=batch["video_names"][i], text=text, token_ids=ids,
                         words=_words(model.tokenizer, ids), cross=motion.astype(np.float32),
                         prefix_share=(rows[:, :prefix].sum(axis=1) + rows[:, end:].sum(axis=1)).astype(np.float32),
                         columns=encoder_columns(policy, motion.shape[1], stride), node=node[:frames],
                         frame_stride=stride, policy=policy)


_warned_no_matplotlib: list[bool] = []


def log_attention(writer: Any, model: Any, batch: Mapping[str, Any], step: int, num_beams: int = 1,
                  max_new_tokens: int = 48) -> None:
    """Node- and cross-attention figures of a batch's clips into TensorBoard (a warning, once,
    and nothing else when matplotlib is missing)."""
    try:
        require_matplotlib()
    except ImportError as exc:
        if not _warned_no_matplotlib:
            _warned_no_matplotlib.append(True)
            log.warning("attention pictures are not logged: %s", exc)
        return
    for attn in clip_attention(model, batch, num_beams=num_beams, max_new_tokens=max_new_tokens):
        matrix, columns = attention_for_display(attn)
        writer.add_figure(f"attention/node/{attn.video_name}", node_attention_figure(
            attn.node, frame_stride=attn.frame_stride, title=f"{attn.video_name}: node attention"), step)
        writer.add_figure(f"attention/cross/{attn.video_name}", cross_attention_figure(
            matrix, attn.words, columns, title=f"{attn.video_name}: {attn.text}"), step)


def cross_attention_figure(matrix: np.ndarray, words: Sequence[str], columns: Sequence[str], title: str = "",
                           figsize: tuple[float, float] = CROSS_FIGSIZE):
    """Heat map of cross-attention ``(W, L)``: generated words down, encoder tokens across."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.shape != (len(words), len(columns)):
        raise ValueError(f"cross-attention: matrix {matrix.shape} does not match {len(words)} words x "
                         f"{len(columns)} columns")
    fig = new_figure(figsize)
    ax = fig.add_axes((0.12, 0.25, 0.76, 0.65))
    image = ax.imshow(matrix, aspect="auto", cmap="magma", vmin=0.0, interpolation="nearest")
    ax.set_yticks(range(len(words)))
    ax.set_yticklabels(words, fontsize=7)
    ticks = _tick_positions(len(columns))
    ax.set_xticks(ticks)
    ax.set_xticklabels([columns[t] for t in ticks], rotation=90, fontsize=7)
    ax.set_title(_fit(title or "T5 cross-attention", figsize[0] * 0.76, 0.5), fontsize=8)
    colourbar = fig.add_axes((0.9, 0.25, 0.02, 0.65))
    fig.colorbar(image, cax=colourbar)
    return fig


def cross_attention_heatmap(matrix: np.ndarray, words: Sequence[str], columns: Sequence[str],
                            out_path: str | Path, title: str = "",
                            figsize: tuple[float, float] = CROSS_FIGSIZE, dpi: int = DPI) -> Path:
    """Write :func:`cross_attention_figure` to ``out_path`` (PNG of ``figsize * dpi`` pixels)."""
    return save_figure(cross_attention_figure(matrix, words, columns, title, figsize), out_path, dpi)


def attention_for_display(attn: ClipAttention) -> tuple[np.ndarray, list[str]]:
    """The matrix and column names to draw: origin's frame x joint tokens are summed to joints."""
    if attn.policy == "origin":
        return sum_to_joints(attn.cross), list(SMPL22_JOINT_NAMES)
    return attn.cross, attn.columns


# ============================================================================ training curves
def _read_metrics_jsonl(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {n} is not JSON ({exc})") from None
    return rows


def _read_tensorboard(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tag: (steps, values)}`` of every scalar in ``run/tb`` (the last value wins per step)."""
    folder = run / "tb"
    if not folder.is_dir() or not any(folder.iterdir()):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {event.step: event.value for event in acc.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.int64)
        scalars[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return scalars


SPLITS = ("val", "test")  # the evaluated splits in a metrics.jsonl line


def _flatten_metrics(row: dict) -> dict[str, float]:
    """``{"val/CIDEr": ..., "test/CIDEr": ..., "train/epoch_loss": ...}`` of one metrics.jsonl line."""
    flat = {f"{split}/{k}": v for split in SPLITS if isinstance(row.get(split), dict)
            for k, v in row[split].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if isinstance(row.get("train_loss"), (int, float)):
        flat["train/epoch_loss"] = row["train_loss"]
    return flat


def read_run_scalars(run_dir: str | Path) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """``{name: (x label, x, y)}`` of a run: ``train/*`` from TensorBoard against the step, the
    metrics of each evaluated split (``val/*``, ``test/*``) and the epoch's mean loss from
    ``metrics.jsonl`` against the epoch (from TensorBoard against the step when there is no
    metrics.jsonl)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    scalars = _read_tensorboard(run)
    rows = [(row["epoch"], _flatten_metrics(row)) for row in _read_metrics_jsonl(run) if "epoch" in row]
    if not scalars and not rows:
        raise FileNotFoundError(f"{run}: neither metrics.jsonl nor TensorBoard events in tb/ (has it trained?)")
    from_jsonl = {name for _, flat in rows for name in flat}
    series = {tag: ("step", s, v) for tag, (s, v) in scalars.items() if tag not in from_jsonl}
    for name in sorted(from_jsonl):
        points = [(epoch, flat[name]) for epoch, flat in rows if name in flat]
        x, y = (np.array(p, dtype=np.float64) for p in zip(*points))
        series[name] = ("epoch", x, y)
    return series


def _panel_order(names: set[str]) -> list[str]:
    first = ["train/loss", "train/lr", "train/grad_norm"] + [f"{split}/{m}" for split in SPLITS for m in METRIC_ORDER]
    return [n for n in first if n in names] + sorted(names - set(first))


def _run_labels(run_dirs: Sequence[Path]) -> list[str]:
    names = [p.name or str(p) for p in run_dirs]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(run_dirs, names)]


def training_curves_figure(run_dirs: Sequence[str | Path]):
    """One panel per scalar (loss, lr, grad norm, metrics), one line per run."""
    from matplotlib.ticker import MaxNLocator

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("training_curves: no run folders given")
    data = [read_run_scalars(r) for r in runs]
    panels = _panel_order(set().union(*data))
    ncols = min(CURVE_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure((CURVE_PANEL[0] * ncols, CURVE_PANEL[1] * nrows))
    grid = fig.add_gridspec(nrows, ncols, left=0.08, right=0.98, top=0.93, bottom=0.08, hspace=0.55, wspace=0.3)
    for k, name in enumerate(panels):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        for label, series in zip(_run_labels(runs), data):
            if name in series:
                xlabel, x, y = series[name]
                ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=label)
                ax.set_xlabel(xlabel, fontsize=8)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if name == "train/lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(runs), 4), fontsize=8, frameon=False)
    return fig


def training_curves(run_dirs: Sequence[str | Path], out_path: str | Path, dpi: int = DPI) -> Path:
    """Write :func:`training_curves_figure` (``CURVE_PANEL`` inches per panel, 3 per row)."""
    return save_figure(training_curves_figure(run_dirs), out_path, dpi)


# ============================================================================ a clip's pictures
def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def clip_pictures(model: Any, cfg: Any, record: Mapping[str, Any],
                  standards: Mapping[str, np.ndarray] | None, out_dir: str | Path, *, segment: str = "auto",
                  layers: str = "all", mp4: bool | None = None, **generate: Any) -> dict[str, Path]:
    """Skeleton GIF + key-frame strip, node attention and cross-attention PNGs of one clip.

    The clip goes through the same features as captioning (:mod:`inference.decode`), so the
    caption in the titles is the one the model writes (greedy unless ``generate`` says otherwise).
    Also writes ``<name>_attention.npz`` (cross, words, columns, node) for further analysis.
    """
    from inference import inputs

    dataset = inputs.build_dataset(model, cfg, [dict(record)], standards, segment)
    device = next(model.parameters()).device
    batch = next(inputs.iter_batches(dataset, 1, device, inputs.collator_for(model, cfg)))
    attn = clip_attention(model, batch, layers=layers, **generate)[0]
    offset = int(record.get(f"{dataset.segment}_start_frame") or 0) if dataset.segment != "none" else 0
    out, stem = Path(out_dir), _safe_stem(attn.video_name)
    references = record.get("labels") or []
    title = f"{attn.video_name}\ngenerated: {attn.text or '(empty)'}" + (
        f"\nreference: {references[0]}" if references else "")
    standard = standards.get(record.get("motion_type")) if standards else None
    written = skeleton_animation(record["coordinates"], out / f"{stem}.gif", title=title, standard=standard,
                                 aligned=record, mp4=mp4)
    written["node"] = node_attention_heatmap(attn.node, out / f"{stem}_node_attention.png",
                                             frame_stride=attn.frame_stride, frame_offset=offset,
                                             title=f"{attn.video_name}: STA-GCN node attention")
    matrix, columns = attention_for_display(attn)
    if attn.policy == "skeleton_pool" and offset:
        columns = encoder_columns(attn.policy, matrix.shape[1], attn.frame_stride, frame_offset=offset)
    written["cross"] = cross_attention_heatmap(matrix, attn.words, columns, out / f"{stem}_cross_attention.png",
                                               title=f"{attn.video_name}: {attn.text}")
    written["npz"] = out / f"{stem}_attention.npz"
    np.savez(written["npz"], cross=attn.cross, words=np.array(attn.words), columns=np.array(attn.columns),
             node=attn.node, prefix_share=attn.prefix_share)
    return written


def pictures_for_records(model: Any, cfg: Any, records: Sequence[Mapping[str, Any]],
                         standards: Mapping[str, np.ndarray] | None, out_dir: str | Path, *,
                         segment: str = "auto", num_beams: int = 1, max_new_tokens: int = 64,
                         progress: bool = True) -> list[dict[str, Path]]:
    """:func:`clip_pictures` for every record (each caption is regenerated with its attention)."""
    from tqdm import tqdm

    return [clip_pictures(model, cfg, rec, standards, out_dir, segment=segment, num_beams=num_beams,
                          max_new_tokens=max_new_tokens)
            for rec in tqdm(records, desc="pictures", disable=not progress or len(records) < 2, leave=False)]


# ============================================================================ command line ===
EPILOG = """\
examples:
  python -m inference.pictures curves results/a results/b --out results/curves.png
  python -m inference.pictures clip --run results/synthetic results/synthetic/data/test.pkl \\
      --video_name test_jab_000_good --standard results/synthetic/data/standard.pkl --out-dir results/pictures

clip writes, per clip, into --out-dir (default results/pictures): NAME.gif (front and side views; the standard beside the
learner when --standard is given, aligned by the record's aligned_* fields), NAME_frames.png
(key frames), NAME_node_attention.png, NAME_cross_attention.png and NAME_attention.npz.
exit status: 0 on success, 2 on unreadable inputs."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference.pictures", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="loss, lr and metrics of one or several runs on one figure")
    curves.add_argument("runs", nargs="+", help="run folders results/<experiment>")
    curves.add_argument("--out", default="results/curves.png", help="PNG to write (default results/curves.png)")
    clip = sub.add_parser("clip", help="skeleton animation, node and cross-attention of clips")
    which = clip.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run folder (checkpoints/best.pt, else last.pt)")
    which.add_argument("--ckpt", help="a training checkpoint file")
    clip.add_argument("inputs", nargs="+", help="dataset .pkl and/or motion .npy files")
    clip.add_argument("--video_name", action="append", help="only this clip of the pickle(s) (repeatable)")
    clip.add_argument("--standard", help="standard pickle or .npy (shown beside the learner)")
    clip.add_argument("--motion_type", help="which standard of the --standard pickle to use")
    clip.add_argument("--out-dir", "--out_dir", dest="out_dir", default="results/pictures",
                      help="folder for the pictures (default results/pictures)")
    clip.add_argument("--segment", default="auto", choices=("auto", "none", "gt", "aligned", "error"))
    clip.add_argument("--num_beams", type=int, default=1)
    clip.add_argument("--max_new_tokens", type=int, default=64)
    clip.add_argument("--layers", default="all", choices=("all", "last"),
                      help="decoder layers averaged in the cross-attention")
    clip.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def run_clip(args: argparse.Namespace) -> list[dict[str, Path]]:
    from inference import decode, inputs

    records = inputs.records_from_inputs(args.inputs, args.video_name)
    model, cfg, _ = decode.load_model(args.run, args.ckpt, args.device)
    standards = inputs.read_standards(args.standard, args.motion_type) if args.standard else None
    if standards:
        records = inputs.pair_with_standards(records, standards,
                                           inputs.standard_for_every_clip(args.standard, args.motion_type))
    return [clip_pictures(model, cfg, rec, standards, args.out_dir, segment=args.segment, layers=args.layers,
                          num_beams=args.num_beams, max_new_tokens=args.max_new_tokens) for rec in records]


def main(argv: Sequence[str] | None = None) -> int:
    from inference.inputs import UsageError
    from core.io import CheckpointError

    args = parse_args(argv)
    try:
        require_matplotlib()
        if args.command == "curves":
            print(training_curves(args.runs, args.out))
        else:
            for written in run_clip(args):
                print("\n".join(str(p) for p in written.values()))
    except (DataError, UsageError, CheckpointError, FileNotFoundError, ImportError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
