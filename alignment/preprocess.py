"""Write ``aligned_*`` segment fields into a dataset pickle.

    python -m alignment.preprocess --data X.pkl --standard S.pkl --method dtw|window|carl \\
        [--embedder CKPT] [--features joints|bones|joints_bones] [--metric ...] [--out Y.pkl]

(default --out: results/alignment/<X>.<method>.pkl)

For every clip, the learner's clip is located inside the standard of its ``motion_type`` and five
fields are written: ``aligned_start_frame``, ``aligned_end_frame`` (the learner segment, end
exclusive), ``aligned_std_start_frame``, ``aligned_std_end_frame`` (the standard segment, end
exclusive) and ``aligned_seq_len`` (the learner segment's length). Nothing else in a record
changes; the records are written back in the format they were read in (a pickled list of dicts),
to a new file: ``--out`` may not be ``--data``.

Methods:

* ``window``: the same-length window of the standard with the least summed squared distance
  (FFT correlation). As in the released BX data, a clip longer than the standard is cut to the
  standard's length; here the best window of the clip is searched (BX keeps its first frames).
  ``std_end - std_start == seq_len``.
* ``dtw``: subsequence DTW of the whole clip inside the standard (open begin and end on the
  standard) with a penalty on non-diagonal steps (``--penalty``, in units of the pair's median
  local cost); the standard segment may be shorter or longer than the clip (the dataset
  resamples it to the learner's length).
* ``carl``: subsequence DTW (cosine cost, same penalty) on the frame embeddings of a trained
  CARL embedder, or with ``--carl-match window`` the best same-length window of embeddings.

Where the input already carries ``aligned_*`` fields, the agreement of the new ones with them is
printed (mean absolute frame error and the share within 5 frames, on ``aligned_std_start_frame``:
the released BX data always has ``aligned_start_frame == 0``).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from alignment.dtw import METRICS, local_cost, subsequence_dtw_from_cost
from alignment.window import best_window
from core.io import atomic_write

METHODS = ("dtw", "window", "carl")
FEATURES = ("joints", "bones", "joints_bones")
FIELDS = ("aligned_start_frame", "aligned_end_frame", "aligned_std_start_frame",
          "aligned_std_end_frame", "aligned_seq_len")
WITHIN = 5  # frames: "share within 5 frames"
DEFAULT_PENALTY = 0.5  # non-diagonal DTW step penalty, in units of the pair's median local cost


# ============================================================================ features ========
def clip_features(coords: np.ndarray, kind: str = "joints") -> np.ndarray:
    """Per-frame feature vectors ``(T, D)`` of a clip ``[T, 22, 3]`` for DTW and window matching.

    Built from the project's joint and bone channels; the joints are taken relative to the
    root of the same frame, so a learner segment and the standard compare poses whatever their
    global positions (a clip cut from the middle of a movement does not start where the standard
    starts). On BX, whose root is always at the origin, these are the raw coordinates.
    ``joints``: (T, 66), ``bones``: (T, 66), ``joints_bones``: (T, 132).
    """
    from dataloaders.features import compute_features

    if kind not in FEATURES:
        raise ValueError(f"unknown features {kind!r}; expected one of {FEATURES}")
    feats = compute_features(coords, normalise="none")                  # (C, T, V)
    feats[0:3] -= feats[0:3, :, :1]                                     # joints minus same-frame root
    channels = {"joints": slice(0, 3), "bones": slice(3, 6), "joints_bones": slice(0, 6)}[kind]
    feats = feats[channels].transpose(1, 0, 2)                          # (C, T, V) -> (T, C, V)
    return np.ascontiguousarray(feats.reshape(feats.shape[0], -1), dtype=np.float64)  # (T, C*V)


# ============================================================================ matching ========
@dataclass
class Segment:
    """Corresponding segments: learner ``[start, end)`` and standard ``[std_start, std_end)``."""

    start: int
    end: int
    std_start: int
    std_end: int
    seq_len: int

    def fields(self) -> dict[str, int]:
        return dict(zip(FIELDS, (self.start, self.end, self.std_start, self.std_end, self.seq_len)))


def window_segment(learner: np.ndarray, standard: np.ndarray) -> Segment:
    """Best same-length window; the shorter sequence slides inside the longer one."""
    t, t_std = learner.shape[0], standard.shape[0]
    if t <= t_std:
        s = best_window(learner, standard).start
        return Segment(0, t, s, s + t, t)
    s = best_window(standard, learner).start
    return Segment(s, s + t_std, 0, t_std, t_std)


def dtw_segment(learner: np.ndarray, standard: np.ndarray, metric: str = "sqeuclidean",
                penalty: float = DEFAULT_PENALTY) -> Segment:
    """Subsequence DTW of the whole learner clip inside the standard.

    ``penalty`` (times the median local cost of the pair) is added to every non-diagonal step;
    without it (0) the open-begin DTW tends to map a whole clip onto one or two standard frames
    whose pose is closest on average (on BX the matched segments average 2 frames).
    """
    cost = local_cost(learner, standard, metric)                 # (T, T_std)
    res = subsequence_dtw_from_cost(cost, penalty=penalty * float(np.median(cost)))
    t = learner.shape[0]
    return Segment(0, t, res.start, res.end, t)


def align_records(records: Sequence[dict], standards: dict[str, np.ndarray], method: str, *,
                  features: str = "joints", metric: Optional[str] = None,
                  embedder=None, penalty: float = DEFAULT_PENALTY, carl_match: str = "dtw",
                  progress: bool = True) -> list[Segment]:
    """One :class:`Segment` per record against the standard of its ``motion_type``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    missing = sorted({str(r.get("motion_type")) for r in records} - set(standards))
    if missing:
        raise ValueError(f"no standard for motion type(s) {missing}; the standard file has "
                         f"{sorted(standards)}")
    if method == "carl":
        if embedder is None:
            raise ValueError("--method carl needs --embedder CKPT (a CARL training checkpoint)")
        from alignment.carl import embed_clips
        learners = embed_clips(embedder, [r["coordinates"] for r in records])
        names = sorted(standards)
        std_feats = dict(zip(names, embed_clips(embedder, [standards[k] for k in names])))
        metric = metric or "cosine"
    else:
        learners = [clip_features(r["coordinates"], features) for r in records]
        std_feats = {k: clip_features(v, features) for k, v in standards.items()}
        metric = metric or "sqeuclidean"
    out = []
    for rec, feats in tqdm(list(zip(records, learners)), desc=f"aligning ({method})",
                           disable=not progress, file=sys.stderr, dynamic_ncols=True):
        std = std_feats[rec["motion_type"]]
        if method == "window" or (method == "carl" and carl_match == "window"):
            out.append(window_segment(feats, std))
        else:
            out.append(dtw_segment(feats, std, metric, penalty))
    return out


# ============================================================================ agreement =======
def has_aligned_fields(records: Sequence[dict]) -> bool:
    return all(r.get("aligned_std_start_frame") is not None for r in records)


def agreement(segments: Sequence[Segment], records: Sequence[dict],
              field: str = "aligned_std_start_frame") -> dict[str, float]:
    """Mean absolute frame error and share within 5 frames of one field against the records'."""
    attr = {"aligned_std_start_frame": "std_start", "aligned_std_end_frame": "std_end",
            "aligned_start_frame": "start", "aligned_end_frame": "end"}[field]
    pred = np.array([getattr(s, attr) for s in segments], dtype=np.float64)
    ref = np.array([r[field] for r in records], dtype=np.float64)
    err = np.abs(pred - ref)
    return {"n": int(err.size), "mae": float(err.mean()), "within5": float((err <= WITHIN).mean())}


def agreement_rows(segments: Sequence[Segment], records: Sequence[dict]) -> list[dict]:
    """Overall and per-motion-type agreement on the std start (and std end for reference)."""
    groups = {"all": list(range(len(records)))}
    for k, r in enumerate(records):
        groups.setdefault(str(r.get("motion_type")), []).append(k)
    rows = []
    for name, idx in groups.items():
        segs, recs = [segments[k] for k in idx], [records[k] for k in idx]
        start = agreement(segs, recs, "aligned_std_start_frame")
        end = agreement(segs, recs, "aligned_std_end_frame")
        rows.append({"group": name, "n": start["n"], "mae_std_start": start["mae"],
                     "within5_std_start": start["within5"], "mae_std_end": end["mae"]})
    return rows


def format_agreement(rows: list[dict], method: str = "") -> str:
    """The agreement table; each row's ``method`` key (else ``method``) names its method."""
    lines = [f"{'method':<18} {'group':<16} {'n':>4} {'MAE std_start':>14} "
             f"{'<=5 frames':>11} {'MAE std_end':>12}"]
    for r in rows:
        lines.append(f"{r.get('method', method):<18} {r['group']:<16} {r['n']:>4} "
                     f"{r['mae_std_start']:>14.2f} {100 * r['within5_std_start']:>10.1f}% "
                     f"{r['mae_std_end']:>12.2f}")
    return "\n".join(lines)


# ============================================================================ files ===========
def same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def with_fields(raw: list, segments: Sequence[Segment]) -> list:
    """Copies of the raw record dicts with the five ``aligned_*`` fields set (plain ints)."""
    return [{**rec, **seg.fields()} for rec, seg in zip(raw, segments)]


# ============================================================================ command =========
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="dataset pickle to align")
    parser.add_argument("--standard", required=True, type=Path, help="standard pickle")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--embedder", type=Path, help="CARL checkpoint (--method carl)")
    parser.add_argument("--features", choices=FEATURES, default="joints",
                        help="pose features for dtw/window (default joints)")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="DTW local cost (default sqeuclidean; cosine for carl)")
    parser.add_argument("--penalty", type=float, default=DEFAULT_PENALTY,
                        help="dtw/carl: non-diagonal step penalty in units of the clip's median "
                             f"local cost (default {DEFAULT_PENALTY}; 0 = plain subsequence DTW)")
    parser.add_argument("--carl-match", choices=("dtw", "window"), default="dtw",
                        help="carl: subsequence DTW (default) or same-length window on embeddings")
    parser.add_argument("--out", type=Path, default=None,
                        help="output pickle, a new file (default: results/alignment/<data>.<method>.pkl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("results") / "alignment" / f"{args.data.stem}.{args.method}.pkl"
    return args


def fail(message: str) -> int:
    """One line on stderr; exit status 2 (bad input: a missing file, an existing output)."""
    print(f"alignment.preprocess: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from dataloaders.records import DataError, load_records, load_standards
    from dataloaders.safe_pickle import safe_load

    from training.checkpoint import CheckpointError

    if same_file(args.out, args.data):
        return fail(f"--out {args.out} is the input file; the input is never overwritten: choose another "
                    f"output path")
    if args.out.exists() and not args.overwrite:
        return fail(f"{args.out} exists; pass --overwrite to replace it")
    if args.method == "carl" and args.embedder is None:
        return fail("--method carl needs --embedder CKPT")
    embedder = None
    if args.method == "carl":
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
    raw = safe_load(args.data)  # validated above: one dict per record, same order

    segments = align_records(records, standards, args.method, features=args.features,
                             metric=args.metric, embedder=embedder, penalty=args.penalty,
                             carl_match=args.carl_match,
                             progress=not args.no_progress)
    atomic_write(args.out, lambda fh: pickle.dump(with_fields(raw, segments), fh, protocol=4))
    print(f"wrote {len(segments)} clips with aligned_* fields ({args.method}) to {args.out}")
    if has_aligned_fields(records):
        print(f"agreement with the aligned_* fields in {args.data}:")
        print(format_agreement(agreement_rows(segments, records), args.method))
    return 0


if __name__ == "__main__":
    sys.exit(main())
