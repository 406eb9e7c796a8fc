"""Caption quality measures that n-gram scores hide (docs/design.md, "Quality protocol").

On small coaching data a retrieval baseline that copies a training text can score well on BLEU
and CIDEr, so every quality figure is reported with these companions:

* :func:`novelty`: the share of generated captions that are not a verbatim training text;
* :func:`distinct`: how many different captions the model writes over the test set;
* :func:`self_retrieval`: does a clip's caption pick out that clip among all test clips
  (R@k by CIDEr-D against each clip's references), with :func:`retrieval_ceiling`, the most
  that captions drawn from the texts at hand can reach (a bound on every retrieval baseline),
  and :func:`held_out_reference`, the same measure for a held-out human reference (agreement
  between references, not a ceiling);
* :func:`bootstrap_ci`: a percentile bootstrap interval over test clips for a corpus metric or
  for the paired difference model minus baseline.

:func:`cider_d_matrix` scores every candidate against every clip's references at once; it equals
pycocoevalcap's ``Cider`` (CIDEr-D) on the same tokenised text.  Texts are tokenised as the
project's scorer does (:func:`core.ptb_tokenizer.coco_tokenize_python`, which gives the
tokens of pycocoevalcap's Java PTB tokenizer).

Comparisons of whole captions (:func:`novelty`, :func:`distinct`) use :func:`normalize_text`:
lower-case, runs of white space collapsed to one space, ends stripped, and trailing punctuation
removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from core.cider import (DocumentFrequency, check_references, cider_d_matrix, cider_from_counts, coco_tokenize,
                        document_frequency, document_frequency_from_counts, ngram_counts, normalize_text, split_like)

__all__ = [
    "normalize_text", "novelty", "distinct", "coco_tokenize", "ngram_counts", "DocumentFrequency",
    "document_frequency", "cider_d_matrix", "retrieval_ranks", "recall_at_k", "self_retrieval",
    "retrieval_ceiling", "held_out_reference", "Interval", "bootstrap_ci", "cider_statistic", "bleu_statistic",
    "corpus_statistic", "paired_difference", "bootstrap_metric",
]

TIE_TOLERANCE = 1e-9   # relative: scores this close to the own clip's count as a tie
TIES = ("against", "for")


# ------------------------------------------------------------------------------------------
# Whole-caption comparisons
# ------------------------------------------------------------------------------------------
def _caption_list(predictions: Mapping[Hashable, str] | Iterable[str]) -> list[str]:
    texts = list(predictions.values()) if isinstance(predictions, Mapping) else list(predictions)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"captions must be strings, found {type(text).__name__} {text!r:.60}")
    return texts


def novelty(predictions: Mapping[Hashable, str] | Iterable[str], training_texts: Iterable[str]) -> float:
    """Share of generated captions (0..1) that are not a verbatim training text.

    Each caption counts once per clip (a caption repeated over many clips counts each time).
    Both sides are compared after :func:`normalize_text`.  ``predictions`` is ``{id: text}`` or
    a list of texts; raises ``ValueError`` when there is none.
    """
    captions = _caption_list(predictions)
    if not captions:
        raise ValueError("novelty needs at least one caption")
    seen = {normalize_text(t) for t in training_texts}
    return sum(normalize_text(c) not in seen for c in captions) / len(captions)


def distinct(predictions: Mapping[Hashable, str] | Iterable[str]) -> int:
    """Number of different captions over the set, after :func:`normalize_text`."""
    return len({normalize_text(c) for c in _caption_list(predictions)})


# ------------------------------------------------------------------------------------------
# Self-retrieval
# ------------------------------------------------------------------------------------------
def retrieval_ranks(scores: np.ndarray, targets: Sequence[int] | None = None, *, ties: str = "against",
                    tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Rank (1 = best) of each query's own item: row q of ``scores`` scores every item for
    query q, and ``targets[q]`` (default q) is its own item.

    ``rank = 1 + #{others scoring higher}``, and with ``ties="against"`` (the default) others
    scoring the same also count, so a caption that matches every clip equally (say, with score
    0) ranks last, not first.  ``ties="for"`` counts only strictly higher scores.  Scores within
    ``tolerance`` (relative to ``max(1, |own score|)``) of the own one are ties.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.arange(scores.shape[0]) if targets is None else np.asarray(targets)
    own = scores[np.arange(scores.shape[0]), targets][:, None]
    margin = tolerance * np.maximum(1.0, np.abs(own))
    higher = scores > own + margin
    tied = np.abs(scores - own) <= margin
    tied[np.arange(scores.shape[0]), targets] = False
    return 1 + higher.sum(axis=1) + (tied.sum(axis=1) if ties == "against" else 0)


def recall_at_k(ranks: np.ndarray, ks: Iterable[int] = (1, 3),
                weights: np.ndarray | None = None) -> dict[str, float]:
    """``{"R@k": share of queries whose rank <= k}`` (a weighted mean when ``weights`` is given)."""
    ranks = np.asarray(ranks)
    return {f"R@{k}": float(np.average(ranks <= k, weights=weights)) for k in ks}


def _aligned(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list:
    ids = list(references)
    missing = [i for i in ids if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        raise ValueError(f"predictions and references must have the same ids; without a prediction: "
                         f"{missing[:5]!r}, without references: {extra[:5]!r}")
    if not ids:
        raise ValueError("nothing to score: no clips")
    return ids


def self_retrieval(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                   ks: Iterable[int] = (1, 3), *, ties: str = "against") -> dict[str, float]:
    """Does each clip's caption pick out its own clip?  R@k over the clips.

    For clip i, its caption is scored by CIDEr-D (:func:`cider_d_matrix`, document frequencies
    from all clips' references) against every clip's references; R@k is the share of clips
    whose own clip ranks within the top k (ties: see :func:`retrieval_ranks`; by default a tie
    counts against the clip).
    """
    ids = _aligned(predictions, references)
    refs = [list(references[i]) for i in ids]
    scores = cider_d_matrix([predictions[i] for i in ids], refs)
    return recall_at_k(retrieval_ranks(scores, ties=ties), ks)


def retrieval_ceiling(references: Mapping[Hashable, Sequence[str]], texts: Iterable[str] = (),
                      ks: Iterable[int] = (1, 3), *, ties: str = "against", chunk: int = 512) -> dict[str, float]:
    """The highest self-retrieval R@k that captions drawn from a set of texts can reach: for each
    clip, the best rank of that clip (:func:`retrieval_ranks`) over every candidate text, and R@k
    the share of clips whose best rank is within k.

    The candidates are ``texts`` (say, every training text and paraphrase) and every reference of
    every clip.  A caption's scores do not depend on the other captions (CIDEr-D with document
    frequencies from the references, as :func:`self_retrieval` computes them), so for any
    predictions whose texts are all candidates, ``self_retrieval(predictions, references, ks)``
    is at most this, clip by clip: it bounds every retrieval baseline and any caption that copies
    a training text or a reference.  A clip stays below it only where no text at hand retrieves
    it (a clip whose references equal another clip's can never be first: ties count against).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    ids = list(references)
    refs = [list(references[i]) for i in ids]
    check_references(refs)
    if not refs:
        raise ValueError("retrieval_ceiling needs at least one clip")
    flat = [t for r in refs for t in r]
    extra = [t for t in texts if isinstance(t, str)]
    tokens = coco_tokenize(flat + extra)
    ref_counts = split_like([ngram_counts(t) for t in tokens[:len(flat)]], refs)
    df = document_frequency_from_counts(ref_counts)
    candidates = [ngram_counts(t) for t in dict.fromkeys(tokens)]  # each distinct tokenised text once
    best = np.full(len(refs), len(refs) + 1, dtype=np.int64)
    for start in range(0, len(candidates), chunk):
        scores = cider_from_counts(candidates[start:start + chunk], ref_counts, df)  # (C, clips)
        best = np.minimum(best, _ranks_of_every_clip(scores, ties).min(axis=0))
    return {f"R@{k}": float(np.mean(best <= k)) for k in ks}


def _ranks_of_every_clip(scores: np.ndarray, ties: str, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """``ranks[c, i]``: :func:`retrieval_ranks` of clip i when candidate c is clip i's caption."""
    ordered = np.sort(scores, axis=1)
    margin = tolerance * np.maximum(1.0, np.abs(scores))
    n = scores.shape[1]
    ranks = np.empty(scores.shape, dtype=np.int64)
    for c in range(scores.shape[0]):
        if ties == "against":  # every other clip scoring at least own - margin
            ranks[c] = n - np.searchsorted(ordered[c], scores[c] - margin[c], side="left")
        else:  # every clip scoring above own + margin, plus one
            ranks[c] = 1 + n - np.searchsorted(ordered[c], scores[c] + margin[c], side="right")
    return ranks


def held_out_reference(references: Mapping[Hashable, Sequence[str]], ks: Iterable[int] = (1, 3), *,
                       ties: str = "against") -> dict[str, float]:
    """Self-retrieval R@k of a held-out human reference: how well one reference of a clip, taken
    as its caption, picks out the clip by the others.  Not a ceiling (see
    :func:`retrieval_ceiling` for one).

    Leave-one-out over each clip's references: reference j of clip i is the caption, clip i
    keeps its other references, every other clip keeps all of its own, and the document
    frequencies come from that corpus (as if the held-out text were clip i's prediction).  A
    clip's R@k is the mean over its held-out references, and the result the mean over clips, so
    every clip weighs the same.  Clips with a single reference are left out; ``ValueError`` if
    none has two.

    It measures agreement between references: high where a clip's references say the same thing
    in other words.  Where they name different faults (BX: three instructions for one clip that
    share few words), a held-out one retrieves its clip no better than chance (BX test: R@1 = 0),
    while a caption that copies a reference of its own clip retrieves the clip easily.
    """
    ids = list(references)
    refs = [list(references[i]) for i in ids]
    check_references(refs)
    counts = split_like([ngram_counts(t) for t in coco_tokenize([t for r in refs for t in r])], refs)
    hits: list[np.ndarray] = []
    for i, clip_counts in enumerate(counts):
        if len(clip_counts) < 2:
            continue
        ranks = []
        for j, held_out in enumerate(clip_counts):
            corpus = list(counts)
            corpus[i] = clip_counts[:j] + clip_counts[j + 1:]
            row = cider_from_counts([held_out], corpus, document_frequency_from_counts(corpus))
            ranks.append(retrieval_ranks(row, [i], ties=ties)[0])
        hits.append(np.array(ranks))
    if not hits:
        raise ValueError("held_out_reference needs at least one clip with two or more references")
    return {f"R@{k}": float(np.mean([np.mean(r <= k) for r in hits])) for k in ks}


# ------------------------------------------------------------------------------------------
# Bootstrap over test clips
# ------------------------------------------------------------------------------------------
Statistic = Callable[[np.ndarray], np.ndarray]  # (resamples, clips) int indices -> (resamples,)


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval: the statistic on the full set and its [low, high] bounds."""

    estimate: float
    low: float
    high: float
    alpha: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "alpha": self.alpha,
                "n": self.n}


def bootstrap_ci(statistic: Statistic, n_clips: int, *, n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> Interval:
    """Percentile bootstrap interval of a corpus statistic over test clips.

    ``statistic(indices)`` takes an int array ``[resamples, n_clips]`` of clip indices (drawn
    with replacement; row r is one resampled test set) and returns one value per row; it must
    recompute the corpus metric from the resampled clips (see :func:`cider_statistic`,
    :func:`bleu_statistic`; :func:`paired_difference` for model minus baseline on the same
    resampled clips).  The ``n`` resamples come from ``numpy.random.default_rng(seed)``; the
    bounds are the ``alpha/2`` and ``1 - alpha/2`` quantiles (numpy's linear interpolation) of
    the resampled values, and ``estimate`` is the statistic on the full set.
    """
    if n_clips < 1:
        raise ValueError("bootstrap_ci needs at least one clip")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    values = np.asarray(statistic(rng.integers(0, n_clips, size=(n, n_clips))), dtype=np.float64)
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    estimate = float(np.asarray(statistic(np.arange(n_clips)[None, :]))[0])
    return Interval(estimate, float(low), float(high), alpha, n)


def cider_statistic(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                    ids: Sequence[Hashable] | None = None) -> Statistic:
    """Corpus CIDEr-D of a resampled test set, with the document frequencies fixed from the full
    test references (pycocoevalcap would recount them on each resampled corpus; fixing them
    makes a resample's score the mean of per-clip scores, so 1000 resamples take milliseconds).
    On the full set it equals pycocoevalcap's corpus CIDEr-D.  Clip order: ``ids`` (default:
    the references' order)."""
    ids = list(references) if ids is None else list(ids)
    _aligned({i: predictions[i] for i in ids}, {i: references[i] for i in ids})
    refs = [list(references[i]) for i in ids]
    per_clip = np.diag(cider_d_matrix([predictions[i] for i in ids], refs)).copy()
    return lambda indices: per_clip[np.asarray(indices)].mean(axis=-1)


def _bleu_clip_stats(hypothesis: str, refs: Sequence[str], n: int) -> np.ndarray:
    """``[test length, closest reference length, guess_1..n, correct_1..n]`` of one clip, as
    pycocoevalcap's BLEU counts them (closest length; on a tie, the shorter reference)."""
    hyp = ngram_counts(hypothesis, n)
    ref_counts = [ngram_counts(r, n) for r in refs]
    test_len = len(hypothesis.split())
    ref_len = min((abs(len(r.split()) - test_len), len(r.split())) for r in refs)[1]
    guess = [max(0, test_len - k) for k in range(n)]
    correct = [sum(min(c, max(rc[k].get(g, 0) for rc in ref_counts)) for g, c in hyp[k].items())
               for k in range(n)]
    return np.array([test_len, ref_len, *guess, *correct], dtype=np.float64)


def bleu_statistic(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                   n: int = 4, ids: Sequence[Hashable] | None = None) -> Statistic:
    """Corpus BLEU-n of a resampled test set, recomputed from per-clip counts (n-gram matches,
    lengths), exactly as pycocoevalcap's ``Bleu`` would score the resampled corpus."""
    ids = list(references) if ids is None else list(ids)
    _aligned({i: predictions[i] for i in ids}, {i: references[i] for i in ids})
    hyps = coco_tokenize([predictions[i] for i in ids])
    refs = split_like(coco_tokenize([t for i in ids for t in references[i]]), [references[i] for i in ids])
    stats = np.stack([_bleu_clip_stats(h, r, n) for h, r in zip(hyps, refs)])  # (clips, 2 + 2n)

    def statistic(indices: np.ndarray) -> np.ndarray:
        totals = stats[np.asarray(indices)].sum(axis=-2)  # (resamples, 2 + 2n)
        guess, correct = totals[..., 2:2 + n], totals[..., 2 + n:]
        # pycocoevalcap: prod_k (correct_k + 1e-15) / (guess_k + 1e-9), then the n-th root.
        precision = np.prod((correct + 1e-15) / (guess + 1e-9), axis=-1)
        bleu = precision ** (1.0 / n)
        ratio = (totals[..., 0] + 1e-15) / (totals[..., 1] + 1e-9)
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1.0)), 1.0)
        return bleu * penalty

    return statistic


def corpus_statistic(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                     metric: str = "CIDEr", ids: Sequence[Hashable] | None = None) -> Statistic:
    """The resampling statistic of ``metric``: ``"CIDEr"`` or ``"BLEU-1"`` .. ``"BLEU-4"``."""
    if metric == "CIDEr":
        return cider_statistic(predictions, references, ids)
    if metric.startswith("BLEU-") and metric[5:].isdigit() and 1 <= int(metric[5:]) <= 4:
        return bleu_statistic(predictions, references, int(metric[5:]), ids)
    raise ValueError(f"no bootstrap statistic for {metric!r}; use 'CIDEr' or 'BLEU-1'..'BLEU-4'")


def paired_difference(model: Statistic, baseline: Statistic) -> Statistic:
    """``model - baseline`` on the same resampled clips (a paired bootstrap statistic)."""
    return lambda indices: np.asarray(model(indices)) - np.asarray(baseline(indices))


def bootstrap_metric(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                     metric: str = "CIDEr", *, baseline: Mapping[Hashable, str] | None = None,
                     n: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """Bootstrap interval of a corpus metric over the test clips, or, with ``baseline``
    predictions, of the difference model minus baseline (both scored on the same resampled
    clips)."""
    ids = list(references)
    statistic = corpus_statistic(predictions, references, metric, ids)
    if baseline is not None:
        statistic = paired_difference(statistic, corpus_statistic(baseline, references, metric, ids))
    return bootstrap_ci(statistic, len(ids), n=n, seed=seed, alpha=alpha)
