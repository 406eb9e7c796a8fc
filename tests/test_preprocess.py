"""The preprocess command: known shifts recovered, records otherwise unchanged, input protected."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from alignment import preprocess as P
from alignment.carl import EmbedderConfig, FrameEmbedder, embedder_state
from dataloaders import synthetic
from dataloaders.safe_pickle import safe_load
from core.io import atomic_save

KINDS = ("jab", "squat")


def _standards() -> dict[str, np.ndarray]:
    return {k: synthetic.standard_clip(k) for k in KINDS}  # (90, 22, 3) each


def _write_case(tmp_path, warp: bool, as_tensor: bool = False):
    """Learner clips cut from the standards at known starts (optionally time-warped), small noise."""
    rng = np.random.default_rng(0)
    standards = _standards()
    records, truth = [], []
    for k, kind in enumerate(KINDS):
        std = standards[kind]
        for i, (start, length) in enumerate([(18, 30), (24, 40), (33, 38)]):
            if warp:  # play the segment at a varying speed, same first and last frame
                u = np.linspace(0, 1, length)
                u = u + 0.25 * np.sin(2 * np.pi * u) / (2 * np.pi)  # speed 0.75..1.25
                idx = start + u * (length - 1)
            else:
                idx = start + np.arange(length, dtype=float)
            lo = np.floor(idx).astype(int)
            hi = np.minimum(lo + 1, std.shape[0] - 1)
            w = (idx - lo)[:, None, None]
            clip = std[lo] * (1 - w) + std[hi] * w + rng.normal(0, 0.002, (length, 22, 3))
            coords = clip.reshape(length, 66).astype(np.float32)  # (T, V, 3) -> (T, 66)
            records.append({
                "video_name": f"{kind}_{i}", "motion_type": kind,
                "coordinates": torch.tensor(coords) if as_tensor else coords,
                "labels": [f"text {k} {i}"], "camera_view": "1", "original_seq_len": length,
                "aligned_start_frame": 0, "aligned_end_frame": length,
                "aligned_std_start_frame": start, "aligned_std_end_frame": start + length,
                "aligned_seq_len": length,
            })
            truth.append((start, start + length))
    data, std_path = tmp_path / "data.pkl", tmp_path / "standard.pkl"
    with open(data, "wb") as fh:
        pickle.dump(records, fh)
    with open(std_path, "wb") as fh:
        pickle.dump([{"video_name": k, "coordinates": v.reshape(90, 66)} for k, v in
                     standards.items()], fh)
    return data, std_path, records, truth


def _run(data, std_path, out, method, *extra):
    return P.main(["--data", str(data), "--standard", str(std_path), "--method", method,
                   "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("method,warp", [("window", False), ("dtw", False), ("dtw", True)])
def test_known_shifts_are_recovered_within_one_frame(tmp_path, capsys, method, warp):
    data, std_path, records, truth = _write_case(tmp_path, warp)
    out = tmp_path / "out.pkl"
    assert _run(data, std_path, out, method) == 0
    result = safe_load(out)
    for rec, (start, end) in zip(result, truth):
        assert abs(rec["aligned_std_start_frame"] - start) <= 1, (method, rec["video_name"])
        assert abs(rec["aligned_std_end_frame"] - end) <= 1
        assert (rec["aligned_start_frame"], rec["aligned_end_frame"]) == (0, rec["aligned_seq_len"])
        if method == "window":
            assert rec["aligned_std_end_frame"] - rec["aligned_std_start_frame"] == \
                rec["aligned_seq_len"]
    printed = capsys.readouterr().out
    assert "agreement with the aligned_* fields" in printed and "MAE std_start" in printed


def test_only_the_aligned_fields_change_and_the_format_is_kept(tmp_path):
    data, std_path, records, _ = _write_case(tmp_path, warp=False, as_tensor=True)
    for rec in records:  # make the old fields wrong so that they must be rewritten
        rec["aligned_std_start_frame"] = 0
    with open(data, "wb") as fh:
        pickle.dump(records, fh)
    before = data.read_bytes()
    out = tmp_path / "out.pkl"
    _run(data, std_path, out, "window")
    assert data.read_bytes() == before  # input untouched
    result = safe_load(out)
    assert len(result) == len(records)
    for old, new in zip(records, result):
        assert set(old) == set(new)
        for key in old:
            if key in P.FIELDS:
                assert type(new[key]) is int
            elif isinstance(old[key], torch.Tensor):
                assert isinstance(new[key], torch.Tensor) and torch.equal(old[key], new[key])
            else:
                assert new[key] == old[key]
    assert result[1]["aligned_std_start_frame"] == 24


def refused(capsys, status: int, match: str) -> None:
    """Exit status 2 and one line on stderr that says ``match``."""
    err = capsys.readouterr().err
    assert status == 2 and match in err and len(err.strip().splitlines()) == 1, (status, err)


def test_the_input_is_never_overwritten(tmp_path, capsys):
    data, std_path, _, _ = _write_case(tmp_path, warp=False)
    refused(capsys, _run(data, std_path, data, "window"), "never overwritten")
    refused(capsys, _run(data, std_path, tmp_path / "." / "data.pkl", "window"), "never overwritten")
    out = tmp_path / "out.pkl"
    out.write_bytes(b"keep me")
    refused(capsys, _run(data, std_path, out, "window"), "--overwrite")
    assert out.read_bytes() == b"keep me"
    refused(capsys, _run(data, std_path, tmp_path / "new.pkl", "carl"), "--embedder")
    refused(capsys, _run(data, std_path, tmp_path / "new.pkl", "carl", "--embedder", str(tmp_path / "no.pt")),
            "does not exist")
    assert not (tmp_path / "new.pkl").exists()


def test_default_output_goes_under_results(tmp_path, monkeypatch, capsys):
    data, std_path, _, _ = _write_case(tmp_path, warp=False)
    monkeypatch.chdir(tmp_path)
    assert P.main(["--data", str(data), "--standard", str(std_path), "--method", "window", "--no-progress"]) == 0
    assert (tmp_path / "results" / "alignment" / "data.window.pkl").is_file()


def test_carl_method_runs_with_a_checkpoint(tmp_path):
    data, std_path, records, _ = _write_case(tmp_path, warp=False)
    torch.manual_seed(0)
    model = FrameEmbedder(EmbedderConfig(width=32, heads=2, ff=64, layers=1, pose_hidden=32,
                                         embed_dim=16))
    atomic_save(embedder_state(model), tmp_path / "carl.pt")
    out = tmp_path / "out.pkl"
    for match in ("dtw", "window"):
        assert _run(data, std_path, out, "carl", "--embedder", str(tmp_path / "carl.pt"),
                    "--carl-match", match, "--overwrite") == 0
        for rec in safe_load(out):
            assert 0 <= rec["aligned_std_start_frame"] < rec["aligned_std_end_frame"] <= 90
            if match == "window":
                assert rec["aligned_std_end_frame"] - rec["aligned_std_start_frame"] == \
                    rec["aligned_seq_len"]


def test_window_segment_when_the_clip_is_longer_than_the_standard():
    rng = np.random.default_rng(1)
    std = rng.normal(size=(30, 4))
    learner = np.concatenate([rng.normal(size=(7, 4)), std, rng.normal(size=(5, 4))])
    seg = P.window_segment(learner, std)
    assert (seg.start, seg.end, seg.std_start, seg.std_end, seg.seq_len) == (7, 37, 0, 30, 30)


def test_bx_agreement_runs(bx_dir, tmp_path, capsys):
    out = tmp_path / "bx.pkl"
    _run(bx_dir / "BX_test.pkl", bx_dir / "BX_standard.pkl", out, "window")
    result = safe_load(out)
    assert all(r["aligned_std_end_frame"] - r["aligned_std_start_frame"] == r["aligned_seq_len"]
               for r in result)
    assert "Jab" in capsys.readouterr().out
