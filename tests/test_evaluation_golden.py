"""Metric values pinned as literals, so that a machine without Java still checks our numbers
against an independent computation (the Java tests compare with pycocoevalcap run live).

The corpus is already in COCO-tokenised form (lower case, no punctuation, nothing the PTB
tokenizer splits), so the values depend on the scorers alone; a test checks that the pure-Python
tokenizer indeed leaves it unchanged.
"""
from __future__ import annotations

import warnings

import pytest

from evaluation import MetricSkippedWarning, score_captions
from core.ptb_tokenizer import coco_tokenize_python

PREDICTIONS = {
    "c1": "keep your left hand up when you jab",
    "c2": "rotate your hips more",
    "c3": "your back foot is not lifted",
    "c4": "bring the right hand back to your chin",
    "c5": "good jab",
}
REFERENCES = {
    "c1": ["keep your left hand up", "raise your left hand when you throw the jab",
           "do not drop the left hand after the jab"],
    "c2": ["rotate your hips more on the cross", "turn your hips into the punch"],
    "c3": ["lift your back heel", "the back foot should pivot and lift", "your rear foot stays flat"],
    "c4": ["return the right hand to the chin quickly", "bring your right hand back to guard"],
    "c5": ["the jab is good", "nice straight jab", "good form on the jab keep it up"],
}

# Recorded once with pycocoevalcap 1.2's scorers called directly on the corpus above, without
# any code of this project: gts = {id: REFERENCES[id]}, res = {id: [PREDICTIONS[id]]} (ids in
# the order c1..c5), then Bleu(4).compute_score(gts, res, verbose=0), Rouge().compute_score(gts,
# res) and Cider().compute_score(gts, res); the corpus scores printed with repr().
GOLDEN = {
    "BLEU-1": 0.8021404654320535,
    "BLEU-2": 0.662307292269518,
    "BLEU-3": 0.5595020317687788,
    "BLEU-4": 0.4604700118227735,
    "ROUGE-L": 0.6242761748974737,
    "CIDEr": 2.5430830527497883,
}


def score_without_java(predictions, references):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)     # "METEOR left out": expected
        return score_captions(predictions, references, use_java=False)


def test_corpus_is_already_coco_tokenised():
    texts = list(PREDICTIONS.values()) + [r for refs in REFERENCES.values() for r in refs]
    assert coco_tokenize_python(texts) == texts


def test_equals_values_recorded_from_pycocoevalcap():
    ours = score_without_java(PREDICTIONS, REFERENCES)
    assert set(ours) == set(GOLDEN)
    for metric, expected in GOLDEN.items():
        assert ours[metric] == pytest.approx(expected, abs=1e-9), (metric, ours[metric], expected)


def test_rouge_l_by_hand_takes_best_precision_and_best_recall_separately():
    predictions = {"a": "a man walks slowly forward", "b": "hands up"}
    references = {"a": ["a man walks", "the man walks slowly forward then stops and turns"],
                  "b": ["hands up"]}
    # Clip a: the hypothesis has 5 tokens.
    #   reference 1 "a man walks" (3 tokens): LCS "a man walks" = 3, P = 3/5, R = 3/3 = 1.
    #   reference 2 (9 tokens): LCS "man walks slowly forward" = 4, P = 4/5, R = 4/9.
    # pycocoevalcap takes the best precision and the best recall over the references separately
    # (here from different references): P = 4/5, R = 1, then with beta = 1.2:
    #   F = (1 + beta^2) P R / (R + beta^2 P) = 2.44 * 0.8 / (1 + 1.44 * 0.8) = 1.952 / 2.152 = 244/269.
    # (The best F of a single reference would be reference 1's: 2.44 * 0.6 / 1.864 = 0.785...)
    # Clip b: identical to its reference, P = R = 1, F = 1.
    # The corpus ROUGE-L is the mean over clips: (244/269 + 1) / 2 = 513/538.
    expected = (244 / 269 + 1) / 2
    assert expected == pytest.approx(513 / 538, abs=1e-15)
    ours = score_without_java(predictions, references)["ROUGE-L"]
    assert ours == pytest.approx(expected, abs=1e-12)
