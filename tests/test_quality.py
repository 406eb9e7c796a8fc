"""evaluation.quality: CIDEr-D matrix against pycocoevalcap, self-retrieval, bootstrap, novelty.

"Independent" values come from pycocoevalcap's own scorers called directly (on text tokenised by
the project's pure-Python COCO tokenizer) or from small cases worked out by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from core.ptb_tokenizer import coco_tokenize_python
from evaluation.quality import (Interval, bleu_statistic, bootstrap_ci, bootstrap_metric, cider_d_matrix,
                                cider_statistic, distinct, document_frequency, normalize_text, novelty,
                                paired_difference, recall_at_k, held_out_reference, retrieval_ceiling, retrieval_ranks,
                                self_retrieval)


# ------------------------------------------------------------------------------ helpers
def coco_cider_rows(candidates, references):
    """pycocoevalcap's CIDEr-D of every candidate against every clip (square case), with the
    document frequencies of ``references``: shift s puts candidate (i + s) % M on clip i, so one
    corpus call per shift fills one diagonal of the matrix."""
    m = len(references)
    gts = {i: list(references[i]) for i in range(m)}
    out = np.zeros((m, m))
    for shift in range(m):
        res = {i: [candidates[(i + shift) % m]] for i in range(m)}
        _, per_clip = Cider().compute_score(gts, res)
        for i in range(m):
            out[(i + shift) % m, i] = per_clip[i]
    return out


def random_corpus(rng, n_clips, vocab=("a", "b", "c", "d", "e", "f"), max_len=12, max_refs=4):
    def text():
        return " ".join(rng.choice(vocab, size=int(rng.integers(1, max_len + 1))))
    refs = [[text() for _ in range(int(rng.integers(1, max_refs + 1)))] for _ in range(n_clips)]
    cands = [text() for _ in range(n_clips)]
    return cands, refs


@pytest.fixture(scope="module")
def bx_texts(bx_dir):
    from dataloaders.records import load_records

    train = load_records(bx_dir / "BX_train.pkl")
    test = load_records(bx_dir / "BX_test.pkl")
    return train, test


# ------------------------------------------------------------------------------ novelty, distinct
def test_normalize_text_lowercases_collapses_space_and_strips_trailing_punctuation():
    assert normalize_text("  Keep  your\tguard UP !. ") == "keep your guard up"
    assert normalize_text("Your hands aren't relaxed, really.") == "your hands aren't relaxed, really"
    assert normalize_text("Wait...") == normalize_text("wait\u2026") == "wait"


def test_novelty_and_distinct_on_constructed_predictions():
    training = ["Keep your guard up.", "Rotate the hips more."]
    predictions = {"a": "keep your guard UP", "b": "Rotate the hips more!", "c": "Bend the knees.",
                   "d": "bend the knees", "e": "Rotate the hips"}
    # copies: a, b (after normalisation); new: c, d, e.
    assert novelty(predictions, training) == pytest.approx(3 / 5)
    assert distinct(predictions) == 4  # "keep...", "rotate the hips more", "bend the knees", "rotate the hips"
    assert novelty(["Keep your guard up"], training) == 0.0
    assert distinct([]) == 0
    with pytest.raises(ValueError):
        novelty({}, training)


# ------------------------------------------------------------------------------ CIDEr-D matrix
def test_cider_d_matrix_equals_pycocoevalcap_on_bx_texts(bx_texts):
    train, test = bx_texts
    references = [coco_tokenize_python(r["labels"]) for r in test]
    candidates = coco_tokenize_python([r["labels"][0] for r in train[:len(test)]])
    candidates[0] = references[0][1]  # an exact match, too
    ours = cider_d_matrix(candidates, references, tokenized=True)
    np.testing.assert_allclose(ours, coco_cider_rows(candidates, references), rtol=0, atol=1e-9)
    assert ours[0, 0] > 1.0


def test_cider_d_matrix_tokenises_like_the_scorer(bx_texts):
    train, test = bx_texts
    raw_refs = [r["labels"] for r in test[:10]]
    raw_cands = [r["labels"][1] for r in train[:10]]
    tokenised = cider_d_matrix(coco_tokenize_python(raw_cands), [coco_tokenize_python(r) for r in raw_refs],
                               tokenized=True)
    np.testing.assert_array_equal(cider_d_matrix(raw_cands, raw_refs), tokenised)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_matrix_equals_pycocoevalcap_on_random_token_strings(seed):
    rng = np.random.default_rng(seed)
    cands, refs = random_corpus(rng, 12)
    cands[3] = ""                      # an empty hypothesis scores 0
    cands[4] = "a"                     # one word: no bigram, length 0
    refs[5] = [cands[5]] * 2           # repeated references, repeated n-grams
    ours = cider_d_matrix(cands, refs, tokenized=True)
    np.testing.assert_allclose(ours, coco_cider_rows(cands, refs), rtol=0, atol=1e-9)
    assert np.all(ours[3] == 0)


def test_cider_d_matrix_with_document_frequencies_from_a_larger_corpus():
    """References that are the first clips of a corpus, df from the whole corpus: pycocoevalcap
    scoring the whole corpus gives the same values for those clips."""
    rng = np.random.default_rng(7)
    cands, corpus = random_corpus(rng, 10)
    ours = cider_d_matrix(cands[:4], corpus[:4], df_corpus=corpus, tokenized=True)
    _, per_clip = Cider().compute_score({i: corpus[i] for i in range(10)}, {i: [cands[i]] for i in range(10)})
    np.testing.assert_allclose(np.diag(ours), per_clip[:4], rtol=0, atol=1e-9)
    df = document_frequency(corpus, tokenized=True)
    np.testing.assert_array_equal(cider_d_matrix(cands[:4], corpus[:4], df, tokenized=True), ours)


def test_cider_d_matrix_rejects_clips_without_references():
    with pytest.raises(ValueError, match=r"references\[1\]"):
        cider_d_matrix(["a b"], [["a b"], []], tokenized=True)
    assert cider_d_matrix([], [["a"]], tokenized=True).shape == (0, 1)


# ------------------------------------------------------------------------------ self-retrieval
def test_retrieval_ranks_by_hand():
    scores = np.array([[3.0, 1.0, 2.0],    # own best: rank 1
                       [2.0, 2.0, 0.0],    # tie with clip 0: rank 2 against, 1 for
                       [5.0, 4.0, 0.0]])   # two higher: rank 3
    assert retrieval_ranks(scores).tolist() == [1, 2, 3]
    assert retrieval_ranks(scores, ties="for").tolist() == [1, 1, 3]
    assert recall_at_k([1, 2, 3], (1, 2, 3)) == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3),
                                                 "R@3": 1.0}
    with pytest.raises(ValueError):
        retrieval_ranks(scores, ties="random")


def test_self_retrieval_by_hand():
    references = {"a": ["red ball"], "b": ["blue cube"], "c": ["green cone"]}
    predictions = {"a": "red ball",       # matches only its own clip: rank 1
                   "b": "green cone",     # matches clip c; own 0 ties with clip a's 0: rank 3
                   "c": "purple thing"}   # matches nothing: 0 everywhere, rank 3 (ties against)
    assert self_retrieval(predictions, references, ks=(1, 2, 3)) == {
        "R@1": pytest.approx(1 / 3), "R@2": pytest.approx(1 / 3), "R@3": 1.0}
    # counting ties for the clip, "c" would rank first although its caption says nothing
    assert self_retrieval(predictions, references, ks=(1,), ties="for") == {"R@1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="same ids"):
        self_retrieval({"a": "red ball"}, references)


def test_self_retrieval_equals_ranks_from_pycocoevalcap(bx_texts):
    train, test = bx_texts
    references = {r["video_name"]: r["labels"] for r in test}
    predictions = {r["video_name"]: t["labels"][0] for r, t in zip(test, train)}
    predictions[test[0]["video_name"]] = test[0]["labels"][0]
    ids = list(references)
    matrix = coco_cider_rows(coco_tokenize_python([predictions[i] for i in ids]),
                             [coco_tokenize_python(references[i]) for i in ids])
    ranks = [1 + sum(matrix[q, j] >= matrix[q, q] for j in range(len(ids)) if j != q) for q in range(len(ids))]
    expected = {f"R@{k}": sum(r <= k for r in ranks) / len(ids) for k in (1, 3)}
    assert self_retrieval(predictions, references) == pytest.approx(expected, abs=1e-12)


def test_held_out_reference_by_hand():
    references = {"a": ["red ball", "red ball"], "b": ["blue cube", "blue cube"], "c": ["green cone"]}
    # a and b: the held-out reference equals the remaining one -> rank 1; c has one reference: left out.
    assert held_out_reference(references, (1,)) == {"R@1": 1.0}
    # a's held-out text also appears in clip b, which keeps two copies: a tie, counted against a.
    references = {"a": ["red ball", "red ball"], "b": ["red ball", "red ball"]}
    assert held_out_reference(references, (1, 2)) == {"R@1": 0.0, "R@2": 1.0}
    with pytest.raises(ValueError, match="two or more"):
        held_out_reference({"a": ["x"], "b": ["y"]})


def test_held_out_reference_equals_pycocoevalcap_leave_one_out():
    rng = np.random.default_rng(3)
    _, refs = random_corpus(rng, 8, vocab=("a", "b", "c", "d"), max_len=6, max_refs=3)
    refs[0] = ["a b c", "a b c d", "d d"]
    expected_per_clip = []
    for i, clip in enumerate(refs):
        if len(clip) < 2:
            continue
        hits = []
        for j, held_out in enumerate(clip):
            corpus = {m: list(r) for m, r in enumerate(refs)}
            corpus[i] = clip[:j] + clip[j + 1:]
            _, row = Cider().compute_score(corpus, {m: [held_out] for m in corpus})
            hits.append(1 + sum(row[m] >= row[i] for m in corpus if m != i))
        expected_per_clip.append(np.array(hits))
    expected = {f"R@{k}": float(np.mean([np.mean(h <= k) for h in expected_per_clip])) for k in (1, 2)}
    assert held_out_reference(dict(enumerate(refs)), (1, 2)) == pytest.approx(expected, abs=1e-12)


def test_retrieval_ceiling_by_hand():
    # b and c have the same references: no text puts either first (ties count against), and each
    # is second at best; a's own reference retrieves a.
    references = {"a": ["red ball"], "b": ["blue cube"], "c": ["blue cube"]}
    assert retrieval_ceiling(references, (), (1, 2)) == {"R@1": pytest.approx(1 / 3), "R@2": 1.0}
    assert retrieval_ceiling(references, (), (1,), ties="for") == {"R@1": 1.0}
    # one text shared by all three clips: nothing in the pool tells them apart but their own words
    references = {"a": ["keep your guard up"], "b": ["keep your guard up"], "c": ["keep your guard up"]}
    assert retrieval_ceiling(references, ["bend the knees"], (1, 3)) == {"R@1": 0.0, "R@3": 1.0}
    with pytest.raises(ValueError, match="ties"):
        retrieval_ceiling(references, (), ties="sideways")


def test_retrieval_ceiling_bounds_every_choice_of_captions_from_the_pool():
    rng = np.random.default_rng(5)
    for trial in range(6):
        texts, refs = random_corpus(rng, 7, vocab=("a", "b", "c", "d", "e"), max_len=5, max_refs=3)
        references = dict(enumerate(refs))
        pool = list(texts) + [t for r in refs for t in r]
        ceiling = retrieval_ceiling(references, texts, (1, 2, 3))
        best = {f"R@{k}": 0.0 for k in (1, 2, 3)}
        for _ in range(40):  # random captions drawn from the pool never beat it
            predictions = {i: pool[rng.integers(len(pool))] for i in references}
            got = self_retrieval(predictions, references, (1, 2, 3))
            for key, value in got.items():
                assert value <= ceiling[key] + 1e-12, (trial, key)
                best[key] = max(best[key], value)
        # and it is reached: each clip's own best text, chosen by brute force
        chosen = {}
        for i in references:
            ranks = [retrieval_ranks(cider_d_matrix([t], refs), [i])[0] for t in pool]
            chosen[i] = pool[int(np.argmin(ranks))]
        assert self_retrieval(chosen, references, (1,))["R@1"] == pytest.approx(ceiling["R@1"])

# ------------------------------------------------------------------------------ bootstrap
def test_bootstrap_of_a_single_clip_is_a_point():
    interval = bootstrap_ci(lambda idx: np.array([4.0, 5.0])[idx].mean(axis=-1), 1, n=50)
    assert (interval.estimate, interval.low, interval.high) == (4.0, 4.0, 4.0)


def test_bootstrap_two_clips_by_hand():
    """Two clips scoring 0 and 1: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2,
    1/4, so the 2.5% and 97.5% quantiles of 2000 resamples are 0 and 1."""
    values = np.array([0.0, 1.0])
    interval = bootstrap_ci(lambda idx: values[idx].mean(axis=-1), 2, n=2000, seed=1)
    assert interval == Interval(0.5, 0.0, 1.0, 0.05, 2000)
    narrow = bootstrap_ci(lambda idx: values[idx].mean(axis=-1), 2, n=2000, seed=1, alpha=0.6)
    assert (narrow.low, narrow.high) == (0.5, 0.5)   # 30% / 70% quantiles fall in the middle half


def test_paired_bootstrap_of_a_constant_gap_is_that_gap():
    rng = np.random.default_rng(0)
    base = rng.random(41)
    model = lambda idx: (base + 0.25)[idx].mean(axis=-1)   # noqa: E731
    baseline = lambda idx: base[idx].mean(axis=-1)          # noqa: E731
    interval = bootstrap_ci(paired_difference(model, baseline), 41, n=1000, seed=5)
    assert interval.low == pytest.approx(0.25) and interval.high == pytest.approx(0.25)
    unpaired_width = bootstrap_ci(model, 41, n=1000, seed=5)
    assert unpaired_width.high - unpaired_width.low > 0.05


def test_bootstrap_is_seeded_and_bounds_the_estimate():
    rng = np.random.default_rng(2)
    values = rng.random(30)
    stat = lambda idx: values[idx].mean(axis=-1)   # noqa: E731
    a, b = bootstrap_ci(stat, 30, seed=9), bootstrap_ci(stat, 30, seed=9)
    assert a == b and a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(values.mean())
    with pytest.raises(ValueError):
        bootstrap_ci(stat, 0)


def small_case():
    references = {"v1": ["Keep your guard up.", "Raise the left hand."],
                  "v2": ["Rotate your hips more.", "Turn the hips."],
                  "v3": ["Your back foot isn't lifted."],
                  "v4": ["Don't drop the right hand!", "Hands up."]}
    predictions = {"v1": "Keep the guard up.", "v2": "Rotate the hips.", "v3": "The back foot isn't lifted.",
                   "v4": "Don't drop your hand."}
    return predictions, references


def tokenised(predictions, references, ids):
    gts = {i: coco_tokenize_python(references[i]) for i in ids}
    res = {i: coco_tokenize_python([predictions[i]]) for i in ids}
    return gts, res


def test_bleu_statistic_equals_pycocoevalcap_on_full_and_resampled_corpora():
    predictions, references = small_case()
    ids = list(references)
    gts, res = tokenised(predictions, references, ids)
    stat4, stat2 = bleu_statistic(predictions, references, 4), bleu_statistic(predictions, references, 2)
    full, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert stat4(np.arange(4)[None])[0] == pytest.approx(full[3], abs=1e-12)
    assert stat2(np.arange(4)[None])[0] == pytest.approx(full[1], abs=1e-12)
    resamples = np.array([[0, 0, 2, 3], [1, 1, 1, 1], [3, 2, 3, 0]])
    for row, value in zip(resamples, stat4(resamples)):
        # a resampled corpus: duplicated clips become separate entries
        dup_gts = {f"{n}": gts[ids[i]] for n, i in enumerate(row)}
        dup_res = {f"{n}": res[ids[i]] for n, i in enumerate(row)}
        expected, _ = Bleu(4).compute_score(dup_gts, dup_res, verbose=0)
        assert value == pytest.approx(expected[3], abs=1e-12)


def test_cider_statistic_is_pycocoevalcap_on_the_full_set_and_a_mean_of_clips_on_resamples():
    predictions, references = small_case()
    ids = list(references)
    gts, res = tokenised(predictions, references, ids)
    full, per_clip = Cider().compute_score(gts, res)
    stat = cider_statistic(predictions, references)
    assert stat(np.arange(4)[None])[0] == pytest.approx(full, abs=1e-12)
    assert stat(np.array([[0, 0, 3, 3]]))[0] == pytest.approx((2 * per_clip[0] + 2 * per_clip[3]) / 4, abs=1e-12)


def test_bootstrap_metric_on_bx_difference_of_two_retrieval_captions(bx_texts):
    train, test = bx_texts
    references = {r["video_name"]: r["labels"] for r in test}
    first = {r["video_name"]: t["labels"][0] for r, t in zip(test, train)}
    own = {r["video_name"]: r["labels"][0] for r in test}   # a reference itself: far better
    for metric in ("CIDEr", "BLEU-4"):
        gap = bootstrap_metric(own, references, metric, baseline=first, n=1000, seed=0)
        alone = bootstrap_metric(own, references, metric, n=1000, seed=0)
        base = bootstrap_metric(first, references, metric, n=1000, seed=0)
        assert gap.estimate == pytest.approx(alone.estimate - base.estimate, abs=1e-12)
        assert 0 < gap.low < gap.estimate < gap.high
        assert alone.low < alone.estimate < alone.high
    with pytest.raises(ValueError, match="METEOR"):
        bootstrap_metric(own, references, "METEOR")
    assert math.isfinite(gap.as_dict()["high"])
