"""The scorer command: python -m evaluation.score (run with --no-java to stay fast)."""
from __future__ import annotations

import collections
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from evaluation.metrics import MetricSkippedWarning, score_captions, score_with_breakdown
from evaluation.score import default_out_path, main

REPO_ROOT = Path(__file__).resolve().parents[1]

RECORDS = [
    {"video_name": "v1", "motion_type": "Jab", "labels": ["Keep your guard up.", "Raise the left hand."]},
    {"video_name": "v2", "motion_type": "Jab", "labels": ["Rotate your hips more.", "Turn the hips."]},
    {"video_name": "v3", "motion_type": "Cross", "labels": ["Your back foot isn't lifted."]},
    {"video_name": "v4", "motion_type": "Cross", "labels": ["Don't drop the right hand!", "Hands up."]},
]
PREDICTIONS = {"v1": "Keep the guard up.", "v2": "Rotate the hips.", "v3": "The back foot isn't lifted.",
               "v4": "Don't drop your hand."}


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        return fn(*args, **kwargs)


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


def test_help_describes_formats_and_options(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("--predictions", "--references", "--out", "--allow-missing", "--no-java",
                     "caption", "motion_type", "pickle", "METEOR"):
        assert fragment in text


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "evaluation.score", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    assert "usage: python -m evaluation.score" in done.stdout


def test_scores_table_and_json_equal_the_library(tmp_path, capsys):
    preds = write(tmp_path / "p.json", PREDICTIONS)
    refs = write(tmp_path / "r.json", RECORDS)
    out = tmp_path / "m.json"
    assert run_cli("--predictions", preds, "--references", refs, "--out", out, "--no-java") == 0
    doc = json.loads(out.read_text())
    references = {r["video_name"]: r["labels"] for r in RECORDS}
    groups = {r["video_name"]: r["motion_type"] for r in RECORDS}
    overall, by_group = quiet(score_with_breakdown, PREDICTIONS, references, groups, use_java=False)
    assert doc["overall"] == overall == quiet(score_captions, PREDICTIONS, references, use_java=False)
    assert doc["by_motion_type"] == by_group
    assert doc["clips"] == {"overall": 4, "Cross": 2, "Jab": 2}
    assert doc["tokenizer"].startswith("python") and any("METEOR" in n for n in doc["notes"])
    printed = capsys.readouterr().out
    rows = [line.split()[0] for line in printed.splitlines()[2:5]]
    assert rows == ["overall", "Cross", "Jab"] and "BLEU-4" in printed and "METEOR" not in printed.splitlines()[0]
    assert f"{doc['overall']['CIDEr']:.4f}" in printed and "note: METEOR left out" in printed


def test_distinct_novelty_and_self_retrieval_in_the_json(tmp_path, capsys):
    from evaluation.quality import held_out_reference, retrieval_ceiling, self_retrieval

    predictions = {**PREDICTIONS, "v4": "Keep the guard up."}  # v1's caption again: 3 distinct
    preds = write(tmp_path / "p.json", predictions)
    refs = write(tmp_path / "r.json", RECORDS)
    train = write(tmp_path / "t.json", [{"video_name": "a", "labels": ["Rotate the hips."],
                                         "augmented_labels": ["keep the guard up"]}])
    assert run_cli("--predictions", preds, "--references", refs, "--train", train, "--no-java",
                   "--out", tmp_path / "m.json") == 0
    quality = json.loads((tmp_path / "m.json").read_text())["quality"]
    assert quality["distinct"] == 3
    assert quality["novelty"] == 0.25  # only v3's caption is new: v2's is a label, v1's (= v4's) a paraphrase
    references = {r["video_name"]: r["labels"] for r in RECORDS}
    assert {k: quality[k] for k in ("R@1", "R@3")} == self_retrieval(predictions, references)
    texts = ["Rotate the hips.", "keep the guard up"]  # the training texts bound the ceiling's pool
    assert quality["ceiling R@1"] == retrieval_ceiling(references, texts)["R@1"] >= quality["R@1"]
    assert quality["held-out reference R@1"] == held_out_reference(references)["R@1"]
    assert "distinct 3" in capsys.readouterr().out


def test_list_predictions_with_caption_or_text_and_default_out(tmp_path):
    items = [{"video_name": k, ("caption" if n % 2 else "text"): v}
             for n, (k, v) in enumerate(PREDICTIONS.items())]
    preds = write(tmp_path / "epoch_0003.json", items)
    refs = write(tmp_path / "r.json", RECORDS)
    assert run_cli("--predictions", preds, "--references", refs, "--no-java") == 0
    assert default_out_path(preds) == tmp_path / "epoch_0003.metrics.json"
    doc = json.loads((tmp_path / "epoch_0003.metrics.json").read_text())
    references = {r["video_name"]: r["labels"] for r in RECORDS}
    assert doc["overall"] == quiet(score_captions, PREDICTIONS, references, use_java=False)


def test_one_sided_ids_are_an_error_listing_them(tmp_path, capsys):
    preds = write(tmp_path / "p.json", {**{k: v for k, v in PREDICTIONS.items() if k != "v2"}, "ghost": "x"})
    refs = write(tmp_path / "r.json", RECORDS)
    assert run_cli("--predictions", preds, "--references", refs, "--no-java", "--out", tmp_path / "m.json") == 2
    err = capsys.readouterr().err
    assert "1 predicted id(s) have no references: 'ghost'" in err
    assert "1 reference id(s) have no prediction: 'v2'" in err
    assert not (tmp_path / "m.json").exists()


def test_allow_missing_reports_and_leaves_them_out(tmp_path, capsys):
    preds = write(tmp_path / "p.json", {**{k: v for k, v in PREDICTIONS.items() if k != "v2"}, "ghost": "x"})
    refs = write(tmp_path / "r.json", RECORDS)
    out = tmp_path / "m.json"
    assert run_cli("--predictions", preds, "--references", refs, "--no-java", "--allow-missing", "--out", out) == 0
    doc = json.loads(out.read_text())
    assert doc["left_out"] == {"only_in_predictions": ["ghost"], "only_in_references": ["v2"]}
    assert doc["clips"]["overall"] == 3
    assert "left out 1 predicted clip(s) without references: 'ghost'" in capsys.readouterr().err


def test_dataset_pickle_references(tmp_path):
    pytest.importorskip("dataloaders.safe_pickle")
    records = [dict(r) for r in RECORDS]
    records[2]["labels"] = records[2]["labels"][0]          # a single label given as a string
    (tmp_path / "test.pkl").write_bytes(pickle.dumps(records))
    preds = write(tmp_path / "p.json", PREDICTIONS)
    out = tmp_path / "m.json"
    assert run_cli("--predictions", preds, "--references", tmp_path / "test.pkl", "--no-java", "--out", out) == 0
    references = {r["video_name"]: r["labels"] for r in RECORDS}
    assert json.loads(out.read_text())["overall"] == quiet(score_captions, PREDICTIONS, references, use_java=False)


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    pytest.importorskip("dataloaders.safe_pickle")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([collections.Counter(a=1)]))
    preds = write(tmp_path / "p.json", PREDICTIONS)
    assert run_cli("--predictions", preds, "--references", tmp_path / "evil.pkl", "--no-java") == 2
    assert "collections.Counter" in capsys.readouterr().err


@pytest.mark.parametrize("predictions, references, fragment", [
    (None, RECORDS, "predictions file not found"),
    ("{not json", RECORDS, "not a readable JSON file"),
    ([{"video_name": "v1"}], RECORDS, "record 0 (video_name 'v1') has no 'caption' or 'text' key"),
    ([{"video_name": "v1", "text": "a"}, {"video_name": "v1", "text": "b"}], RECORDS, "'v1' appears twice"),
    (PREDICTIONS, [{"video_name": "v1"}], "record 0 (video_name 'v1') has no 'labels'"),
    (PREDICTIONS, RECORDS + [RECORDS[0]], "record 4: video_name 'v1' appears twice"),
    (PREDICTIONS, "a string", "expected a list of records"),
    (PREDICTIONS, [{**RECORDS[0], "labels": []}] + RECORDS[1:], "references for id 'v1' are an empty list"),
])
def test_bad_files_exit_2_with_a_clear_message(tmp_path, capsys, predictions, references, fragment):
    preds = tmp_path / "p.json"
    if isinstance(predictions, str):
        preds.write_text(predictions)
    elif predictions is not None:
        write(preds, predictions)
    refs = write(tmp_path / "r.json", references)
    assert run_cli("--predictions", preds, "--references", refs, "--no-java") == 2
    assert fragment in capsys.readouterr().err


def test_an_empty_caption_is_scored_as_an_empty_hypothesis(tmp_path, capsys):
    """A model may write nothing for a clip: the command scores it (as training's evaluation does)
    and says so, instead of refusing the file."""
    out = tmp_path / "m.json"
    preds = write(tmp_path / "p.json", {**PREDICTIONS, "v1": ""})
    assert run_cli("--predictions", preds, "--references", write(tmp_path / "r.json", RECORDS), "--no-java",
                   "--out", out) == 0
    assert "1 empty caption(s) scored as empty hypotheses (v1)" in capsys.readouterr().out
    with_text = tmp_path / "m2.json"
    assert run_cli("--predictions", write(tmp_path / "p2.json", PREDICTIONS), "--references", tmp_path / "r.json",
                   "--no-java", "--out", with_text) == 0
    assert json.loads(out.read_text())["overall"]["BLEU-1"] < json.loads(with_text.read_text())["overall"]["BLEU-1"]


def test_unsupported_reference_extension(tmp_path, capsys):
    preds = write(tmp_path / "p.json", PREDICTIONS)
    (tmp_path / "r.csv").write_text("video_name,labels\n")
    assert run_cli("--predictions", preds, "--references", tmp_path / "r.csv", "--no-java") == 2
    assert "dataset pickle (.pkl) or JSON (.json)" in capsys.readouterr().err


def test_references_without_motion_type_have_no_breakdown(tmp_path):
    records = [{k: v for k, v in r.items() if k != "motion_type"} for r in RECORDS]
    out = tmp_path / "m.json"
    assert run_cli("--predictions", write(tmp_path / "p.json", PREDICTIONS), "--references",
                   write(tmp_path / "r.json", records), "--no-java", "--out", out) == 0
    doc = json.loads(out.read_text())
    assert doc["by_motion_type"] == {} and doc["clips"] == {"overall": 4}


def test_real_bx_pickle(bx_dir, tmp_path):
    records = json.loads((bx_dir / "BX_test.json").read_text(encoding="utf-8"))
    preds = write(tmp_path / "p.json", [{"video_name": r["video_name"], "caption": r["augmented_labels"][0]}
                                        for r in records])
    out = tmp_path / "m.json"
    assert run_cli("--predictions", preds, "--references", bx_dir / "BX_test.pkl", "--no-java", "--out", out) == 0
    doc = json.loads(out.read_text())
    assert doc["clips"] == {"overall": 41, "Cross": 27, "Jab": 14}
    assert doc["overall"]["BLEU-1"] == pytest.approx(0.6674, abs=1e-3)
    assert doc["overall"]["CIDEr"] == pytest.approx(0.6961, abs=1e-3)
