"""Score a predictions file against a dataset: ``python -m evaluation.score``.

Prints a table (overall and per ``motion_type``) and writes the figures as JSON.  The metrics are
COCO's (pycocoevalcap): BLEU-1..4, METEOR (needs Java), ROUGE-L, CIDEr-D, optionally BERTScore.
This module is the command only; from Python use :func:`evaluation.score_captions` or
:func:`evaluation.score_with_breakdown`.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from evaluation.metrics import (BERTSCORE_NAME, METRIC_NAMES, CaptionInputError, JavaNotFoundError,
                                MetricSkippedWarning, MissingIdsError, group_members, list_ids, resolve_use_java,
                                score_with_breakdown)

DESCRIPTION = """\
Score generated captions with the COCO caption metrics (the numbers pycocoevalcap gives):
BLEU-1..4, METEOR (only when Java is installed), ROUGE-L and CIDEr-D, overall and per motion_type,
plus BERTScore when --bertscore-model names a local model folder and bert-score is installed.
Without Java, a pure-Python tokenizer that reproduces COCO's PTB tokenizer is used."""

EPILOG = """\
input formats:
  predictions  JSON: {"video_name": "text", ...}
               or [{"video_name": ..., "caption": ...}, ...] ("text" instead of "caption" works too)
  references   a dataset pickle (read with the restricted unpickler) or the released JSON:
               a list of records with "video_name", "labels" (list of texts or one text) and
               optionally "motion_type"; a JSON object {"video_name": ["ref", ...]} also works

examples:
  python -m evaluation.score --predictions results/boxing/predictions/epoch_0010.json \\
      --references ../shared/data/BX/BX_test.json --out results/boxing/metrics_epoch_0010.json
  python -m evaluation.score --predictions P.json --references test.pkl --allow-missing --no-java
  python -m evaluation.score --predictions P.json --references test.pkl --train train.pkl

besides the table: distinct captions, self-retrieval R@1 / R@3 (is the captioned clip first /
in the top 3 when every clip is ranked by the CIDEr-D of the caption against its references?),
the ceiling of R@k (each clip's best caption among its references and, with --train, the
training texts: what copying a text at hand could reach), the same for a held-out reference
(agreement between references, not a ceiling), and with --train the novelty (share of
captions that are not a verbatim training text).

exit status: 0 on success, 2 on bad input (missing ids, empty captions, unreadable files)."""


class InputFileError(CaptionInputError):
    """A predictions or references file that cannot be read as documented."""


# ------------------------------------------------------------------------------------------
# Reading the inputs
# ------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputFileError(f"{path}: {what} file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a readable JSON file ({exc})") from exc


def load_predictions(path: str | Path) -> dict[str, Any]:
    """``{video_name: text}`` from ``{video_name: text}`` or ``[{video_name, caption|text}]``.
    Values are returned as found; :func:`evaluation.metrics.validate_inputs` checks them."""
    path = Path(path)
    raw = _read_json(path, "predictions")
    if isinstance(raw, dict):
        return dict(raw)
    if not isinstance(raw, list):
        raise InputFileError(f"{path}: expected a JSON object {{video_name: text}} or a list of "
                             f"{{video_name, caption}} records, found {type(raw).__name__}")
    out: dict[str, Any] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or "video_name" not in item:
            raise InputFileError(f"{path}: record {index} is not an object with a 'video_name' key: {item!r:.80}")
        key = "caption" if "caption" in item else "text" if "text" in item else None
        if key is None:
            raise InputFileError(f"{path}: record {index} (video_name {item['video_name']!r}) has no "
                                 "'caption' or 'text' key")
        if item["video_name"] in out:
            raise InputFileError(f"{path}: record {index}: video_name {item['video_name']!r} appears twice")
        out[item["video_name"]] = item[key]
    return out


def _read_dataset_pickle(path: Path) -> Any:
    if not path.is_file():
        raise InputFileError(f"{path}: references file not found")
    import pickle

    from dataloaders.safe_pickle import UnsafePickleError, safe_load  # lazy: only .pkl needs torch

    try:
        return safe_load(path)
    except UnsafePickleError as exc:
        raise InputFileError(str(exc)) from exc
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable dataset pickle ({exc})") from exc


def load_references(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """``({video_name: [labels]}, {video_name: motion_type or None})`` from a dataset pickle
    (read with the restricted unpickler), the released JSON (a list of records) or a JSON
    object ``{video_name: [texts]}``.  A single label string becomes a one-element list."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = _read_json(path, "references")
    elif path.suffix.lower() in (".pkl", ".pickle"):
        raw = _read_dataset_pickle(path)
    else:
        raise InputFileError(f"{path}: references must be a dataset pickle (.pkl) or JSON (.json)")
    if isinstance(raw, dict):
        return {k: _as_label_list(v) for k, v in raw.items()}, {}
    if not isinstance(raw, list):
        raise InputFileError(f"{path}: expected a list of records, found {type(raw).__name__}")
    return _references_from_records(raw, path)


def _as_label_list(labels: Any) -> Any:
    return [labels] if isinstance(labels, str) else labels


def _references_from_records(records: Sequence[Any], path: Path) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    refs: dict[str, list[str]] = {}
    types: dict[str, str | None] = {}
    for index, rec in enumerate(records):
        if not isinstance(rec, dict) or "video_name" not in rec:
            raise InputFileError(f"{path}: record {index} is not a dict with a 'video_name' key")
        name = rec["video_name"]
        if "labels" not in rec:
            raise InputFileError(f"{path}: record {index} (video_name {name!r}) has no 'labels'")
        if name in refs:
            raise InputFileError(f"{path}: record {index}: video_name {name!r} appears twice")
        labels = rec["labels"]
        refs[name] = list(labels) if isinstance(labels, tuple) else _as_label_list(labels)
        motion_type = rec.get("motion_type")
        types[name] = None if motion_type is None else str(motion_type)
    return refs, types


def restrict_to_common(predictions: Mapping[Hashable, Any], references: Mapping[Hashable, Any], *,
                       allow_missing: bool) -> tuple[dict, dict, dict[str, list]]:
    """Keep the clips present on both sides.  Without ``allow_missing`` any one-sided id raises
    :class:`MissingIdsError`; with it they are reported (returned) and left out."""
    only_pred = [i for i in predictions if i not in references]
    only_ref = [i for i in references if i not in predictions]
    if (only_pred or only_ref) and not allow_missing:
        raise MissingIdsError(only_pred, only_ref)
    common = [i for i in references if i in predictions]
    if not common:
        raise CaptionInputError("no clip id is present in both the predictions and the references")
    missing = {"only_in_predictions": only_pred, "only_in_references": only_ref}
    return {i: predictions[i] for i in common}, {i: references[i] for i in common}, missing


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
def format_table(rows: Mapping[str, Mapping[str, float]], counts: Mapping[str, int]) -> str:
    """A plain-text table: one row per group, one column per metric present."""
    metrics = [m for m in (*METRIC_NAMES, BERTSCORE_NAME) if any(m in r for r in rows.values())]
    name_width = max(len("group"), *(len(name) for name in rows))
    header = f"{'group':<{name_width}}  {'clips':>5}  " + "  ".join(f"{m:>12}" for m in metrics)
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        cells = "  ".join(f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in metrics)
        lines.append(f"{name:<{name_width}}  {counts[name]:>5}  {cells}")
    return "\n".join(lines)


def default_out_path(predictions_path: Path) -> Path:
    """``<predictions stem>.metrics.json`` beside the predictions file."""
    return predictions_path.with_name(predictions_path.stem + ".metrics.json")


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.score", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path, metavar="P.json",
                        help="generated captions: {video_name: text} or a list of {video_name, caption|text}")
    parser.add_argument("--references", required=True, type=Path, metavar="R.pkl|R.json",
                        help="dataset pickle or released JSON with video_name, labels, optional motion_type")
    parser.add_argument("--out", type=Path, metavar="M.json",
                        help="where to write the metrics JSON (default: <predictions>.metrics.json)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the clips present on both sides, reporting the others "
                             "(default: one-sided ids are an error)")
    parser.add_argument("--no-java", action="store_true",
                        help="do not use Java even if installed (pure-Python tokenizer, no METEOR)")
    parser.add_argument("--bertscore-model", type=Path, metavar="DIR",
                        help="local model folder for BERTScore (needs the bert-score package)")
    parser.add_argument("--train", type=Path, metavar="T.pkl|T.json",
                        help="the training set (its labels and paraphrases): adds novelty, the share of "
                             "captions that are not a verbatim training text")
    return parser


def quality_figures(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                    train_texts: Sequence[str] | None) -> dict[str, float]:
    """Figures that see through n-gram scores: distinct captions, self-retrieval R@1 / R@3 of the
    captions, their ceiling for captions copied from the references and the training texts
    (:func:`evaluation.quality.retrieval_ceiling`), the same R@k for a held-out reference
    (agreement between references, not a ceiling), and, given the training texts, novelty."""
    from evaluation.quality import distinct, held_out_reference, novelty, retrieval_ceiling, self_retrieval

    figures: dict[str, float] = {"distinct": distinct(predictions), **self_retrieval(predictions, references)}
    figures.update({f"ceiling {k}": v for k, v in retrieval_ceiling(references, train_texts or ()).items()})
    if any(len(refs) > 1 for refs in references.values()):  # a held-out reference needs another one
        figures.update({f"held-out reference {k}": v for k, v in held_out_reference(references).items()})
    if train_texts is not None:
        figures["novelty"] = novelty(predictions, train_texts)
    return figures


def training_texts_of(path: Path) -> list[str]:
    """Every label and paraphrase of a training pickle or JSON list of records."""
    raw = _read_json(path, "training") if path.suffix.lower() == ".json" else _read_dataset_pickle(path)
    if not isinstance(raw, list):
        raise InputFileError(f"{path}: expected a list of records with 'labels'")
    texts = []
    for index, rec in enumerate(raw):
        if not isinstance(rec, dict) or "labels" not in rec:
            raise InputFileError(f"{path}: record {index} has no 'labels'")
        texts += _as_label_list(rec["labels"]) + list(rec.get("augmented_labels") or [])
    return texts


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read, score, print and write; returns the JSON document."""
    predictions = load_predictions(args.predictions)
    references, motion_types = load_references(args.references)
    predictions, references, missing = restrict_to_common(predictions, references, allow_missing=args.allow_missing)
    _report_missing(missing)
    use_java = resolve_use_java(False if args.no_java else None)
    groups = {i: motion_types.get(i) for i in references} if any(motion_types.values()) else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricSkippedWarning)
        overall, by_group = score_with_breakdown(predictions, references, groups, use_java=use_java,
                                                 bertscore_model=args.bertscore_model, allow_empty_predictions=True)
    notes = [str(w.message) for w in caught if issubclass(w.category, MetricSkippedWarning)]
    empty = sorted(str(i) for i, text in predictions.items() if not text.strip())
    if empty:  # a model may write nothing; that scores as an empty hypothesis, as in training
        notes.append(f"{len(empty)} empty caption(s) scored as empty hypotheses ({', '.join(empty[:5])}"
                     f"{', ...' if len(empty) > 5 else ''})")
    counts = {"overall": len(references)}
    if groups is not None:
        counts.update({g: len(m) for g, m in group_members(list(references), groups).items()})
    print(format_table({"overall": overall, **by_group}, counts))
    quality = quality_figures(predictions, references, training_texts_of(args.train) if args.train else None)
    print("  ".join(f"{k} {v:.4g}" for k, v in quality.items()))
    for note in notes:
        print(f"note: {note}")
    document = {
        "predictions": str(args.predictions), "references": str(args.references),
        "tokenizer": "java (pycocoevalcap PTBTokenizer)" if use_java else "python (core.ptb_tokenizer)",
        "clips": counts, "overall": overall, "quality": quality, "by_motion_type": by_group,
        "left_out": missing, "notes": notes,
    }
    out = args.out or default_out_path(args.predictions)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return document


def _report_missing(missing: Mapping[str, list]) -> None:
    for key, what in (("only_in_predictions", "predicted clip(s) without references"),
                      ("only_in_references", "reference clip(s) without a prediction")):
        if missing[key]:
            print(f"left out {len(missing[key])} {what}: {list_ids(missing[key])}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (CaptionInputError, JavaNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
