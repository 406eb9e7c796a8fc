"""Caption metrics: equality with pycocoevalcap run directly, hand-computed values, bad inputs.

pycocoevalcap "run directly" means its PTBTokenizer on each side followed by its Bleu, Meteor,
Rouge and Cider scorers, as COCOEvalCap.evaluate does.  METEOR starts a JVM (~10 s): the direct
computation shares one session-scoped Meteor; ours reuses the module's METEOR service.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import shutil
import subprocess
import sys
import warnings

import pytest

from evaluation import metrics
from tests.caption_templates import synthetic_case
from evaluation.metrics import (CaptionInputError, JavaNotFoundError, MetricSkippedWarning, MissingIdsError,
                                score_captions, score_with_breakdown)
from core.ptb_tokenizer import coco_tokenize_python

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java runtime not installed")
NON_METEOR = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")
ALL = NON_METEOR[:4] + ("METEOR",) + NON_METEOR[4:]
# pycocoevalcap 1.2 on the BX test case (issue 3), for orientation.
BX_ORIENTATION = {"BLEU-1": 0.6674, "BLEU-4": 0.3244, "ROUGE-L": 0.589, "CIDEr": 0.6961, "METEOR": 0.3506}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def bx_case(bx_dir):
    """Hypotheses = first augmented label, references = labels, from BX_test.json."""
    records = json.loads((bx_dir / "BX_test.json").read_text(encoding="utf-8"))
    predictions = {r["video_name"]: r["augmented_labels"][0] for r in records}
    references = {r["video_name"]: list(r["labels"]) for r in records}
    groups = {r["video_name"]: r["motion_type"] for r in records}
    return predictions, references, groups


@pytest.fixture(scope="session")
def direct_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    yield meteor
    meteor.meteor_p.stdin.close()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()


def pycocoevalcap_direct(predictions, references, meteor=None) -> dict[str, float]:
    """pycocoevalcap run directly (Java tokenizer), in the references' id order."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in references})
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in references})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    if meteor is not None:
        out["METEOR"] = meteor.compute_score(gts, res)[0]
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


def quiet_score(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        return score_captions(*args, **kwargs)


def quiet_breakdown(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        return score_with_breakdown(*args, **kwargs)


def score_with_notes(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score_captions(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, MetricSkippedWarning)]


def assert_close(ours: dict, expected: dict, keys, tol: float) -> None:
    for key in keys:
        assert ours[key] == pytest.approx(expected[key], abs=tol), (key, ours[key], expected[key])


# ------------------------------------------------------------------------------ equality
@pytest.mark.java
@needs_java
def test_bx_equals_pycocoevalcap_direct(bx_case, direct_meteor):
    predictions, references, _ = bx_case
    direct = pycocoevalcap_direct(predictions, references, direct_meteor)
    with_java = score_captions(predictions, references, use_java=True)
    without_java = quiet_score(predictions, references, use_java=False)
    assert list(with_java) == list(ALL)
    assert_close(with_java, direct, ALL, 1e-9)
    assert_close(without_java, direct, NON_METEOR, 1e-9)
    assert "METEOR" not in without_java
    assert_close(with_java, BX_ORIENTATION, BX_ORIENTATION, 1e-3)


def test_bx_orientation_values_without_java(bx_case):
    predictions, references, _ = bx_case
    ours = quiet_score(predictions, references, use_java=False)
    assert_close(ours, BX_ORIENTATION, [k for k in BX_ORIENTATION if k != "METEOR"], 1e-3)


@pytest.mark.java
@needs_java
def test_synthetic_texts_equal_pycocoevalcap_direct(direct_meteor):
    predictions, references = synthetic_case(seed=3, n_clips=300, n_refs=3)
    direct = pycocoevalcap_direct(predictions, references, direct_meteor)
    assert_close(score_captions(predictions, references, use_java=True), direct, ALL, 1e-9)
    assert_close(quiet_score(predictions, references, use_java=False), direct, NON_METEOR, 1e-9)
    assert 0.05 < direct["BLEU-4"] < 0.95 and 0.05 < direct["METEOR"] < 0.95   # a non-trivial case


# ------------------------------------------------------------------------------ by hand
def test_bleu_by_hand_on_two_clips():
    # Texts are lower-case without punctuation, so COCO tokenisation leaves them unchanged.
    predictions = {"A": "a man is jumping over a box", "B": "a dog runs"}
    references = {"A": ["a man jumps over a box", "the man is jumping over the wooden box"],
                  "B": ["a dog runs very fast", "the dog is running quickly"]}
    # Clipped n-gram matches (an n-gram counts at most as often as in the reference that has most):
    #   A (7 words): 1-grams a,a,man,is,jumping,over,box: 7/7; 2-grams "a man" "man is" "is jumping"
    #     "jumping over" "over a" "a box": 6/6; 3-grams: "man is jumping", "is jumping over",
    #     "over a box" match, "a man is", "jumping over a" do not: 3/5; 4-grams: only
    #     "man is jumping over" matches: 1/4.
    #   B (3 words): "a dog runs" is in the first reference: 3/3, 2/2, 1/1, 0/0.
    # Corpus totals: 10/10, 8/8, 4/6, 1/4.
    # Closest reference length: A has 6 and 8 (both 1 away from 7: the shorter, 6); B has 5 and 5.
    # Hypothesis length 10 < reference length 11, so the brevity penalty is exp(1 - 11/10).
    bp = math.exp(1 - 11 / 10)
    expected = {"BLEU-1": bp, "BLEU-2": bp, "BLEU-3": (4 / 6) ** (1 / 3) * bp, "BLEU-4": (1 / 6) ** (1 / 4) * bp}
    # pycocoevalcap adds 1e-15 to matches and 1e-9 to counts, which moves the values by ~2e-10.
    assert_close(quiet_score(predictions, references, use_java=False), expected, expected, 1e-9)


def test_cider_d_by_hand_on_two_clips():
    predictions = {"A": "a man runs fast", "B": "a dog sits"}
    references = {"A": ["a man walks"], "B": ["a dog sits"]}
    # CIDEr-D: n-gram weight = count * (log N - log max(1, df)), df = number of clips whose
    # references contain the n-gram, N = 2 clips.  "a" is in both clips' references: weight 0;
    # every other n-gram (in one clip's references, or in none) has weight L = log 2.
    # Per n: sum over hypothesis n-grams of min(w_hyp, w_ref) * w_ref / (|w_hyp| |w_ref|),
    # times exp(-(len_hyp - len_ref)^2 / (2 * 6^2)); the clip score is 10 * mean over n = 1..4.
    #   A, n=1: hyp {a:0, man:L, runs:L, fast:L} (norm sqrt(3) L), ref {a:0, man:L, walks:L}
    #           (norm sqrt(2) L); only "man" contributes L*L: 1/sqrt(6).
    #   A, n=2: hyp {a man, man runs, runs fast} (sqrt(3) L), ref {a man, man walks} (sqrt(2) L):
    #           1/sqrt(6).  n=3: no shared 3-gram: 0.  n=4: the reference has none: 0.
    #   A: length penalty exp(-1/72) (4 words against 3): 10 * (2/sqrt(6))/4 * exp(-1/72).
    #   B: identical to its reference: n = 1, 2, 3 give 1, n = 4 gives 0: 10 * 3/4 = 7.5.
    clip_a = 10 * (2 / math.sqrt(6)) / 4 * math.exp(-1 / 72)
    expected = (clip_a + 7.5) / 2
    assert quiet_score(predictions, references, use_java=False)["CIDEr"] == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------ groups, order
def test_breakdown_equals_scoring_each_subset(bx_case):
    predictions, references, groups = bx_case
    groups = dict(groups)
    groups[next(iter(groups))] = None            # one clip without a motion type
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        overall, by_group = score_with_breakdown(predictions, references, groups, use_java=False)
    assert overall == quiet_score(predictions, references, use_java=False)
    assert list(by_group) == sorted(by_group) and "(none)" in by_group and set(by_group) > {"Cross", "Jab"}
    for group, table in by_group.items():
        ids = [i for i in references if (groups[i] or "(none)") == group]
        subset = quiet_score({i: predictions[i] for i in ids}, {i: references[i] for i in ids}, use_java=False)
        assert table == subset


def test_breakdown_without_groups_is_the_overall_table():
    predictions, references = synthetic_case(seed=6, n_clips=20)
    overall, by_group = quiet_breakdown(predictions, references, None, use_java=False)
    assert by_group == {} and overall == quiet_score(predictions, references, use_java=False)


def test_dict_order_does_not_matter():
    predictions, references = synthetic_case(seed=5, n_clips=60)
    shuffled = {k: references[k] for k in reversed(list(references))}
    a = quiet_score(predictions, references, use_java=False)
    b = quiet_score(dict(reversed(list(predictions.items()))), shuffled, use_java=False)
    assert_close(a, b, NON_METEOR, 1e-12)


def test_empty_prediction_allowed_on_request():
    result = quiet_score({"a": "", "b": "a man walks"}, {"a": ["a dog"], "b": ["a man walks"]},
                         use_java=False, allow_empty_predictions=True)
    assert 0 < result["BLEU-1"] < 1 and math.isfinite(result["CIDEr"])


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("predictions, references, fragment", [
    ({"a": ""}, {"a": ["x"]}, "prediction for id 'a' is empty"),
    ({"a": "   "}, {"a": ["x"]}, "prediction for id 'a' is empty"),
    ({"a": 3}, {"a": ["x"]}, "prediction for id 'a' is int"),
    ({"a": None}, {"a": ["x"]}, "prediction for id 'a' is NoneType"),
    ({"a": "x"}, {"a": []}, "references for id 'a' are an empty list"),
    ({"a": "x"}, {"a": "x"}, "references for id 'a' are str"),
    ({"a": "x"}, {"a": ["x", 5]}, "reference 1 for id 'a' is int"),
    ({"a": "x"}, {"a": ["x", " "]}, "reference 1 for id 'a' is empty"),
    ({}, {}, "nothing to score"),
    (["x"], {"a": ["x"]}, "predictions must be a dict"),
])
def test_bad_inputs_raise_value_errors_naming_the_id(predictions, references, fragment):
    with pytest.raises(CaptionInputError, match=fragment.replace("(", r"\(")) as info:
        score_captions(predictions, references, use_java=False)
    assert isinstance(info.value, ValueError)


def test_missing_ids_are_listed_both_ways_and_truncated():
    predictions = {f"p{k}": "x" for k in range(13)}
    predictions["shared"] = "x"
    references = {"shared": ["x"], "r0": ["x"]}
    with pytest.raises(MissingIdsError) as info:
        score_captions(predictions, references, use_java=False)
    message = str(info.value)
    assert "13 predicted id(s) have no references" in message and "'p0'" in message and "'p9'" in message
    assert "'p10'" not in message and "(+3 more)" in message
    assert "1 reference id(s) have no prediction: 'r0'" in message
    assert info.value.only_in_references == ["r0"] and len(info.value.only_in_predictions) == 13


# ------------------------------------------------------------------------------ Java handling
def test_no_java_gives_one_warning_and_no_meteor(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    predictions, references = synthetic_case(seed=1, n_clips=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score_captions(predictions, references)             # use_java=None: auto-detect
    skipped = [w for w in caught if issubclass(w.category, MetricSkippedWarning)]
    assert len(skipped) == 1 and "METEOR" in str(skipped[0].message) and "java" in str(skipped[0].message)
    assert set(result) == set(NON_METEOR)
    with pytest.raises(JavaNotFoundError, match="no 'java' executable"):
        score_captions(predictions, references, use_java=True)


def test_java_tokenizer_failure_falls_back_to_python(monkeypatch):
    def failed_java(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout=b"", stderr=b"Error: could not open the jar")

    monkeypatch.setattr(metrics.subprocess, "run", failed_java)
    with pytest.raises(RuntimeError, match="java exited with status 1: Error: could not open the jar"):
        metrics.java_ptb_tokenize(["Don't go (now)."])
    with pytest.warns(MetricSkippedWarning, match="pure-Python tokenizer"):
        out = metrics._tokenize_java(["Don't go (now)."])
    assert out == coco_tokenize_python(["Don't go (now)."])


def test_java_tokenizer_returning_too_few_lines_is_an_error(monkeypatch):
    def short_output(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout=b"a\n", stderr=b"")

    monkeypatch.setattr(metrics.subprocess, "run", short_output)
    with pytest.raises(RuntimeError, match="returned 2 lines for 3 captions"):
        metrics.java_ptb_tokenize(["a", "b", "c"])


def test_meteor_failure_keeps_the_other_metrics(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: True)
    monkeypatch.setattr(metrics, "_tokenize_java", coco_tokenize_python)

    def broken(gts, res):
        raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(metrics._METEOR, "score", broken)
    predictions, references = synthetic_case(seed=2, n_clips=5)
    with pytest.warns(MetricSkippedWarning, match="METEOR Java process failed"):
        result = score_captions(predictions, references, use_java=True)
    assert set(result) == set(NON_METEOR)


# ------------------------------------------------------------------------------ BERTScore
def test_bertscore_missing_model_folder_is_skipped_with_a_note(tmp_path):
    predictions, references = synthetic_case(seed=4, n_clips=3)
    result, notes = score_with_notes(predictions, references, use_java=False, bertscore_model=tmp_path / "absent")
    assert any(n.startswith("BERTScore skipped: model folder") for n in notes)
    assert "BERTScore-F1" not in result


def test_bertscore_without_the_package_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bert_score", None)      # makes "import bert_score" fail
    predictions, references = synthetic_case(seed=4, n_clips=3)
    result, notes = score_with_notes(predictions, references, use_java=False, bertscore_model=tmp_path)
    assert any("'bert-score' package is not installed" in n for n in notes)
    assert "BERTScore-F1" not in result and set(NON_METEOR) <= set(result)


# ------------------------------------------------------------------------------ console
def score_both_ways(use_java: bool) -> list[str]:
    """score_captions and score_with_breakdown on a small case; returns the warnings' texts."""
    predictions, references = synthetic_case(seed=7, n_clips=30)
    groups = {clip: ("odd" if n % 2 else "even") for n, clip in enumerate(references)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_captions(predictions, references, use_java=use_java)
        score_with_breakdown(predictions, references, groups, use_java=use_java)
    return [str(w.message) for w in caught]


def test_scoring_prints_nothing_without_java(capfd):
    # capfd reads file descriptors 1 and 2, so a child process writing there would show too.
    notes = score_both_ways(use_java=False)
    assert capfd.readouterr() == ("", "")
    assert notes and all(n.startswith("METEOR left out") for n in notes)


@pytest.mark.java
@needs_java
def test_scoring_prints_nothing_with_java(capfd, caplog):
    # The Java tokenizer's "PTBTokenizer tokenized N tokens at ..." goes to the DEBUG log only.
    caplog.set_level(logging.DEBUG, logger="evaluation.metrics")
    notes = score_both_ways(use_java=True)
    assert capfd.readouterr() == ("", "")
    assert notes == []
    assert any("PTBTokenizer tokenized" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


# ------------------------------------------------------------------------------ names
def test_package_names_say_one_thing():
    import evaluation
    import evaluation.score as cli

    # evaluation.score is the command's module, never a function; nothing is called "evaluate".
    assert evaluation.score is cli and inspect.ismodule(evaluation.score)
    assert not hasattr(evaluation, "evaluate")
    for module in (evaluation, metrics):
        for name in ("score", "evaluate", "score_by_group"):
            assert not inspect.isfunction(getattr(module, name, None)), f"{module.__name__}.{name}"
    assert evaluation.score_captions is metrics.score_captions
    assert evaluation.score_with_breakdown is metrics.score_with_breakdown
    assert set(evaluation.__all__) >= {"score_captions", "score_with_breakdown"}
    assert not {"score", "evaluate"} & set(evaluation.__all__)


def test_fresh_package_has_no_score_or_evaluate_attribute():
    code = ("import evaluation; assert not hasattr(evaluation, 'score'), evaluation.score; "
            "assert not hasattr(evaluation, 'evaluate'); "
            "import evaluation.score; from evaluation import score_captions, score_with_breakdown; "
            "assert callable(score_captions) and callable(score_with_breakdown)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=metrics.__file__.rsplit("/evaluation/", 1)[0])


# ------------------------------------------------------------------------------ imports
def test_evaluation_does_not_import_torch():
    code = ("import sys, evaluation.metrics, evaluation.score, core.ptb_tokenizer; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=metrics.__file__.rsplit("/evaluation/", 1)[0])
