"""The web page's work without the browser (inference.page): what it shows equals what
caption.py prints for the same file and options; bad uploads are messages, not crashes.

The browser test is tests/test_demo_browser.py.
"""
from __future__ import annotations

import json
import os
import pickle
import shlex
import sys

import numpy as np
import pytest
from PIL import Image

import caption
from dataloaders.records import DataError
from dataloaders.safe_pickle import UnsafePickleError
from inference import page as db
from inference.inputs import UsageError

MAX_NEW = 8


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory):
    backend = db.DemoRun(run=tiny_run, device="cpu", work_dir=tmp_path_factory.mktemp("demo_work"))
    yield backend
    backend.close()


def caption_py(capsys, *args: str) -> dict[str, list[str]]:
    """caption.py's --json output, run in-process."""
    capsys.readouterr()
    assert caption.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def command_texts(capsys, result: db.Result) -> list[str]:
    """Run the caption.py command the page prints; its texts for the clip."""
    words = shlex.split(result.command)
    assert words[:2] == ["python", "caption.py"]
    out = caption_py(capsys, *words[2:])
    assert len(out) == 1
    return next(iter(out.values()))


def hybrik_file(coords: np.ndarray, path) -> None:
    """``coords`` (project frame, metres, y up) written as HybrIK's res.pk (camera axes, 2.2 m units)."""
    raw = (coords - coords[:, :1]) * np.array([1.0, -1.0, -1.0], dtype=np.float32) / 2.2
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"pred_xyz_24_struct": np.concatenate([raw, raw[:, :2]], axis=1),
                     "pred_xyz_29": np.concatenate([raw, np.zeros_like(raw[:, :7])], axis=1)}, f)


# ------------------------------------------------------------------ the page equals caption.py
def test_a_test_clip_with_its_own_standard(page, capsys):
    name = page.clip_names()[3]
    result = page.caption(page.test_clip(name), decoding=db.Decoding(max_new_tokens=MAX_NEW))
    assert result.name == name and len(result.texts) == 1
    assert result.standard == page.test_clip(name)["motion_type"]
    assert f"--video_name {name}" in result.command and "--standard" in result.command
    assert command_texts(capsys, result) == result.texts
    assert result.references == page.test_clip(name)["labels"]
    assert set(result.metrics) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    for path in (result.animation, result.node_attention, result.cross_attention, result.key_frames):
        assert path.is_file() and path.stat().st_size > 0
    with Image.open(result.animation) as gif:
        assert gif.format == "GIF" and gif.n_frames == result.frames > 1


def test_an_upload_with_a_standard_picked_by_motion_type(page, tiny_run, tmp_path, capsys):
    rec = page.test_clip(page.clip_names()[4])
    np.save(tmp_path / "clip.npy", rec["coordinates"])
    record, notes = page.read_motion(tmp_path / "clip.npy")
    assert record["video_name"] == "clip" and notes == []
    decoding = db.Decoding(mode="beam search", num_beams=3, num_return_sequences=2, max_new_tokens=MAX_NEW)
    result = page.caption(record, standard=rec["motion_type"], decoding=decoding, source=tmp_path / "clip.npy")
    assert len(result.texts) == 2 and result.references == [] and result.metrics == {}
    expected = caption_py(capsys, "--run", str(tiny_run), str(tmp_path / "clip.npy"), "--standard",
                          str(tiny_run / "data" / "standard.pkl"), "--motion_type", rec["motion_type"],
                          "--num_beams", "3", "--num_return_sequences", "2", "--max_new_tokens", str(MAX_NEW))
    assert result.texts == expected["clip"] == command_texts(capsys, result)


def test_a_hybrik_upload_and_an_uploaded_standard(page, tiny_run, tmp_path, capsys):
    rec = page.test_clip(page.clip_names()[5])
    hybrik_file(rec["coordinates"], tmp_path / "res_learner" / "res.pk")
    np.save(tmp_path / "std.npy", page.standards[rec["motion_type"]])
    record, _ = page.read_motion(tmp_path / "res_learner" / "res.pk")
    assert record["video_name"] == "res_learner"
    np.testing.assert_allclose(record["coordinates"], rec["coordinates"] - rec["coordinates"][:, :1], atol=1e-5)
    decoding = db.Decoding(mode="sampling", temperature=1.5, top_p=0.9, seed=4, max_new_tokens=MAX_NEW)
    result = page.caption(record, standard=db.STANDARD_UPLOAD, standard_upload=tmp_path / "std.npy",
                          decoding=decoding, source=tmp_path / "res_learner" / "res.pk")
    assert result.standard == "std" and "greedy" in " ".join(result.notes)
    expected = caption_py(capsys, "--run", str(tiny_run), str(tmp_path / "res_learner" / "res.pk"), "--standard",
                          str(tmp_path / "std.npy"), "--sample", "--temperature", "1.5", "--top_p", "0.9",
                          "--seed", "4", "--max_new_tokens", str(MAX_NEW))
    assert result.texts == expected["res_learner"] == command_texts(capsys, result)


def test_no_standard_says_the_first_frame_stands_in(page, capsys):
    rec = page.test_clip(page.clip_names()[0])
    result = page.caption(rec, standard=db.STANDARD_NONE, decoding=db.Decoding(max_new_tokens=MAX_NEW))
    assert result.standard is None and "first frame" in " ".join(result.notes)
    assert "--standard" not in result.command and command_texts(capsys, result) == result.texts


# ------------------------------------------------------------------------------ bad uploads
class _RunsCode:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["wrong_shape", "not_numpy", "code", "hybrik_layout", "empty_list", "unsupported"])
def test_bad_uploads_are_one_line_messages(page, tmp_path, kind):
    path = tmp_path / {"wrong_shape": "a.npy", "not_numpy": "b.npy", "code": "c.pkl", "hybrik_layout": "res.pk",
                       "empty_list": "e.pkl", "unsupported": "f.txt"}[kind]
    if kind == "wrong_shape":
        np.save(path, np.zeros((10, 21, 3), np.float32))
    elif kind in ("not_numpy", "unsupported"):
        path.write_bytes(b"hello")
    else:
        payload = {"code": {"pred_xyz_29": _RunsCode(tmp_path / "ran")}, "hybrik_layout": {"poses": np.zeros((3, 72))},
                   "empty_list": []}[kind]
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises((DataError, UnsafePickleError)) as info:
        page.read_motion(path)
    message = db.message_of(info.value)
    assert "\n" not in message and str(path) in message
    expected = {"wrong_shape": "found shape (10, 21, 3)", "not_numpy": "not a readable .npy",
                "code": "refused to unpickle", "hybrik_layout": "missing key 'pred_xyz_24_struct'",
                "empty_list": "empty", "unsupported": "unsupported input"}[kind]
    assert expected in message
    assert not (tmp_path / "ran").exists()


def test_option_conflicts_are_usage_errors(page):
    rec = page.test_clip(page.clip_names()[0])
    with pytest.raises(UsageError, match="needs --sample or --num_beams >= 3"):
        page.caption(rec, decoding=db.Decoding(mode="beam search", num_beams=2, num_return_sequences=3))
    with pytest.raises(UsageError, match="upload"):
        page.caption(rec, standard=db.STANDARD_UPLOAD)
    with pytest.raises(UsageError, match="which has no standard"):
        page.caption(dict(rec, motion_type=None))
    with pytest.raises(UsageError, match="no test clip"):
        page.test_clip("no_such_clip")


def test_clip_metrics_are_the_scorers(page):
    from evaluation import quality
    from evaluation.metrics import score_captions

    refs = ["The left arm does not go above the head.", "Raise the left arm higher."]
    text = "The left arm does not go above the head."
    got = page.clip_metrics(text, refs)
    coco = score_captions({"c": text}, {"c": refs}, use_java=False)
    assert {k: got[k] for k in ("BLEU-4", "ROUGE-L")} == {k: coco[k] for k in ("BLEU-4", "ROUGE-L")}
    df = quality.document_frequency([r["labels"] for r in page.test_records.values()])
    assert got["CIDEr-D"] == pytest.approx(quality.cider_d_matrix([text], [refs], df)[0, 0]) and got["CIDEr-D"] > 0


# ------------------------------------------------------------------------------ demo.py
def test_demo_without_gradio_says_how_to_install_it(tiny_run, monkeypatch, capsys):
    import demo

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert demo.main(["--run", str(tiny_run)]) == 2
    assert "pip install -r requirements-demo.txt" in capsys.readouterr().err


def test_demo_binds_to_this_machine_by_default():
    import demo

    args = demo.parse_args(["--run", "results/synthetic"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    args = demo.parse_args(["--run", "x", "--host", "0.0.0.0", "--port", "8000"])
    assert (args.host, args.port) == ("0.0.0.0", 8000)


def test_the_page_builds(page):
    pytest.importorskip("gradio", reason="the page needs gradio (pip install -r requirements-demo.txt)")
    import demo

    blocks = demo.build_page(page)
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert set(demo.ELEMENT_IDS) <= ids


# ------------------------------------------------------------------ a retrieval run, an export
def test_a_retrieval_run_reranks_as_caption_py_and_its_export_opens_too(retrieval_run, tmp_path, capsys):
    from models.export import export_run

    page = db.DemoRun(run=retrieval_run, device="cpu", work_dir=tmp_path / "work")
    assert page.retrieves and page.rerank_of(db.Decoding()) == 3
    rec = page.test_clip(page.clip_names()[1])
    result = page.caption(rec, decoding=db.Decoding(max_new_tokens=MAX_NEW))
    assert len(result.texts) == 1 and "--rerank" not in result.command  # the run's own eval.rerank
    assert "3 beam candidates" in " ".join(result.notes) and result.cross_attention.stat().st_size > 0
    assert command_texts(capsys, result) == result.texts
    plain = page.caption(rec, decoding=db.Decoding(max_new_tokens=MAX_NEW, rerank=0))
    assert "--rerank 0" in plain.command and command_texts(capsys, plain) == plain.texts
    # an export folder (python -m models.export) opens through inference.load_model too; it holds no
    # data, so the standard is uploaded
    exported = db.DemoRun(run=export_run(retrieval_run, tmp_path / "export"), device="cpu", work_dir=tmp_path / "w2")
    assert exported.retrieves and exported.clip_names() == [] and exported.motion_types() == []
    np.save(tmp_path / "clip.npy", rec["coordinates"])
    np.save(tmp_path / "std.npy", page.standards[rec["motion_type"]])
    record, _ = exported.read_motion(tmp_path / "clip.npy")
    with pytest.raises(UsageError, match="upload a standard"):
        exported.caption(record, standard=rec["motion_type"])
    from_export = exported.caption(record, standard=db.STANDARD_UPLOAD, standard_upload=tmp_path / "std.npy",
                                   source=tmp_path / "clip.npy", decoding=db.Decoding(max_new_tokens=MAX_NEW))
    assert command_texts(capsys, from_export) == from_export.texts
    page.close()
    exported.close()


def test_the_printed_command_names_repository_paths_as_a_user_types_them(tmp_path):
    """Paths inside the repository are shown relative to its root (commands run from there), so the
    page's command holds no machine's folders; paths elsewhere stay as given."""
    from core.paths import REPO_ROOT, shown

    inside = REPO_ROOT / "results" / "synthetic" / "data" / "test.pkl"
    assert shown(str(inside)) == "results/synthetic/data/test.pkl"
    assert shown("results/synthetic") == "results/synthetic"
    assert shown(str(tmp_path / "clip.npy")) == str(tmp_path / "clip.npy")
    assert shown("--num_beams") == "--num_beams"
