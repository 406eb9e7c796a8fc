"""Retrieved training texts for the captioner: the encoder-side input and the reranking pool.

A clip's neighbours are the training clips nearest to it by the z-scored motion statistics of
:func:`evaluation.baselines.motion_features` (mean and standard deviation over frames of the
root-relative joints). Why this embedding and not a learnt one: it needs no training (so the
retrieved texts of the training clips do not change as the model learns, and a clip's own
caption cannot leak in through an embedding fitted on it), it costs microseconds, and it is the
embedding of the strongest baseline the model is compared with (consensus retrieval).

For a clip, :meth:`Retriever.texts` returns the labels of its ``k`` nearest training clips,
most central first (consensus order: the summed CIDEr-D of a text against the other candidates,
with document frequencies from the training references, as :mod:`evaluation.baselines` ranks
them). The captioner reads the first few of them as text tokens beside the motion tokens, so
its decoder can copy and edit them; the reranker scores beam candidates against all of them.

What a clip may retrieve (``exclude``): never itself (``"self"``: leave-one-out, so a training
clip does not see its own caption in its input), and, in the new-learner protocol, no clip of its
own learner (``"learner"``), as a test clip of an unseen learner cannot.

The state (features, standardisation, labels, names, learners) is plain lists, stored in the
checkpoint, so ``caption.py`` retrieves as training did without the training files.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from configs.schema import RETRIEVAL_EXCLUDE
from dataloaders.splits import learner_of

__all__ = ["RETRIEVAL_EXCLUDE", "Retriever", "candidate_lists", "consensus_order", "consensus_scores", "rerank"]



def _features(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    from core.motion_stats import feature_matrix, motion_features

    return feature_matrix(records, motion_features)  # (N, 132)


def consensus_order(texts: Sequence[str], df: Any) -> list[int]:
    """Indices of ``texts``, most central first: by the summed CIDEr-D of each text against
    each other one as its single reference (the diagonal left out); ties keep the given order."""
    from core.cider import cider_d_matrix

    if len(texts) < 2:
        return list(range(len(texts)))
    similarity = cider_d_matrix(texts, [[t] for t in texts], df)  # (C, C)
    scores = similarity.sum(axis=1) - np.diag(similarity)
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def rerank(candidates: Sequence[Sequence[str]], pools: Sequence[Sequence[str]], df: Any, *,
           retrieved: bool = False, log_probs: Sequence[Sequence[float]] | None = None,
           weight: float = 0.0) -> list[str]:
    """For each clip, the candidate with the highest CIDEr-D against its pool of retrieved
    texts (CIDEr-D over several references is the mean over them); ties: the first candidate
    (the most probable beam).

    ``retrieved``: the pool's own texts are candidates too, after the given ones, each scored
    against the other pool texts (never against itself). ``log_probs`` / ``weight``: each
    candidate's score gains ``weight`` times its log-probability under the model;
    ``log_probs[i]`` lists clip i's candidates in order, the pool's texts last when ``retrieved``
    (:func:`candidate_lists`).
    """
    lists = candidate_lists(candidates, pools, retrieved)
    chosen = []
    for i, (cands, pool) in enumerate(zip(lists, pools)):
        if not cands:
            raise ValueError(f"clip {i} of the batch has nothing to rerank: no candidates and an empty pool")
        scores = consensus_scores(cands, pool, df, retrieved)  # (C,)
        if log_probs is not None and weight:
            scores = scores + weight * np.asarray(log_probs[i], dtype=np.float64)
        chosen.append(cands[int(np.argmax(scores))])
    return chosen


def candidate_lists(candidates: Sequence[Sequence[str]], pools: Sequence[Sequence[str]],
                    retrieved: bool) -> list[list[str]]:
    """Each clip's candidates as :func:`rerank` scores them: the given ones, then (``retrieved``)
    the texts of its pool."""
    return [list(c) + (list(p) if retrieved else []) for c, p in zip(candidates, pools)]


def consensus_scores(cands: Sequence[str], pool: Sequence[str], df: Any, retrieved: bool = False) -> np.ndarray:
    """CIDEr-D of each candidate against ``pool`` (C,); with ``retrieved`` the last ``len(pool)``
    candidates are the pool's texts, each scored against the others only."""
    from core.cider import cider_d_matrix

    pool = list(pool)
    own = len(pool) if retrieved else 0
    generated = list(cands[:len(cands) - own])
    scores = cider_d_matrix(generated, [pool], df)[:, 0] if generated else np.zeros(0)  # (C - P,)
    if own:
        others = [[t for j, t in enumerate(pool) if j != i] for i in range(own)]
        if own == 1:  # a lone retrieved text has nothing to agree with
            return np.concatenate([scores, np.zeros(1)])
        scores = np.concatenate([scores, np.diag(cider_d_matrix(pool, others, df))])  # (C,)
    return scores


class Retriever:
    """Nearest training clips by z-scored motion statistics; see the module docstring."""

    def __init__(self, features: np.ndarray, labels: Sequence[Sequence[str]], names: Sequence[str],
                 learners: Sequence[str], mean: np.ndarray | None = None, std: np.ndarray | None = None):
        features = np.asarray(features, dtype=np.float64)  # (N, F), raw statistics
        self.mean = features.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
        spread = features.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
        self.std = np.where(spread > 0, spread, 1.0)
        self.raw = features
        self.features = (features - self.mean) / self.std  # (N, F)
        self.labels = [list(t) for t in labels]
        self.names = list(names)
        self.learners = list(learners)
        from core.cider import document_frequency

        self.df = document_frequency(self.labels)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "Retriever":
        if not records:
            raise ValueError("retrieval needs at least one training clip")
        return cls(_features(records), [rec["labels"] for rec in records],
                   [rec["video_name"] for rec in records], [learner_of(rec) for rec in records])

    def state_dict(self) -> dict[str, Any]:
        return {"features": self.raw.tolist(), "labels": self.labels, "names": self.names,
                "learners": self.learners, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Retriever":
        return cls(np.asarray(state["features"]), state["labels"], state["names"], state["learners"],
                   state["mean"], state["std"])

    # ----------------------------------------------------------------------------------------
    def neighbours(self, records: Sequence[Mapping[str, Any]], k: int, exclude: str = "self") -> list[list[int]]:
        """For each record, its ``k`` nearest allowed training clips (row indices), nearest first;
        equal distances keep training order. ``exclude``: see :data:`RETRIEVAL_EXCLUDE`."""
        if exclude not in ("none", *RETRIEVAL_EXCLUDE):
            raise ValueError(f"exclude must be one of none, {', '.join(RETRIEVAL_EXCLUDE)}; got {exclude!r}")
        if not records:
            return []
        queries = (_features(records) - self.mean) / self.std  # (Q, F)
        distances = np.sqrt(((queries[:, None, :] - self.features[None, :, :]) ** 2).sum(axis=-1))  # (Q, N)
        names, learners = np.asarray(self.names, dtype=object), np.asarray(self.learners, dtype=object)
        for q, rec in enumerate(records):
            if exclude in ("self", "learner"):
                distances[q, names == rec["video_name"]] = np.inf
            if exclude == "learner":
                distances[q, learners == learner_of(rec)] = np.inf
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return [[int(i) for i in row if np.isfinite(distances[q, i])] for q, row in enumerate(order)]

    def texts(self, records: Sequence[Mapping[str, Any]], k: int, exclude: str = "self") -> list[list[str]]:
        """For each record, the labels of its ``k`` nearest allowed training clips, most central
        (consensus order) first."""
        out = []
        for row in self.neighbours(records, k, exclude):
            pool = [t for i in row for t in self.labels[i]]
            out.append([pool[j] for j in consensus_order(pool, self.df)])
        return out
