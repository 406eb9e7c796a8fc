"""Retrieval baselines that every quality figure is reported beside (docs/design.md, "Quality protocol").

    python -m evaluation.baselines --train T.pkl --test S.pkl [--val V.pkl] [--out F.json] [--no-java]

prints one row per baseline (BLEU-1, BLEU-4, METEOR when Java is present, ROUGE-L, CIDEr-D,
novelty, distinct captions, self-retrieval R@1) scored by the project's scorer, and writes the
figures and predictions as JSON.  From Python: :func:`compute_baselines`.

Baselines (each predicts one training text per test clip):

* ``most_frequent``: the most frequent training text (compared after
  :func:`evaluation.quality.normalize_text`; ties: the first in file order);
* ``nearest_neighbour``: ``labels[0]`` of the nearest training clip by :func:`motion_features`
  (mean and standard deviation over frames of the root-relative joints), Euclidean distance;
* ``consensus``: consensus retrieval (Devlin et al. 2015): among the labels of the k nearest
  training clips (z-scored :func:`motion_features`), the one with the highest summed CIDEr-D
  against the other candidates; k from :data:`CONSENSUS_KS`, chosen by corpus CIDEr-D on the
  validation records, or by leave-one-out over the training clips when there are none;
* ``bone_lengths``: ``labels[0]`` of the nearest training clip by mean bone lengths alone, a
  probe of how much "who is the learner" explains;
* ``paraphrase`` (when every test clip has ``augmented_labels``): the clip's first paraphrase
  scored against its own labels.  A reference point, not a baseline: no model can see it.

Ties between equally distant training clips go to the first in file order.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from core.motion_stats import feature_matrix, motion_features
from dataloaders.skeleton import bone_lengths as bone_length_features  # [T, 22, 3] -> [21]
from evaluation.metrics import (CaptionInputError, JavaNotFoundError, MetricSkippedWarning, java_available,
                                resolve_use_java, score_captions)
from evaluation.quality import (cider_d_matrix, distinct, document_frequency, held_out_reference, normalize_text,
                                novelty, retrieval_ceiling, self_retrieval)

__all__ = ["CONSENSUS_KS", "BASELINE_NAMES", "REFERENCE_POINTS", "BaselineInputError", "motion_features",
           "bone_length_features", "feature_matrix", "nearest_order", "most_frequent_text", "training_texts",
           "consensus_pick", "ConsensusRetrieval", "compute_baselines", "format_table", "main"]

CONSENSUS_KS = (1, 2, 3, 5, 7, 10, 15)
BASELINE_NAMES = ("most_frequent", "nearest_neighbour", "consensus", "bone_lengths")
REFERENCE_POINTS = ("paraphrase",)  # rows that are not baselines a model could use
RETRIEVAL_KS = (1, 3)
NEAREST_CHUNK = 1 << 22  # numbers per block of query-minus-training differences


class BaselineInputError(ValueError):
    """Records that cannot be used (empty set, a clip without labels, duplicate names)."""


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------
def _check_records(records: Sequence[Mapping[str, Any]] | None, what: str, source: str | None) -> None:
    """Raise :class:`BaselineInputError` naming ``source`` (the file) or ``what`` (the split)."""
    where = source or f"the {what} records"
    if records is None or len(records) == 0:
        raise BaselineInputError(f"{where}: no {what} records (the set is empty)")
    seen = set()
    for index, rec in enumerate(records):
        name = rec.get("video_name")
        if name in seen:
            raise BaselineInputError(f"{where}: record {index}: video_name {name!r} appears twice")
        seen.add(name)
        labels = rec.get("labels")
        if isinstance(labels, str) or not labels or not all(isinstance(t, str) and t.strip() for t in labels):
            raise BaselineInputError(f"{where}: record {index} (video_name {name!r}) has no usable labels "
                                     f"(found {labels!r:.60}); every {what} clip needs reference texts")
        if rec.get("coordinates") is None:
            raise BaselineInputError(f"{where}: record {index} (video_name {name!r}) has no coordinates")


def training_texts(records: Sequence[Mapping[str, Any]], *, include_augmented: bool = True) -> list[str]:
    """Every text a model could have learnt from: each clip's labels (and paraphrases)."""
    texts = [t for rec in records for t in rec["labels"]]
    if include_augmented:
        texts += [t for rec in records for t in rec.get("augmented_labels") or []]
    return texts


# ------------------------------------------------------------------------------------------
# Features and neighbours
# ------------------------------------------------------------------------------------------
def nearest_order(train: np.ndarray, queries: np.ndarray, k: int | None = None,
                  exclude: Sequence[int] | None = None) -> np.ndarray:
    """The ``k`` (default: all) nearest training rows for each query by Euclidean distance,
    nearest first, ``[Q, k]``; equal distances keep file order (a stable sort).  ``exclude[q]``
    is a training row that query q may not return (itself, for leave-one-out)."""
    n_train = train.shape[0]
    k = n_train - (exclude is not None) if k is None else min(k, n_train - (exclude is not None))
    rows = max(1, NEAREST_CHUNK // max(1, n_train * train.shape[1]))
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], rows):
        chunk = queries[start:start + rows]
        distances = np.sqrt(((chunk[:, None, :] - train[None, :, :]) ** 2).sum(axis=-1))  # (q, N)
        if exclude is not None:
            distances[np.arange(len(chunk)), np.asarray(exclude[start:start + rows])] = np.inf
        out[start:start + rows] = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return out


def _standardiser(train: np.ndarray):
    """z-score with the training mean and standard deviation (a constant dimension is only centred)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return lambda x: (x - mean) / std


# ------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------
def most_frequent_text(records: Sequence[Mapping[str, Any]]) -> str:
    """The most frequent of the records' labels (counted after
    :func:`~evaluation.quality.normalize_text`), as first written; ties: the first in file order."""
    texts = [t for rec in records for t in rec["labels"]]
    counts = Counter(normalize_text(t) for t in texts)
    best = max(counts.values())
    return next(t for t in texts if counts[normalize_text(t)] == best)


def consensus_pick(similarity: np.ndarray) -> int:
    """Index of the most central candidate: the highest row sum of ``similarity`` (candidate a
    scored against candidate b as its only reference) leaving out the diagonal; ties: the first."""
    scores = similarity.sum(axis=1) - np.diag(similarity)
    return int(np.argmax(scores))


class ConsensusRetrieval:
    """Consensus retrieval over a training set.

    The candidates for a query are the labels of its k nearest training clips (z-scored
    :func:`motion_features`, Euclidean), in neighbour order then label order.  Their CIDEr-D
    against one another (each text as the single reference of another) uses document
    frequencies from the training references (one document per training clip); the matrix over
    all training texts is computed once.
    """

    def __init__(self, train_records: Sequence[Mapping[str, Any]]):
        self.records = list(train_records)
        features = feature_matrix(self.records, motion_features)
        self.standardise = _standardiser(features)
        self.features = self.standardise(features)
        self.texts = [t for rec in self.records for t in rec["labels"]]
        self.owner = np.repeat(np.arange(len(self.records)), [len(rec["labels"]) for rec in self.records])
        self.text_index = [np.flatnonzero(self.owner == i) for i in range(len(self.records))]
        df = document_frequency([rec["labels"] for rec in self.records])
        self.similarity = cider_d_matrix(self.texts, [[t] for t in self.texts], df)

    def neighbours(self, query_records: Sequence[Mapping[str, Any]], k: int | None = None) -> np.ndarray:
        """The ``k`` (default: all) nearest training clips of each query record, ``[Q, k]``."""
        queries = self.standardise(feature_matrix(query_records, motion_features))
        return nearest_order(self.features, queries, k)

    def pick(self, neighbours: Sequence[int], k: int) -> str:
        """The consensus text among the labels of the first ``k`` of ``neighbours``."""
        candidates = np.concatenate([self.text_index[i] for i in neighbours[:k]])
        return self.texts[candidates[consensus_pick(self.similarity[np.ix_(candidates, candidates)])]]

    def leave_one_out_neighbours(self, k: int | None = None) -> np.ndarray:
        """For each training clip, the ``k`` nearest other training clips, ``[N, min(k, N - 1)]``."""
        return nearest_order(self.features, self.features, k, exclude=range(len(self.records)))

    def choose_k(self, val_records: Sequence[Mapping[str, Any]] | None = None,
                 ks: Sequence[int] = CONSENSUS_KS) -> tuple[int, dict[int, float], str]:
        """``(k, {k: CIDEr-D}, how)``: the k with the best corpus CIDEr-D on the validation
        records, or, without them, by leave-one-out over the training clips (each queries the
        others; the z-score statistics and the document frequencies stay those of the whole
        training set).  Ties: the smaller k.  A k above the number of clips a query can draw
        on is skipped (with a single training clip and no validation records, k is 1)."""
        if val_records:
            records, how = list(val_records), "chosen on the validation records"
            order = self.neighbours(records, max(ks))
        else:
            records, how = self.records, "chosen by leave-one-out on the training clips"
            order = self.leave_one_out_neighbours(max(ks))
        usable = [k for k in ks if k <= order.shape[1]]
        if not usable:
            return 1, {}, "default: a single training clip, nothing to choose from"
        references = [rec["labels"] for rec in records]
        scores = {}
        for k in usable:
            picks = [self.pick(row, k) for row in order]
            scores[k] = float(np.mean(np.diag(cider_d_matrix(picks, references))))
        best = max(scores.values())
        return next(k for k in usable if scores[k] == best), scores, how


def _nearest_first_labels(train_records, test_records, feature_fn) -> dict[str, str]:
    """``labels[0]`` of each test clip's nearest training clip by ``feature_fn``."""
    train = feature_matrix(train_records, feature_fn)
    nearest = nearest_order(train, feature_matrix(test_records, feature_fn), 1)[:, 0]
    return {rec["video_name"]: train_records[i]["labels"][0] for rec, i in zip(test_records, nearest)}


def _score(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], train_texts: Sequence[str],
           use_java: bool) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        row: dict[str, Any] = score_captions(predictions, references, use_java=use_java)
    row["novelty"] = novelty(predictions, train_texts)
    row["distinct"] = distinct(predictions)
    row.update(self_retrieval(predictions, references, RETRIEVAL_KS))
    row["predictions"] = dict(predictions)
    return row


def compute_baselines(train_records: Sequence[Mapping[str, Any]], test_records: Sequence[Mapping[str, Any]],
                      val_records: Sequence[Mapping[str, Any]] | None = None, use_java: bool | None = None, *,
                      sources: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every baseline's predictions on ``test_records`` and their scores.

    Args:
        train_records, test_records, val_records: records as :func:`dataloaders.records.load_records`
            returns them (``video_name``, ``coordinates`` ``[T, 22, 3]`` or ``[T, 66]``,
            ``labels``, optional ``augmented_labels``); ``val_records`` (optional) chooses the
            consensus k.
        use_java: as :func:`evaluation.score_captions` (``None``: Java, hence METEOR, when installed).
        sources: ``{"train"|"test"|"val": file name}`` for error messages.

    Returns:
        ``{name: {"BLEU-1".."BLEU-4", "METEOR" (with Java), "ROUGE-L", "CIDEr", "novelty",
        "distinct", "R@1", "R@3", "predictions": {video_name: text}}}`` for the names in
        :data:`BASELINE_NAMES` and, when every test clip has ``augmented_labels``,
        ``"paraphrase"`` (marked ``"reference_point": True``).  ``consensus`` also has ``"k"``,
        ``"k_selection"`` and ``"k_scores"`` (CIDEr-D of each k tried).  Novelty is measured
        against the training labels and paraphrases.

    Raises:
        BaselineInputError: an empty set, a clip without labels or coordinates, a duplicate name.
    """
    sources = dict(sources or {})
    _check_records(train_records, "training", sources.get("train"))
    _check_records(test_records, "test", sources.get("test"))
    if val_records is not None:
        _check_records(val_records, "validation", sources.get("val"))
    use_java = resolve_use_java(use_java)
    train, test = list(train_records), list(test_records)
    references = {rec["video_name"]: list(rec["labels"]) for rec in test}
    texts = training_texts(train)

    consensus = ConsensusRetrieval(train)
    k, k_scores, how = consensus.choose_k(val_records)
    predictions = {
        "most_frequent": dict.fromkeys(references, most_frequent_text(train)),
        "nearest_neighbour": _nearest_first_labels(train, test, motion_features),
        "consensus": {rec["video_name"]: consensus.pick(row, k)
                      for rec, row in zip(test, consensus.neighbours(test, k))},
        "bone_lengths": _nearest_first_labels(train, test, bone_length_features),
    }
    if all(rec.get("augmented_labels") for rec in test):
        predictions["paraphrase"] = {rec["video_name"]: rec["augmented_labels"][0] for rec in test}
    results = {name: _score(preds, references, texts, use_java) for name, preds in predictions.items()}
    results["consensus"].update({"k": k, "k_selection": how, "k_scores": k_scores})
    if "paraphrase" in results:
        results["paraphrase"].update({"reference_point": True, "note": (
            "the first augmented_label (a paraphrase of a reference) of each test clip: a reference "
            "point, not a baseline a model could use")})
    return results


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
def table_columns(with_meteor: bool) -> list[str]:
    return ["BLEU-1", "BLEU-4", *(["METEOR"] if with_meteor else []), "ROUGE-L", "CIDEr", "novelty",
            "distinct", "R@1"]


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per baseline; reference points are marked ``*`` and explained below the table."""
    columns = table_columns(any("METEOR" in row for row in results.values()))
    names = {name: name + ("*" if row.get("reference_point") else "") for name, row in results.items()}
    width = max(len("baseline"), *(len(n) for n in names.values()))
    header = f"{'baseline':<{width}}  " + "  ".join(f"{c:>8}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        cells = [f"{row[c]:>8d}" if c == "distinct" else f"{row[c]:>8.4f}" for c in columns]
        lines.append(f"{names[name]:<{width}}  " + "  ".join(cells))
    if "consensus" in results:
        row = results["consensus"]
        per_k = ", ".join(f"{k}: {v:.3f}" for k, v in row["k_scores"].items())
        lines.append(f"consensus k = {row['k']} ({row['k_selection']}"
                     + (f"; CIDEr-D per k: {per_k})" if per_k else ")"))
    if any(row.get("reference_point") for row in results.values()):
        lines.append("* reference point, not a baseline: a paraphrase of the clip's own references")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
DESCRIPTION = """\
Score the retrieval baselines on a test split with the project's scorer (pycocoevalcap's
numbers): most frequent training text, nearest neighbour, consensus retrieval, bone-length probe,
and, when the test clips have paraphrases, the paraphrase reference point.  Also reports novelty,
distinct captions and self-retrieval R@1 for each, the ceiling of R@k (each test clip's best caption
among the training texts and the test references and paraphrases: no baseline can exceed it), and
R@k of a held-out reference (agreement between a clip's references, not a ceiling)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.baselines", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=Path, metavar="T.pkl", help="training dataset pickle")
    parser.add_argument("--test", required=True, type=Path, metavar="S.pkl", help="test dataset pickle")
    parser.add_argument("--val", type=Path, metavar="V.pkl",
                        help="validation pickle to choose the consensus k (default: leave-one-out on train)")
    parser.add_argument("--out", type=Path, metavar="F.json", help="where to write the JSON (default: none)")
    parser.add_argument("--no-java", action="store_true",
                        help="do not use Java even if installed (pure-Python tokenizer, no METEOR)")
    return parser


def ceiling_texts(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every text a baseline row can write: the training labels and paraphrases, and the test
    clips' paraphrases (the reference point); the ceiling adds the test references themselves."""
    return training_texts(train) + [t for rec in test for t in rec.get("augmented_labels") or []]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, compute, print and write; returns the JSON document."""
    from dataloaders.records import load_records  # the only part that needs torch

    start = time.perf_counter()
    use_java = resolve_use_java(False if args.no_java else None)
    train, test = load_records(args.train), load_records(args.test)
    val = load_records(args.val) if args.val else None
    sources = {"train": str(args.train), "test": str(args.test), "val": str(args.val)}
    results = compute_baselines(train, test, val, use_java, sources=sources)
    print(format_table(results))
    references = {rec["video_name"]: rec["labels"] for rec in test}
    ceiling = retrieval_ceiling(references, ceiling_texts(train, test), RETRIEVAL_KS)
    print("self-retrieval ceiling (each test clip's best caption among every training text and test reference "
          "and paraphrase; no row above can exceed it): " + ", ".join(f"{k} = {v:.4f}" for k, v in ceiling.items()))
    held_out = None
    if any(len(rec["labels"]) > 1 for rec in test):
        held_out = held_out_reference(references, RETRIEVAL_KS)
        print("held-out reference (one of a clip's references as its caption, against the others: agreement "
              "between references, not a ceiling): " + ", ".join(f"{k} = {v:.4f}" for k, v in held_out.items()))
    else:
        print("note: no held-out reference figure (it needs test clips with two or more references)")
    if not use_java:
        why = "--no-java" if java_available() else "no Java runtime found"
        print(f"note: METEOR left out ({why})")
    seconds = time.perf_counter() - start
    document = {"train": str(args.train), "test": str(args.test), "val": None if args.val is None else str(args.val),
                "clips": {"train": len(train), "test": len(test), **({"val": len(val)} if val else {})},
                "tokenizer": "java (pycocoevalcap PTBTokenizer)" if use_java else "python (core.ptb_tokenizer)",
                "baselines": results, "retrieval_ceiling": ceiling, "held_out_reference": held_out,
                "seconds": seconds}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    print(f"time: {seconds:.1f} s")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dataloaders.records import DataError

    try:
        run(args)
    except (DataError, BaselineInputError, CaptionInputError, JavaNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
