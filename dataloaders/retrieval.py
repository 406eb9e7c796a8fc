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

Which clips are familiar (:meth:`Retriever.familiar`, for ``eval.rerank_candidates: gated``): those
whose nearest allowed training clip, in the motion statistics and the mean bone lengths together
(:meth:`Retriever.gate_features`), is nearer than a threshold set on the training clips alone: the
distance that best tells a clip's nearest other clip (its learner seen) from its nearest clip of
another learner (its learner left out). On BX's training file that distance tells the two apart
with an AUC of 0.955, so a familiar clip is most likely of a learner the model has seen.

The state (features, standardisation, labels, names, learners, bone lengths) is plain lists, stored in the
checkpoint, so ``caption.py`` retrieves as training did without the training files.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from configs.schema import RETRIEVAL_EXCLUDE
from dataloaders.splits import learner_of

__all__ = ["RETRIEVAL_EXCLUDE", "Retriever", "candidate_lists", "consensus_order", "consensus_scores", "per_clip", "rerank"]



def _features(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    from core.motion_stats import feature_matrix, motion_features

    return feature_matrix(records, motion_features)  # (N, 132)


def _bone_lengths(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    from core.motion_stats import feature_matrix
    from dataloaders.skeleton import bone_lengths

    return feature_matrix(records, bone_lengths)  # (N, 21)


def _zscore(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` standardised with the mean and standard deviation of ``train`` (a constant column
    is only centred)."""
    spread = train.std(axis=0)
    return (x - train.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


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
           retrieved: bool | Sequence[bool] = False, log_probs: Sequence[Sequence[float]] | None = None,
           weight: float = 0.0) -> list[str]:
    """For each clip, the candidate with the highest CIDEr-D against its pool of retrieved
    texts (CIDEr-D over several references is the mean over them); ties: the first candidate
    (the most probable beam).

    ``retrieved`` (one flag for all clips, or one per clip): the pool's own texts are candidates
    too, after the given ones, each scored against the other pool texts (never against itself).
    ``log_probs`` / ``weight``: each candidate's score gains ``weight`` times its log-probability;
    ``log_probs[i]`` lists clip i's candidates in order, the pool's texts last when ``retrieved``
    (:func:`candidate_lists`).
    """
    flags = per_clip(retrieved, len(pools))
    lists = candidate_lists(candidates, pools, flags)
    chosen = []
    for i, (cands, pool) in enumerate(zip(lists, pools)):
        if not cands:
            raise ValueError(f"clip {i} of the batch has nothing to rerank: no candidates and an empty pool")
        scores = consensus_scores(cands, pool, df, flags[i])  # (C,)
        if log_probs is not None and weight:
            scores = scores + weight * np.asarray(log_probs[i], dtype=np.float64)
        chosen.append(cands[int(np.argmax(scores))])
    return chosen


def candidate_lists(candidates: Sequence[Sequence[str]], pools: Sequence[Sequence[str]],
                    retrieved: bool | Sequence[bool]) -> list[list[str]]:
    """Each clip's candidates as :func:`rerank` scores them: the given ones, then (``retrieved``,
    one flag for all clips or one per clip) the texts of its pool."""
    flags = per_clip(retrieved, len(pools))
    return [list(c) + (list(p) if flag else []) for c, p, flag in zip(candidates, pools, flags)]


def per_clip(flag: bool | Sequence[bool], n: int) -> list[bool]:
    """``flag`` for each of ``n`` clips: one flag repeated, or a sequence of ``n`` checked."""
    if isinstance(flag, (bool, np.bool_)):
        return [bool(flag)] * n
    flags = [bool(f) for f in flag]
    if len(flags) != n:
        raise ValueError(f"expected one retrieved flag per clip ({n}), found {len(flags)}")
    return flags


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


FAMILIAR_BLOCK = 20_000_000  # numbers held at once while the familiar threshold is computed


def _check_exclude(exclude: str) -> None:
    if exclude not in ("none", *RETRIEVAL_EXCLUDE):
        raise ValueError(f"exclude must be one of none, {', '.join(RETRIEVAL_EXCLUDE)}; got {exclude!r}")


class Retriever:
    """Nearest training clips by z-scored motion statistics; see the module docstring."""

    def __init__(self, features: np.ndarray, labels: Sequence[Sequence[str]], names: Sequence[str],
                 learners: Sequence[str], mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 bones: np.ndarray | None = None):
        features = np.asarray(features, dtype=np.float64)  # (N, F), raw statistics
        self.mean = features.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
        spread = features.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
        self.std = np.where(spread > 0, spread, 1.0)
        self.raw = features
        self.features = (features - self.mean) / self.std  # (N, F)
        self.labels = [list(t) for t in labels]
        self.names = list(names)
        self.learners = list(learners)
        self.bones = None if bones is None else np.asarray(bones, dtype=np.float64)  # (N, 21) or None
        from core.cider import document_frequency

        self.df = document_frequency(self.labels)
        self._familiar_threshold: float | None = None  # computed on first use (familiar_threshold)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "Retriever":
        if not records:
            raise ValueError("retrieval needs at least one training clip")
        return cls(_features(records), [rec["labels"] for rec in records],
                   [rec["video_name"] for rec in records], [learner_of(rec) for rec in records],
                   bones=_bone_lengths(records))

    def state_dict(self) -> dict[str, Any]:
        state = {"features": self.raw.tolist(), "labels": self.labels, "names": self.names,
                 "learners": self.learners, "mean": self.mean.tolist(), "std": self.std.tolist()}
        return state if self.bones is None else {**state, "bones": self.bones.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Retriever":
        bones = state.get("bones")  # absent from checkpoints written before the gate used them
        return cls(np.asarray(state["features"]), state["labels"], state["names"], state["learners"],
                   state["mean"], state["std"], None if bones is None else np.asarray(bones))

    # ----------------------------------------------------------------------------------------
    def distances(self, records: Sequence[Mapping[str, Any]], exclude: str = "self",
                  space: str = "motion") -> np.ndarray:
        """(Q, N) distances from each record to each training clip, in the z-scored motion
        statistics (``space="motion"``, retrieval's) or the gate's space (``"gate"``, see
        :meth:`gate_features`); a clip the record may not retrieve (``exclude``, see
        :data:`RETRIEVAL_EXCLUDE`) is at infinity."""
        _check_exclude(exclude)
        if space == "motion":
            queries, train = (_features(records) - self.mean) / self.std, self.features  # (Q, F), (N, F)
        else:
            queries, train = self.gate_features(records), self.gate_features()  # (Q, G), (N, G)
        distances = np.sqrt(((queries[:, None, :] - train[None, :, :]) ** 2).sum(axis=-1))  # (Q, N)
        names, learners = np.asarray(self.names, dtype=object), np.asarray(self.learners, dtype=object)
        for q, rec in enumerate(records):
            if exclude in ("self", "learner"):
                distances[q, names == rec["video_name"]] = np.inf
            if exclude == "learner":
                distances[q, learners == learner_of(rec)] = np.inf
        return distances

    def neighbours(self, records: Sequence[Mapping[str, Any]], k: int, exclude: str = "self") -> list[list[int]]:
        """For each record, its ``k`` nearest allowed training clips (row indices), nearest first;
        equal distances keep training order. ``exclude``: see :data:`RETRIEVAL_EXCLUDE`."""
        _check_exclude(exclude)
        if not records:
            return []
        distances = self.distances(records, exclude)  # (Q, N)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return [[int(i) for i in row if np.isfinite(distances[q, i])] for q, row in enumerate(order)]

    def gate_features(self, records: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        """The gate's space, ``(Q, 132 + 21)`` (the training clips' without ``records``): the
        z-scored motion statistics beside the mean bone lengths z-scored with the training clips'
        statistics and scaled by sqrt(132 / 21), so the two blocks weigh the same. A learner shows
        in both: how they move and how they are built."""
        if self.bones is None:
            raise ValueError("eval.rerank_candidates=gated needs the training clips' bone lengths, which this "
                             "run's retrieval state predates; caption with a run trained since, or with "
                             "eval.rerank_candidates=generated")
        if records is None:
            motion, bones = self.features, self.bones  # (N, 132), (N, 21)
        else:
            motion, bones = (_features(records) - self.mean) / self.std, _bone_lengths(records)
        weight = np.sqrt(self.features.shape[1] / self.bones.shape[1])
        return np.concatenate([motion, weight * _zscore(self.bones, bones)], axis=1)

    def familiar_threshold(self) -> float:
        """The gate distance below which a clip's nearest training clip is taken to be of its own
        learner, from the training clips alone (leave-one-out): the threshold that best separates
        each clip's distance to its nearest other clip (its learner seen) from its distance to the
        nearest clip of another learner (its learner left out), by balanced accuracy; the smallest
        such distance on ties."""
        if self._familiar_threshold is not None:
            return self._familiar_threshold
        if len(set(self.learners)) < 2:
            raise ValueError(f"eval.rerank_candidates=gated needs training clips of two or more learners; "
                             f"the retriever holds {len(self.learners)} clip(s) of {len(set(self.learners))}")
        seen, unseen = self._nearest_distances()  # (N,), (N,)
        thresholds = np.unique(np.concatenate([seen, unseen]))  # (T,), ascending
        seen_below = np.searchsorted(np.sort(seen), thresholds, side="right")  # (T,): clips with seen <= t
        unseen_above = len(unseen) - np.searchsorted(np.sort(unseen), thresholds, side="right")  # unseen > t
        # both shares have N clips, so balanced accuracy is their count sum over 2N: exact, in integers
        self._familiar_threshold = float(thresholds[int(np.argmax(seen_below + unseen_above))])
        return self._familiar_threshold

    def _nearest_distances(self) -> tuple[np.ndarray, np.ndarray]:
        """For each training clip, the distance to its nearest other clip and to the nearest clip
        of another learner, ``(N,)`` each; rows a block at a time, so memory stays near
        ``FAMILIAR_BLOCK`` numbers whatever the number of clips."""
        space = self.gate_features()  # (N, G)
        n, width = space.shape
        learners = np.asarray(self.learners, dtype=object)
        seen, unseen = np.empty(n), np.empty(n)
        rows = max(1, FAMILIAR_BLOCK // max(1, n * width))
        for start in range(0, n, rows):
            block = space[start:start + rows]  # (B, G)
            d = np.sqrt(((block[:, None, :] - space[None, :, :]) ** 2).sum(axis=-1))  # (B, N)
            d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
            seen[start:start + rows] = d.min(axis=1)
            other = learners[start:start + rows, None] != learners[None, :]  # (B, N)
            unseen[start:start + rows] = np.where(other, d, np.inf).min(axis=1)
        return seen, unseen

    def familiar(self, records: Sequence[Mapping[str, Any]], exclude: str = "self", scale: float = 1.0) -> list[bool]:
        """For each record, whether its nearest allowed training clip in the gate's space is within
        ``scale`` times :meth:`familiar_threshold` (its learner is taken to be among the training
        clips')."""
        _check_exclude(exclude)
        if not records:
            return []
        nearest = self.distances(records, exclude, space="gate").min(axis=1)  # (Q,)
        return [bool(d <= scale * self.familiar_threshold()) for d in nearest]

    def texts(self, records: Sequence[Mapping[str, Any]], k: int, exclude: str = "self") -> list[list[str]]:
        """For each record, the labels of its ``k`` nearest allowed training clips, most central
        (consensus order) first."""
        out = []
        for row in self.neighbours(records, k, exclude):
            pool = [t for i in row for t in self.labels[i]]
            out.append([pool[j] for j in consensus_order(pool, self.df)])
        return out
