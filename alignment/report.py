"""Alignment report: agreement with shipped ``aligned_*`` fields and Kendall's tau of correspondences.

    python -m alignment.report --data ../shared/data/BX/BX_test.pkl \\
        --standard ../shared/data/BX/BX_standard.pkl [--embedder results/carl_bx/checkpoints/last.pt]

1. Agreement: two baselines that look only at the lengths (the clip placed at the end or in the
   middle of the standard) and each method (window / DTW on pose features, DTW / window on CARL embeddings) writes
   segments as :mod:`alignment.preprocess` would; the table gives the mean absolute error of
   ``aligned_std_start_frame`` against the file's, the share within 5 frames, and the MAE of
   ``aligned_std_end_frame``.
2. Kendall's tau-b (the CARL evaluation): for every ordered pair of distinct clips of one motion
   type, each frame of the first clip is matched to its nearest frame of the second; tau-b between
   frame order and matched order, averaged over pairs (pairs whose matches are all one frame give
   no tau and are counted apart). Raw joint features vs CARL embeddings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import permutations
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy.stats import kendalltau
from tqdm import tqdm

from alignment.dtw import local_cost
from alignment.preprocess import (DEFAULT_PENALTY, Segment, agreement_rows, clip_features, format_agreement,
                                  dtw_segment, has_aligned_fields, window_segment)


# ============================================================================ agreement =======
def method_segments(records: Sequence[dict], learner: Sequence[np.ndarray],
                    standards: dict[str, np.ndarray], match: str, metric: str,
                    penalty: float) -> list[Segment]:
    """Segments of every record by ``match`` (``window`` or ``dtw``) on precomputed features."""
    out = []
    for rec, feats in zip(records, learner):
        std = standards[rec["motion_type"]]
        out.append(window_segment(feats, std) if match == "window"
                   else dtw_segment(feats, std, metric, penalty))
    return out


def length_baseline(records, standards, where: str) -> list[Segment]:
    """Segments from the lengths alone: the clip placed at the end (or centre) of the standard."""
    out = []
    for rec in records:
        t, t_std = rec["coordinates"].shape[0], standards[rec["motion_type"]].shape[0]
        length = min(t, t_std)
        start = t_std - length if where == "end" else (t_std - length) // 2
        out.append(Segment(0, length, start, start + length, length))
    return out


def agreement_table(records, standards, embedder=None, penalty: float = DEFAULT_PENALTY
                    ) -> list[dict]:
    """Agreement rows for the methods the report compares."""
    variants = []  # (label, features name or "carl", match, metric, penalty)
    for feats in ("joints", "bones"):
        variants.append((f"window/{feats}", feats, "window", "sqeuclidean", 0.0))
    variants.append(("dtw/joints p=0", "joints", "dtw", "sqeuclidean", 0.0))
    for feats in ("joints", "bones"):
        variants.append((f"dtw/{feats} p={penalty:g}", feats, "dtw", "sqeuclidean", penalty))
    if embedder is not None:
        variants += [("carl/dtw p=0", "carl", "dtw", "cosine", 0.0),
                     (f"carl/dtw p={penalty:g}", "carl", "dtw", "cosine", penalty),
                     ("carl/window", "carl", "window", "sqeuclidean", 0.0)]
    cache: dict[str, tuple[list, dict]] = {}
    rows = []
    for label, where in (("baseline: end", "end"), ("baseline: centre", "centre")):
        segs = length_baseline(records, standards, where)
        rows += [{"method": label, **row} for row in agreement_rows(segs, records)]
    for label, feats, match, metric, pen in tqdm(variants, desc="methods", file=sys.stderr,
                                                dynamic_ncols=True):
        if feats not in cache:
            cache[feats] = features_of(records, standards, feats, embedder)
        learner, std = cache[feats]
        segs = method_segments(records, learner, std, match, metric, pen)
        for row in agreement_rows(segs, records):
            rows.append({"method": label, **row})
    return rows


def features_of(records, standards, kind: str, embedder=None):
    """Per-frame features of the learners and the standards: pose features or CARL embeddings."""
    if kind == "carl":
        from alignment.carl import embed_clips
        names = sorted(standards)
        learner = embed_clips(embedder, [r["coordinates"] for r in records])
        return learner, dict(zip(names, embed_clips(embedder, [standards[k] for k in names])))
    return ([clip_features(r["coordinates"], kind) for r in records],
            {k: clip_features(v, kind) for k, v in standards.items()})


# ============================================================================ Kendall's tau ===
def nearest_neighbour_tau(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """Kendall's tau-b between frame order of ``a (T1, D)`` and its nearest frames in ``b``."""
    nn = np.argmin(local_cost(a, b, metric), axis=1)   # (T1,)
    if np.all(nn == nn[0]):
        return float("nan")
    return float(kendalltau(np.arange(a.shape[0]), nn).statistic)


def kendall_by_type(feats: Sequence[np.ndarray], types: Sequence[str], metric: str,
                    max_pairs: int = 0, seed: int = 0, label: str = "",
                    queries: Optional[Sequence[np.ndarray]] = None) -> dict[str, dict]:
    """Mean tau-b over ordered pairs ``(i, j)`` of distinct clips of each motion type (and overall).

    ``queries[i]`` (default ``feats[i]``) is matched against ``feats[j]``.
    """
    queries = feats if queries is None else queries
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    all_taus: list[float] = []
    for mt in sorted(set(types)):
        idx = [k for k, t in enumerate(types) if t == mt]
        pairs = list(permutations(idx, 2))
        if max_pairs and len(pairs) > max_pairs:
            pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
        taus = np.array([nearest_neighbour_tau(queries[i], feats[j], metric)
                         for i, j in tqdm(pairs, desc=f"tau {label} {mt}", file=sys.stderr,
                                          dynamic_ncols=True, leave=False)])
        ok = taus[~np.isnan(taus)]
        all_taus += ok.tolist()
        out[mt] = {"pairs": len(pairs), "undefined": int(np.isnan(taus).sum()),
                   "tau": float(ok.mean()) if ok.size else float("nan")}
    out["all"] = {"pairs": sum(v["pairs"] for v in out.values()),
                  "undefined": sum(v["undefined"] for v in out.values()),
                  "tau": float(np.mean(all_taus)) if all_taus else float("nan")}
    return out


# ============================================================================ printing ========
def format_tau_table(taus: dict[str, dict]) -> str:
    groups = list(next(iter(taus.values())))
    lines = [f"{'features':<16} " + " ".join(f"{g:>16}" for g in groups)]
    for name, by_group in taus.items():
        lines.append(f"{name:<16} " + " ".join(f"{by_group[g]['tau']:>16.3f}" for g in groups))
    first = next(iter(taus.values()))
    lines.append(f"{'(pairs)':<16} " + " ".join(f"{first[g]['pairs']:>16d}" for g in groups))
    return "\n".join(lines)


# ============================================================================ command =========
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="dataset pickle")
    parser.add_argument("--standard", required=True, type=Path, help="standard pickle")
    parser.add_argument("--embedder", type=Path, help="CARL checkpoint (adds the carl rows)")
    parser.add_argument("--penalty", type=float, default=DEFAULT_PENALTY,
                        help="DTW non-diagonal step penalty (units of the median local cost)")
    parser.add_argument("--max-pairs", type=int, default=0,
                        help="at most this many random ordered pairs per motion type for tau (0: all)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from dataloaders.records import DataError, load_records, load_standards
    from training.checkpoint import CheckpointError

    def fail(message) -> int:  # one line on stderr, exit status 2
        print(f"alignment.report: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2

    embedder = None
    if args.embedder:
        from alignment.carl import load_embedder
        try:
            embedder = load_embedder(str(args.embedder))
        except CheckpointError as exc:
            return fail(f"--embedder: {exc}")
    try:
        standards = load_standards(args.standard)
        records = load_records(args.data, need_labels=False, standards=standards)
    except DataError as exc:
        return fail(exc)
    started = time.perf_counter()
    result: dict = {"data": str(args.data), "embedder": str(args.embedder or "")}

    if has_aligned_fields(records):
        rows = agreement_table(records, standards, embedder, args.penalty)
        result["agreement"] = rows
        print(f"Agreement with the aligned_* fields of {args.data} ({len(records)} clips)")
        print(format_agreement(rows))
    else:
        print(f"{args.data} has no aligned_* fields: no agreement table")

    types = [str(r["motion_type"]) for r in records]
    taus = {"raw joints": kendall_by_type(features_of(records, standards, "joints")[0], types,
                                          "sqeuclidean", args.max_pairs, label="raw")}
    if embedder is not None:
        from alignment.carl import embed_clips
        carl_feats = features_of(records, standards, "carl", embedder)[0]
        taus["CARL embedding"] = kendall_by_type(carl_feats, types, "cosine", args.max_pairs,
                                                 label="carl")
        # control: embed the first clip of each pair played backwards. An embedder that encodes
        # poses gives about minus the tau above; one that encodes the frame index gives plus.
        reversed_ = embed_clips(embedder, [np.ascontiguousarray(r["coordinates"][::-1])
                                           for r in records])
        taus["CARL reversed"] = kendall_by_type(carl_feats, types, "cosine", args.max_pairs,
                                                label="carl-rev", queries=reversed_)
    result["kendall_tau"] = taus
    print(f"\nKendall's tau-b of nearest-neighbour frame correspondences "
          f"(ordered pairs of clips of one motion type)")
    print(format_tau_table(taus))
    if embedder is not None:
        print("(CARL reversed: the first clip of each pair is embedded backwards; about -tau "
              "means the embedding follows the pose, about +tau that it follows the frame index)")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
