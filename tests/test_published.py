"""The published protocol (evaluation.published): nlg-metricverse's definitions re-computed.

Golden values: nlg-metricverse is not a project requirement, so it cannot run here.  The
numbers below were produced once in a separate virtualenv with nlg-metricverse 0.9.9
(rouge-score 0.1.2, numpy 1.26.4, pandas 2.1.4, datasets 2.9.0, pyarrow 14.0.2), by the call
the CoachMe paper makes:

    metrics = [load_metric("bleu", resulting_name="bleu_1", compute_kwargs={"max_order": 1}),
               load_metric("bleu", resulting_name="bleu_4", compute_kwargs={"max_order": 4}),
               load_metric("rouge"), load_metric("cider")]
    scores = NLGMetricverse(metrics)(predictions=[...], references=[[...], ...], reduce_fn="max")

reading ``bleu_1/bleu_4["score"]``, ``cider["score"]`` and ``cider["scores"]`` (per clip).  The
library needs two things from the network: its package import loads a model from the hub (two
visualisation modules, stubbed out for the run; no metric uses them) and BLEU downloads
tensorflow/nmt's ``scripts/bleu.py`` at the commit the library pins (read from a local copy of
that same file).  ROUGE-L: the library reports the median of 1000 bootstrap resamples of the
clips' mean (random); the golden ROUGE-L values are the library's own per-clip values (its
``RougePlanet._compute_single_pred_multi_ref`` with rouge-score's ``RougeScorer(["rougeL"])``
and ``numpy.max``, before the bootstrap) and their mean, which is what this project reports.
On these small sets the library's end-to-end value was that mean for every seed tried (0..3).
"""
from __future__ import annotations

import json
import math
import sys

import pytest

from evaluation import score_captions
from evaluation.metrics import CaptionInputError, MetricSkippedWarning
from evaluation.published import (BERTSCORE_NOT_RESCALED, BERTSCORE_RESCALED, PUBLISHED_NAMES, bleu_tokens,
                                  cider_tokens, corpus_bleu, lcs_length, main, published_details,
                                  rouge_l, rouge_l_best, rouge_tokens, score_published)

TOL = 1e-6

CLIPS = {
    "a": ("Rotate your hips and keep your guard up.",
          ["Rotate your hips more when you punch.", "Keep your guard up, and rotate the hips.",
           "Your body isn’t rotating; use your legs."]),
    # the hypothesis equals one of its references
    "b": ("Keep your other hand up for defense.",
          ["Keep your other hand up for defense.", "Hold the other hand up to guard your face."]),
    # no word in common with any reference
    "c": ("Excellent timing overall",
          ["Bend your knees slightly.", "Lower your center of gravity and bend the knees."]),
    "d": ("Your elbow flares out; tuck the elbow in.",
          ["Tuck your elbow in when you jab.", "Your elbow is flaring out, keep it tucked.",
           "Don't let the elbow flare; you're dropping your hand."]),
    "e": ("Shift your weight to the front foot",
          ["Shift your weight forward onto the front foot.",
           "YOUR WEIGHT stays on the back foot; shift it forward!"]),
    # shorter than its shortest reference (brevity penalty below 1)
    "f": ("Your elbow flares out",
          ["Your elbow is flaring out and your chin is up, keep both tucked in.",
           "Tuck the elbow in, and keep the chin down."]),
}

# name: (clip ids, BLEU-1, BLEU-4, ROUGE-L per clip, CIDEr per clip, CIDEr), from nlg-metricverse 0.9.9
GOLDEN = {
    "five_clips": (["a", "b", "c", "d", "e"], 0.8181818181818182, 0.5020344159181034,
                   [0.5, 1.0, 0.0, 0.39999999999999997, 0.7999999999999999],
                   [1.0238659517076982, 6.1735677486582485, 0.0, 0.6169840483727717, 1.4709362890339475],
                   1.8570708075545332),
    "two_refs_each": (["b", "c", "e"], 0.6798309970727108, 0.5740067112238818,
                      [1.0, 0.0, 0.7999999999999999],
                      [6.088581819924225, 0.0, 1.4709362890339472], 2.519839369652724),
    "short_hypotheses": (["c", "f"], 0.18187407671869282, 0.0, [0.0, 0.3333333333333333],
                         [0.0, 0.3551694450289892], 0.1775847225144946),
    # one clip: the library takes log(number of clips) as 1, not 0
    "one_clip": (["a"], 1.0, 0.5169731539571706, [0.5], [1.1951421740758823], 1.1951421740758823),
}

# BLEU-4 statistics of the library's result (bleu_4["precisions"], ["brevity_penalty"], lengths)
GOLDEN_BLEU4 = {
    "five_clips": ([0.8181818181818182, 0.6428571428571429, 0.43478260869565216, 0.2777777777777778], 1.0, 33, 33),
    "two_refs_each": ([0.7647058823529411, 0.7142857142857143, 0.6363636363636364, 0.5], 0.8890097654027757, 17, 19),
    "short_hypotheses": ([0.42857142857142855, 0.2, 0.0, 0.0], 0.42437284567694994, 7, 13),
}


def _corpus(ids):
    return {i: CLIPS[i][0] for i in ids}, {i: list(CLIPS[i][1]) for i in ids}


# ------------------------------------------------------------------------------------------
# Against nlg-metricverse
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_matches_nlg_metricverse(name):
    ids, bleu1, bleu4, rouge_per_clip, cider_per_clip, cider = GOLDEN[name]
    details = published_details(*_corpus(ids))
    scores = details["scores"]
    assert list(scores) == list(PUBLISHED_NAMES)
    assert scores["BLEU-1"] == pytest.approx(bleu1, abs=TOL)
    assert scores["BLEU-4"] == pytest.approx(bleu4, abs=TOL)
    assert scores["ROUGE-L"] == pytest.approx(sum(rouge_per_clip) / len(rouge_per_clip), abs=TOL)
    assert scores["CIDEr"] == pytest.approx(cider, abs=TOL)
    for clip_id, rouge, cider_clip in zip(ids, rouge_per_clip, cider_per_clip):
        assert details["per_clip"][clip_id]["ROUGE-L"] == pytest.approx(rouge, abs=TOL)
        assert details["per_clip"][clip_id]["CIDEr"] == pytest.approx(cider_clip, abs=TOL)


@pytest.mark.parametrize("name", sorted(GOLDEN_BLEU4))
def test_bleu_statistics_match_nlg_metricverse(name):
    precisions, penalty, hyp_length, ref_length = GOLDEN_BLEU4[name]
    stats = published_details(*_corpus(GOLDEN[name][0]))["bleu"]["BLEU-4"]
    assert stats["precisions"] == pytest.approx(precisions, abs=TOL)
    assert stats["brevity_penalty"] == pytest.approx(penalty, abs=TOL)
    assert (stats["translation_length"], stats["reference_length"]) == (hyp_length, ref_length)


def test_edge_cases_of_the_golden_corpus():
    per_clip = published_details(*_corpus(["a", "b", "c", "d", "e"]))["per_clip"]
    assert per_clip["b"]["ROUGE-L"] == 1.0          # equal to one reference: the best reference wins
    assert per_clip["c"]["ROUGE-L"] == 0.0          # no overlap
    assert per_clip["c"]["CIDEr"] == 0.0


def test_bx_first_paraphrase_matches_nlg_metricverse(bx_dir):
    """The first paraphrase of each BX test clip against its labels (41 clips, 3 labels each).
    nlg-metricverse 0.9.9 on ../shared/data/BX/BX_test.json (same texts as the pickle) gave
    BLEU-1 0.6774193548387096, BLEU-4 0.3280649862331888, CIDEr 0.5942144485266462, ROUGE-L
    mean of per-clip 0.5748911311027922 (end-to-end, seeds 0..9: 0.5733 to 0.5759)."""
    from dataloaders.records import load_records

    path = bx_dir / "BX_test.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = load_records(path)
    predictions = {r["video_name"]: r["augmented_labels"][0] for r in records}
    references = {r["video_name"]: list(r["labels"]) for r in records}
    scores = score_published(predictions, references)
    assert scores["BLEU-1"] == pytest.approx(0.6774193548387096, abs=TOL)
    assert scores["BLEU-4"] == pytest.approx(0.3280649862331888, abs=TOL)
    assert scores["ROUGE-L"] == pytest.approx(0.5748911311027922, abs=TOL)
    assert scores["CIDEr"] == pytest.approx(0.5942144485266462, abs=TOL)


# ------------------------------------------------------------------------------------------
# Hand-computed cases
# ------------------------------------------------------------------------------------------
def test_rouge_l_takes_the_best_single_reference():
    # hypothesis: 4 tokens.  "keep your guard up high": LCS 4, P = 4/4, R = 4/5, F = 8/9.
    # "guard up": LCS 2, P = 2/4, R = 2/2, F = 2/3.  Best 8/9 (the mean would be 7/9).
    hyp, refs = "keep your guard up", ["keep your guard up high", "guard up"]
    assert rouge_l(hyp, refs[0]) == pytest.approx(8 / 9)
    assert rouge_l(hyp, refs[1]) == pytest.approx(2 / 3)
    assert rouge_l_best(hyp, refs) == pytest.approx(8 / 9)
    assert score_published({"x": hyp}, {"x": refs})["ROUGE-L"] == pytest.approx(8 / 9)
    assert score_published({"x": hyp}, {"x": refs[::-1]})["ROUGE-L"] == pytest.approx(8 / 9)


def test_rouge_l_mean_over_clips_of_best_reference():
    # clip x: 8/9 (above); clip y: "bend the knees" vs "bend your knees": LCS 2 of 3 and 3 -> 2/3
    predictions = {"x": "keep your guard up", "y": "bend the knees"}
    references = {"x": ["keep your guard up high", "guard up"], "y": ["bend your knees", "relax"]}
    assert score_published(predictions, references)["ROUGE-L"] == pytest.approx((8 / 9 + 2 / 3) / 2)


def test_bleu_uses_all_references_jointly_not_the_best_one():
    # "guard" is in the first reference, "up" in the second: both unigrams match (p1 = 1), the
    # shortest reference has 2 tokens as the hypothesis (BP = 1), so BLEU-1 = 1, though against
    # either reference alone it would be 1/2.  No 3-gram can exist: BLEU-4 = 0.
    scores = score_published({"x": "guard up"}, {"x": ["guard down", "hands up"]})
    assert scores["BLEU-1"] == pytest.approx(1.0)
    assert scores["BLEU-4"] == 0.0


@pytest.mark.filterwarnings("ignore::evaluation.metrics.MetricSkippedWarning")   # METEOR without Java
def test_bleu_brevity_penalty_uses_the_shortest_reference():
    # 4 hypothesis tokens, references of 5 and 2 tokens: the shortest (2) makes BP = 1, so
    # BLEU-1 = 1.  COCO takes the closest length (5): BP = exp(1 - 5/4).
    predictions, references = {"x": "keep your guard up"}, {"x": ["keep your guard up now", "guard up"]}
    assert score_published(predictions, references)["BLEU-1"] == pytest.approx(1.0)
    coco = score_captions(predictions, references, use_java=False)
    assert coco["BLEU-1"] == pytest.approx(math.exp(1 - 5 / 4), abs=1e-6)


def test_corpus_bleu_counts():
    stats = corpus_bleu([["a", "b", "c"]], [[["a", "b", "d"], ["c"]]], max_order=2)
    # unigrams a, b, c all found (3/3); bigrams "a b" found, "b c" not (1/2); shortest reference 1
    assert stats["precisions"] == [1.0, 0.5]
    assert (stats["translation_length"], stats["reference_length"], stats["brevity_penalty"]) == (3, 1, 1.0)
    assert stats["score"] == pytest.approx(math.sqrt(0.5))
    assert corpus_bleu([[]], [[["a"]]], max_order=1)["score"] == 0.0


def test_cider_of_a_single_clip_equal_to_its_reference_is_ten():
    # One clip: log(number of clips) is taken as 1, every reference n-gram has document
    # frequency 1 (idf weight 1 - log 1 = 1): equal texts have cosine 1 at n = 1..4 and no
    # length penalty, so CIDEr = 10 x mean(1, 1, 1, 1) = 10 (pycocoevalcap would give 0).
    text = "keep your guard up high"
    assert score_published({"x": text}, {"x": [text]})["CIDEr"] == pytest.approx(10.0)


def test_cider_averages_over_references():
    # A second, unrelated reference halves a clip's CIDEr (sum of similarities / references),
    # where ROUGE-L's best reference is unchanged.
    predictions = {"x": "keep your guard up high", "y": "bend your knees a little"}
    one = {"x": ["keep your guard up high"], "y": ["bend your knees more please"]}
    two = {"x": ["keep your guard up high", "zz qq ww"], "y": ["bend your knees more please"]}
    single, double = published_details(predictions, one), published_details(predictions, two)
    assert double["per_clip"]["x"]["ROUGE-L"] == single["per_clip"]["x"]["ROUGE-L"] == 1.0
    # the extra reference's n-grams are new document entries only for themselves: the shared
    # n-grams keep their idf, so x's similarity to its first reference is unchanged
    assert double["per_clip"]["x"]["CIDEr"] == pytest.approx(single["per_clip"]["x"]["CIDEr"] / 2)


def test_cider_keeps_case_and_punctuation():
    references = {"x": ["keep your guard up"], "y": ["bend your knees"]}
    plain = score_published({"x": "keep your guard up", "y": "bend your knees"}, references)["CIDEr"]
    styled = score_published({"x": "Keep your guard up.", "y": "bend your knees"}, references)["CIDEr"]
    assert styled < plain
    # BLEU and ROUGE-L ignore both
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L"):
        assert score_published({"x": "Keep your guard up.", "y": "bend your knees"}, references)[name] == \
            pytest.approx(score_published({"x": "keep your guard up", "y": "bend your knees"}, references)[name])


def test_tokenisers():
    text = "Don't lock your FRONT leg; you’re over-rotating!"
    assert bleu_tokens(text) == ["don", "t", "lock", "your", "front", "leg", "you’re", "over", "rotating"]
    assert rouge_tokens(text) == ["don", "t", "lock", "your", "front", "leg", "you", "re", "over", "rotating"]
    assert cider_tokens(text) == ["Don't", "lock", "your", "FRONT", "leg;", "you’re", "over-rotating!"]


def test_lcs_length():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length([], ["a"]) == 0
    assert rouge_l("", "keep") == 0.0 and rouge_l("!!!", "keep") == 0.0


# ------------------------------------------------------------------------------------------
# Inputs, empty predictions, BERTScore
# ------------------------------------------------------------------------------------------
def test_bad_inputs_raise():
    with pytest.raises(CaptionInputError, match="'x'"):
        score_published({"x": ""}, {"x": ["keep your guard up"]})
    with pytest.raises(CaptionInputError):
        score_published({"x": "a"}, {"y": ["a"]})
    with pytest.raises(CaptionInputError, match="every prediction is empty"):
        score_published({"x": ""}, {"x": ["a"]}, allow_empty_predictions=True)


def test_empty_predictions_are_left_out_like_the_library():
    predictions = {"x": "", "y": "bend your knees"}
    references = {"x": ["keep your guard up"], "y": ["bend your knees"]}
    with pytest.warns(MetricSkippedWarning, match="1 empty prediction"):
        details = published_details(predictions, references, allow_empty_predictions=True)
    assert details["left_out_empty"] == ["x"] and list(details["per_clip"]) == ["y"]
    # a white-space-only prediction is not "" and is scored (as an empty hypothesis)
    kept = published_details({"x": " ", "y": "bend your knees"}, references, allow_empty_predictions=True)
    assert kept["per_clip"]["x"] == {"ROUGE-L": 0.0, "CIDEr": 0.0}


def test_bertscore_needs_an_existing_folder(tmp_path):
    with pytest.warns(MetricSkippedWarning, match="does not exist"):
        scores = score_published({"x": "a b"}, {"x": ["a b"]}, bertscore_model=tmp_path / "absent")
    assert set(scores) == set(PUBLISHED_NAMES)


def test_bertscore_skipped_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bert_score", None)       # import bert_score -> ImportError
    with pytest.warns(MetricSkippedWarning, match="'bert-score' package is not installed"):
        scores = score_published({"x": "a b"}, {"x": ["a b"]}, bertscore_model=tmp_path)
    assert BERTSCORE_RESCALED not in scores and BERTSCORE_NOT_RESCALED not in scores


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def _write_inputs(tmp_path, ids):
    predictions, references = _corpus(ids)
    pred_path, ref_path = tmp_path / "predictions.json", tmp_path / "references.json"
    pred_path.write_text(json.dumps(predictions), encoding="utf-8")
    ref_path.write_text(json.dumps(references), encoding="utf-8")
    return pred_path, ref_path


def test_command_prints_and_writes(tmp_path, capsys):
    pred_path, ref_path = _write_inputs(tmp_path, ["a", "b", "c", "d", "e"])
    out = tmp_path / "published.json"
    assert main(["--predictions", str(pred_path), "--references", str(ref_path), "--out", str(out),
                 "--with-coco"]) == 0
    printed = capsys.readouterr().out
    assert "BLEU-4" in printed and "x100" in printed and "COCO" in printed and "50.20" in printed
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["published"]["BLEU-4"] == pytest.approx(GOLDEN["five_clips"][2], abs=TOL)
    assert set(document["coco"]) >= {"BLEU-4", "CIDEr", "ROUGE-L"}


def test_command_reports_bad_input(tmp_path, capsys):
    pred_path, ref_path = _write_inputs(tmp_path, ["a", "b"])
    pred_path.write_text(json.dumps({"a": CLIPS["a"][0]}), encoding="utf-8")
    assert main(["--predictions", str(pred_path), "--references", str(ref_path)]) == 2
    assert "no prediction" in capsys.readouterr().err
    assert main(["--predictions", str(pred_path), "--references", str(ref_path), "--allow-missing"]) == 0
