"""inference.pictures: skeleton animation, node / cross-attention, training curves, TensorBoard logging."""
from __future__ import annotations

import json
import logging
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train_t5_stagcn as trainer
from dataloaders.features import resample_time
from dataloaders.records import load_records, load_standards
from dataloaders.skeleton import SMPL22_JOINT_NAMES
from inference import decode, inputs
from inference import pictures as P
from tests.test_train import tiny as train_tiny

REPO = Path(trainer.__file__).resolve().parent
MAX_NEW = 6
PROMPT = "Motion Instruction : "


def tiny(results: Path, experiment: str, *extra: str) -> list[str]:
    """tests/test_train.py's run of a few seconds with a 2-layer T5 (attention averaged over layers)."""
    return train_tiny(results, experiment, "train.lr=1e-2", "eval.num_logged_pictures=2",
                      "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 2, num_decoder_layers: 2, "
                      "num_heads: 4}", *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """'joints': time_pool + reference + a prompt, 2 epochs; 'frames': skeleton_pool, 1 epoch."""
    results = tmp_path_factory.mktemp("picture_runs")
    trainer.main(tiny(results, "joints", "train.epochs=2", f'model.prompt="{PROMPT}"'))
    trainer.main(tiny(results, "frames", "train.epochs=1", "model.projection.policy=skeleton_pool",
                      "model.reference=none"))
    return {"joints": results / "joints", "frames": results / "frames"}


def loaded(run: Path):
    model, cfg, _ = decode.load_model(run=run, device="cpu")
    return model, cfg


def batch_of(model, cfg, run: Path, names: list[str], with_standard: bool):
    standards = load_standards(run / "data" / "standard.pkl") if with_standard else None
    records = [r for r in load_records(run / "data" / "test.pkl") if r["video_name"] in names]
    return next(inputs.iter_batches(inputs.build_dataset(model, cfg, records, standards), len(records)))


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def pixels(figsize: tuple[float, float], dpi: int = P.DPI) -> tuple[int, int]:
    return round(figsize[0] * dpi), round(figsize[1] * dpi)


def reference_cross_attention(model, batch, ids: list[int], layers: str) -> torch.Tensor:
    """Teacher-forced cross-attention of one clip (N=1), averaged over heads and layers: (W, L)."""
    with P.eager_attention(model.t5), torch.no_grad():
        embeds, mask = model.encode(batch)
        start = model.t5.config.decoder_start_token_id
        decoder = torch.tensor([[start] + ids[:-1]])
        out = model.t5(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder, output_attentions=True)
    per_layer = torch.stack(out.cross_attentions)[:, 0]  # (layers, H, W, L)
    chosen = per_layer[-1:] if layers == "last" else per_layer
    return chosen.mean(dim=(0, 1))  # (W, L)


# ------------------------------------------------------------------------------- skeletons ---
def test_up_axis_and_aligned_standard_against_hand_values(runs):
    coords = load_records(runs["joints"] / "data" / "test.pkl")[0]["coordinates"]
    assert P.up_axis(coords) == (1, 1.0)  # synthetic data is y-up
    flipped = coords * np.array([1, -1, 1], dtype=np.float32)
    assert P.up_axis(flipped) == (1, -1.0)  # HybrIK-like, y-down
    standard = np.arange(11, dtype=np.float32)[:, None, None] * np.ones((1, 22, 3), np.float32)  # pose = frame
    poses, inside = P.aligned_standard(standard, 8, (2, 7, 4, 9))
    assert poses[:, 0, 0].tolist() == [4, 4, 4, 5, 6, 7, 8, 8]  # hold, 5 frames 4..8 resampled, hold
    assert inside.tolist() == [False, False, True, True, True, True, True, False]
    # inside the segment: the same resampling the dataset applies to the standard's features
    feats = standard[4:9].transpose(2, 0, 1)  # (C, T, V)
    np.testing.assert_allclose(poses[2:7], resample_time(feats, 5).transpose(1, 2, 0))
    whole, _ = P.aligned_standard(standard, 6, None)
    np.testing.assert_allclose(whole[:, 0, 0], [0, 2, 4, 6, 8, 10])


def test_skeleton_animation_writes_a_gif_of_t_frames_and_a_strip(runs, tmp_path):
    run = runs["joints"]
    rec = load_records(run / "data" / "test.pkl")[4]
    coords = rec["coordinates"][:14]
    seg = dict(rec, aligned_end_frame=14)
    standard = load_standards(run / "data" / "standard.pkl")[rec["motion_type"]]
    written = P.skeleton_animation(coords, tmp_path / "jab.gif", title="generated: x\nreference: y",
                                   standard=standard, aligned=seg, mp4=False)
    assert set(written) == {"gif", "png"}
    with Image.open(written["gif"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(coords)
        assert gif.size == pixels((P.VIEW_PANEL[0] * 4, P.VIEW_PANEL[1] + P.TITLE_HEIGHT))
    assert png_size(written["png"]) == pixels((P.STRIP_PANEL[0] * P.KEY_FRAMES, P.STRIP_PANEL[1] * 2 + P.TITLE_HEIGHT))
    alone = P.skeleton_animation(coords[:5], tmp_path / "alone.gif", mp4=False)  # no standard: 2 panels, 1 row
    with Image.open(alone["gif"]) as gif:
        assert gif.n_frames == 5 and gif.size == pixels((P.VIEW_PANEL[0] * 2, P.VIEW_PANEL[1] + P.TITLE_HEIGHT))
    assert png_size(alone["png"]) == pixels((P.STRIP_PANEL[0] * 5, P.STRIP_PANEL[1] + P.TITLE_HEIGHT))


# ------------------------------------------------------------------------- node attention ---
def test_node_attention_covers_the_valid_frames_only(runs, tmp_path):
    model, cfg = loaded(runs["joints"])
    names = ["test_kick_000_good", "test_walk_000_good"]  # 45 and 77 frames: one is padded
    batch = batch_of(model, cfg, runs["joints"], names, with_standard=True)
    attentions = P.clip_attention(model, batch, max_new_tokens=MAX_NEW)
    stride = math.prod(cfg.model.encoder.strides)
    for attn, length in zip(attentions, batch["lengths"].tolist()):
        assert attn.node.shape == (math.ceil(length / stride), 22)
        assert ((attn.node > 0) & (attn.node < 1)).all()  # sigmoid values, no padded zeros
    # the padded clip's map equals the one it gets alone (padding does not leak in)
    alone = P.clip_attention(model, batch_of(model, cfg, runs["joints"], names[:1], True), max_new_tokens=MAX_NEW)[0]
    np.testing.assert_allclose(attentions[0].node, alone.node, atol=1e-5)
    out = P.node_attention_heatmap(attentions[0].node, tmp_path / "node.png", frame_stride=stride,
                                   figsize=(6.0, 4.5), dpi=80)
    assert png_size(out) == (480, 360)
    with pytest.raises(ValueError, match=r"expected \(T', 22\)"):
        P.node_attention_figure(np.zeros((5, 21)))


# ------------------------------------------------------------------------ cross-attention ---
@pytest.mark.parametrize("layers", ["all", "last"])
def test_cross_attention_rows_sum_to_one_and_match_a_teacher_forced_pass(runs, layers):
    model, cfg = loaded(runs["joints"])
    batch = batch_of(model, cfg, runs["joints"], ["test_jab_000_good"], with_standard=True)
    attn = P.clip_attention(model, batch, layers=layers, max_new_tokens=MAX_NEW)[0]
    with torch.no_grad():
        embeds, _ = model.encode(batch)
        text = model.generate(batch, max_new_tokens=MAX_NEW)[0]
    prefix = len(model.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    assert prefix > 0 and model.prefix_ids.numel() == prefix
    assert attn.text == text  # the caption the pictures explain is the model's greedy caption
    assert attn.cross.shape == (len(attn.token_ids), embeds.shape[1] - prefix) == (len(attn.words), 22)
    np.testing.assert_allclose(attn.cross.sum(axis=1), 1.0, atol=1e-4)
    assert attn.columns == list(SMPL22_JOINT_NAMES)
    full = reference_cross_attention(model, batch, attn.token_ids, layers)  # (W, P + 22)
    np.testing.assert_allclose(full.sum(dim=1).numpy(), 1.0, atol=1e-4)  # softmax over all encoder tokens
    np.testing.assert_allclose(attn.prefix_share, full[:, :prefix].sum(dim=1).numpy(), atol=1e-5)
    motion = full[:, prefix:] / full[:, prefix:].sum(dim=1, keepdim=True)
    np.testing.assert_allclose(attn.cross, motion.numpy(), atol=1e-5)


def test_cross_attention_over_frames_masks_padding_and_supports_beams(runs, tmp_path):
    model, cfg = loaded(runs["frames"])
    names = ["test_kick_000_good", "test_walk_000_good"]
    batch = batch_of(model, cfg, runs["frames"], names, with_standard=False)
    stride = math.prod(cfg.model.encoder.strides)
    for num_beams in (1, 2):
        attentions = P.clip_attention(model, batch, num_beams=num_beams, max_new_tokens=MAX_NEW)
        with torch.no_grad():
            texts = model.generate(batch, num_beams=num_beams, max_new_tokens=MAX_NEW)
        assert [a.text for a in attentions] == texts
        for attn, length in zip(attentions, batch["lengths"].tolist()):
            frames = math.ceil(length / stride)
            assert attn.cross.shape == (len(attn.words), frames)
            assert attn.columns == [f"t{t * stride}" for t in range(frames)]
            np.testing.assert_allclose(attn.cross.sum(axis=1), 1.0, atol=1e-4)
            assert attn.prefix_share.tolist() == [0.0] * len(attn.words)  # no prompt in this run
    # the shorter clip, alone and unpadded, attends the same way: the padded frames took no mass
    short = batch_of(model, cfg, runs["frames"], names[:1], with_standard=False)
    alone = P.clip_attention(model, short, max_new_tokens=MAX_NEW)[0]
    padded = P.clip_attention(model, batch, max_new_tokens=MAX_NEW)[0]
    np.testing.assert_allclose(padded.cross, alone.cross, atol=1e-5)
    out = P.cross_attention_heatmap(alone.cross, alone.words, alone.columns, tmp_path / "cross.png")
    assert png_size(out) == pixels(P.CROSS_FIGSIZE)


def test_origin_columns_and_sum_to_joints_by_hand():
    names = ["a", "b", "c"]
    assert P.encoder_columns("origin", 6, 2, names) == ["t0:a", "t0:b", "t0:c", "t2:a", "t2:b", "t2:c"]
    matrix = np.array([[0.1, 0.2, 0.3, 0.0, 0.1, 0.3]])  # (W=1, T'=2 x V=3), t-major
    np.testing.assert_allclose(P.sum_to_joints(matrix, 3), [[0.1, 0.3, 0.6]])
    with pytest.raises(ValueError, match="does not match"):
        P.cross_attention_figure(matrix, ["w"], names)


# ------------------------------------------------------------------------ training curves ---
def test_training_curves_of_two_runs(runs, tmp_path):
    series = P.read_run_scalars(runs["joints"])
    assert series["val/CIDEr"][0] == "epoch" and series["val/CIDEr"][1].tolist() == [1.0, 2.0]
    lines = [json.loads(x) for x in (runs["joints"] / "metrics.jsonl").read_text().splitlines()]
    assert series["val/BLEU-4"][2].tolist() == [x["val"]["BLEU-4"] for x in lines]
    assert series["train/epoch_loss"][2].tolist() == [x["train_loss"] for x in lines]
    steps = lines[-1]["step"]  # TensorBoard has train scalars every train.log_every (10) steps
    assert series["train/loss"][0] == "step" and series["train/lr"][1].tolist() == list(range(10, steps + 1, 10))
    both = set(series) | set(P.read_run_scalars(runs["frames"]))
    out = P.training_curves([runs["joints"], runs["frames"]], tmp_path / "curves.png")
    rows = math.ceil(len(both) / P.CURVE_COLUMNS)
    assert png_size(out) == pixels((P.CURVE_PANEL[0] * P.CURVE_COLUMNS, P.CURVE_PANEL[1] * rows))
    assert P.main(["curves", str(runs["joints"]), str(runs["frames"]), "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 0
    assert P.main(["curves", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2


# -------------------------------------------------------------------------------- the CLI ---
def test_clip_command_writes_every_picture(runs, tmp_path, capsys):
    run = runs["joints"]
    rec = dict(load_records(run / "data" / "test.pkl")[4])
    rec["coordinates"] = rec["coordinates"][:10]  # a short clip keeps the GIF cheap
    rec.update(aligned_end_frame=10, aligned_seq_len=10)
    rec = {k: v for k, v in rec.items() if not k.startswith(("gt_", "error_"))}  # segments beyond 10 frames
    with open(tmp_path / "short.pkl", "wb") as f:
        pickle.dump([rec], f)
    code = P.main(["clip", "--run", str(run), str(tmp_path / "short.pkl"), "--video_name", rec["video_name"],
                   "--standard", str(run / "data" / "standard.pkl"), "--out-dir", str(tmp_path / "pics")])
    assert code == 0
    stem = rec["video_name"]
    for name in (f"{stem}.gif", f"{stem}_frames.png", f"{stem}_node_attention.png", f"{stem}_cross_attention.png",
                 f"{stem}_attention.npz"):
        assert (tmp_path / "pics" / name).stat().st_size > 0, name
    with Image.open(tmp_path / "pics" / f"{stem}.gif") as gif:
        assert gif.n_frames == 10
    saved = np.load(tmp_path / "pics" / f"{stem}_attention.npz")
    assert saved["cross"].shape == (len(saved["words"]), 22) and saved["node"].shape == (5, 22)
    capsys.readouterr()
    assert P.main(["clip", "--run", str(run), str(tmp_path / "short.pkl"), "--video_name", "nope",
                   "--out-dir", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------------------ TensorBoard ---
def test_evaluation_logs_attention_figures_to_tensorboard(runs, tmp_path, monkeypatch, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    run = runs["joints"]  # trained with eval.num_logged_pictures=2
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    logged = {tag.split("/", 2)[2] for tag in acc.Tags()["images"]}
    assert len(logged) == 2 and sorted(acc.Tags()["images"]) == sorted(
        f"attention/{kind}/{vid}" for kind in ("node", "cross") for vid in logged)
    model, cfg = loaded(run)
    first = sorted(r["video_name"] for r in load_records(run / "data" / "test.pkl"))[:2]
    batch = batch_of(model, cfg, run, first, with_standard=True)
    model.train()
    writer = SummaryWriter(str(tmp_path / "tb"))
    P.log_attention(writer, model, batch, 3, max_new_tokens=MAX_NEW)
    writer.close()
    assert model.training  # evaluation-time pictures leave the training mode as they found it
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == sorted(f"attention/{kind}/{vid}" for kind in ("node", "cross")
                                                  for vid in first)
    # without matplotlib: one warning, no pictures, no crash
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(P, "_warned_no_matplotlib", [])
    writer = SummaryWriter(str(tmp_path / "tb2"))
    with caplog.at_level(logging.WARNING, logger=P.log.name):
        for step in (1, 2):
            P.log_attention(writer, model, batch, step, max_new_tokens=MAX_NEW)
    writer.close()
    assert sum("attention pictures are not logged" in r.message for r in caplog.records) == 1
