"""Convert a HumanML3D folder into the project's dataset pickles (train.pkl, val.pkl, test.pkl).

Usage::

    python -m dataloaders.humanml3d --root <HumanML3D folder> --out data/humanml3d

Input (the HumanML3D release, with ``new_joints`` and ``texts`` unpacked):

* ``new_joints/<id>.npy``: joint positions ``[T, 22, 3]`` (SMPL-22, 20 fps);
* ``texts/<id>.txt``: one caption per line, ``caption#tokens#from#to`` (``tokens`` are
  ``word/POS`` pairs, ``from`` / ``to`` in seconds; ``0.0#0.0`` means the whole clip);
* ``train.txt``, ``val.txt``, ``test.txt``: the ids of each split, one per line. Mirrored motions
  (``M<id>``) are ordinary ids in these lists and are converted like any other (``--no-mirrored``
  leaves them out).

Output: one pickle per split, a list of records ``{"video_name", "coordinates" (float32 [T, 66]),
"labels" (list[str]), "motion_type": None, "learner"}`` that passes
:func:`dataloaders.records.load_records`, plus ``summary.json`` (counts and skip reasons). Files are
written atomically; existing pickles are only replaced with ``--overwrite``.

``learner`` is the source motion's id: ``<id>`` for the records of ``<id>``, of its mirrored twin
``M<id>`` and of their sub-clips. A validation part carved from the training records with
``data.val_split.group_by: learner`` then holds out a motion together with its twin and its
sub-clips (grouped by name, a held-out motion's twin and sub-clips would stay in training), as
HumanML3D's own split files keep a motion and its twin in one split; and
``model.retrieval.exclude: learner`` keeps a clip from retrieving its twin's captions.

Captions and sub-clips follow HumanML3D's own data loader (``Text2MotionDatasetV2`` in the
text-to-motion code that accompanies the dataset):

* a time that is NaN counts as 0.0; a line with ``from == to == 0`` describes the whole clip, and
  all such lines become the ``labels`` of one record named ``<id>``;
* any other line describes frames ``[int(from * fps), int(to * fps))`` (truncation, as there; the
  slice stops at the motion's end). Lines with the same frame span are grouped into one record
  named ``<id>#<start>-<end>`` (frames, end exclusive). HumanML3D instead makes one sample per
  line under a random name; grouping keeps all references of a span together for scoring;
* length filter: HumanML3D keeps motions with ``40 <= T < 200`` frames (``24`` for KIT-ML) and
  applies it to the whole motion first (a motion that fails it loses its sub-clips too), then to
  each sub-clip. Here: ``--min-frames 40`` and ``--max-frames 199`` (both inclusive), the same
  rule; ``--keep-subclips-of-filtered`` keeps the sub-clips of a motion that fails it.

Nothing is dropped silently: every skipped id, sub-clip or caption line is counted by reason, and
the first few of each are named (``file:line`` for caption lines) in the printed summary and in
``summary.json``. Blank lines in split and caption files are ignored.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from core.io import atomic_write

from .records import validate_records
from .skeleton import NUM_JOINTS

__all__ = [
    "ConversionError", "Options", "SplitReport", "REASONS", "SPLITS", "convert", "convert_split",
    "parse_caption_line", "source_motion", "format_summary", "main",
]

SPLITS = ("train", "val", "test")
FPS = 20  # HumanML3D motions are resampled to 20 fps
MIN_FRAMES = 40  # HumanML3D: min_motion_len = 40 (24 for KIT-ML)
MAX_FRAMES = 199  # HumanML3D: motions with len >= 200 are dropped
MAX_EXAMPLES = 5  # examples kept per skip reason and split
SUMMARY_NAME = "summary.json"
ARCHIVE_SUFFIXES = (".zip", ".rar", ".tar.gz", ".tgz", ".tar")

# Skip reasons, in the order the summary lists them.
REASONS: dict[str, str] = {
    "duplicate_id": "id listed again in the split file (later copy skipped)",
    "mirrored_excluded": "mirrored M<id> left out (--no-mirrored)",
    "missing_npy": "no motion file <joints-dir>/<id>.npy",
    "missing_text": "no caption file <texts-dir>/<id>.txt",
    "unreadable_npy": "motion file is not a readable .npy array",
    "unreadable_text": "caption file is not readable UTF-8 text",
    "wrong_shape": "motion is not a numeric [T, 22, 3] (or [T, 66]) array",
    "nan_coordinates": "motion holds NaN or infinite values",
    "too_short": "clip or sub-clip shorter than --min-frames",
    "too_long": "clip or sub-clip longer than --max-frames",
    "bad_caption_line": "caption line is not caption#tokens#from#to with times >= 0 (line skipped)",
    "empty_caption": "caption text before the first '#' is empty (line skipped)",
    "empty_span": "sub-clip span is empty: from >= to, or it starts at or after the motion's end",
    "no_whole_clip_captions": "only sub-clip captions: no whole-clip record (its sub-clips kept)",
    "no_captions": "caption file holds no usable caption line",
}


class ConversionError(RuntimeError):
    """The input folder or the output cannot be used; the message names the path and the fix."""


class _Skip(Exception):
    """Internal: an id is skipped for ``reason`` (a key of REASONS); ``detail`` names the case."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class _BadLine(Exception):
    """Internal: a caption line cannot be used (``reason`` is a key of REASONS)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Options:
    """How to read the folder and which clips to keep (see ``--help``)."""

    fps: float = FPS
    min_frames: int = MIN_FRAMES
    max_frames: int = MAX_FRAMES  # 0: no upper limit
    joints_dir: str = "new_joints"
    texts_dir: str = "texts"
    limit: int | None = None  # first N ids of each split
    mirrored: bool = True
    keep_subclips_of_filtered: bool = False

    def check(self) -> None:
        if not self.fps > 0:
            raise ConversionError(f"--fps must be > 0, got {self.fps}")
        if self.min_frames < 2:
            raise ConversionError(f"--min-frames must be >= 2 (a record needs 2 frames), "
                                  f"got {self.min_frames}")
        if self.max_frames and self.max_frames < self.min_frames:
            raise ConversionError(f"--max-frames ({self.max_frames}) must be 0 (no limit) or >= "
                                  f"--min-frames ({self.min_frames})")
        if self.limit is not None and self.limit < 1:
            raise ConversionError(f"--limit must be >= 1, got {self.limit}")


@dataclass
class SplitReport:
    """Counts for one split: what was read, what became records, what was skipped and why."""

    split: str
    ids: int = 0
    clips: int = 0
    subclips: int = 0
    texts: int = 0
    subclip_lines_cut: int = 0  # sub-clip caption lines whose span ran past the motion's end
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.clips + self.subclips

    def skip(self, reason: str, example: str) -> None:
        assert reason in REASONS, reason
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    def to_dict(self) -> dict[str, Any]:
        order = list(REASONS)
        return {
            "ids": self.ids, "clips": self.clips, "subclips": self.subclips,
            "records": self.records, "texts": self.texts,
            "subclip_lines_cut": self.subclip_lines_cut,
            "skipped": {r: self.skipped[r] for r in order if self.skipped[r]},
            "examples": {r: self.examples[r] for r in order if r in self.examples},
        }


# ---------------------------------------------------------------------------------------------
# Reading the inputs.

def _missing_dir_hint(folder: Path) -> str:
    """Point at an archive beside a missing folder (the release ships texts.zip, new_joints.rar)."""
    for suffix in ARCHIVE_SUFFIXES:
        archive = folder.with_name(folder.name + suffix)
        if archive.is_file():
            return f"; found {archive.name} beside it: unpack it there first"
    return ""


def check_inputs(root: Path, splits: Sequence[str], options: Options) -> None:
    """Fail early, naming the path, when the root, a data folder or a split file is missing."""
    if not root.is_dir():
        raise ConversionError(f"{root}: HumanML3D root folder not found (expected a folder with "
                              f"{options.joints_dir}/, {options.texts_dir}/ and train.txt, "
                              f"val.txt, test.txt)")
    for name in (options.joints_dir, options.texts_dir):
        folder = root / name
        if not folder.is_dir():
            raise ConversionError(f"{folder}: folder not found in the HumanML3D root"
                                  f"{_missing_dir_hint(folder)}")
    for split in splits:
        path = root / f"{split}.txt"
        if not path.is_file():
            raise ConversionError(f"{path}: split file not found (expected one id per line; "
                                  f"choose the splits to convert with --splits)")


def check_outputs(out: Path, splits: Sequence[str], overwrite: bool) -> None:
    """Refuse to replace existing pickles unless asked to."""
    existing = [out / f"{s}.pkl" for s in splits if (out / f"{s}.pkl").exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise ConversionError(f"{names}: already exists; pass --overwrite to replace, or choose "
                              f"another --out")


def read_split_ids(path: Path) -> list[str]:
    """The ids listed in a split file (one per line; blank lines ignored)."""
    text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _short(exc: Exception, width: int = 100) -> str:
    text = str(exc)
    return text if len(text) <= width else text[:width - 3] + "..."


def load_motion(path: Path, label: str) -> np.ndarray:
    """Read ``<id>.npy`` -> float32 ``[T, 22, 3]`` (raises ``_Skip``)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _Skip("unreadable_npy", f"{label} ({type(exc).__name__}: {_short(exc)})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise _Skip("wrong_shape", f"{label} (dtype {getattr(array, 'dtype', type(array))})")
    if array.ndim == 2 and array.shape[1] == NUM_JOINTS * 3:
        array = array.reshape(array.shape[0], NUM_JOINTS, 3)  # (T, 66) -> (T, V, 3)
    if not (array.ndim == 3 and array.shape[1:] == (NUM_JOINTS, 3)):
        raise _Skip("wrong_shape", f"{label} (shape {tuple(array.shape)}, expected [T, 22, 3])")
    array = np.ascontiguousarray(array, dtype=np.float32)  # (T, V, 3)
    if not np.isfinite(array).all():
        frame = int(np.argwhere(~np.isfinite(array))[0, 0])
        raise _Skip("nan_coordinates", f"{label} (first at frame {frame})")
    return array


def _parse_time(text: str, what: str) -> float:
    """A start / end time in seconds; NaN counts as 0.0 (HumanML3D's convention)."""
    try:
        value = float(text)
    except ValueError:
        raise _BadLine("bad_caption_line", f"{what} time {text.strip()!r} is not a number") \
            from None
    if math.isnan(value):
        return 0.0
    if math.isinf(value) or value < 0:
        raise _BadLine("bad_caption_line", f"{what} time {text.strip()!r} is not a time >= 0")
    return value


def parse_caption_line(line: str, fps: float = FPS) -> tuple[str, tuple[int, int] | None]:
    """``caption#tokens#from#to`` -> ``(caption, None)`` for the whole clip, else
    ``(caption, (start, end))`` in frames: ``start = int(from * fps)``, ``end = int(to * fps)``.

    The caption is the stripped text before the first ``#``; the times are the last two fields.
    Raises ``_BadLine`` for a line with fewer than four fields, a time that is not a number >= 0,
    or an empty caption.
    """
    fields = line.strip().split("#")
    if len(fields) < 4:
        raise _BadLine("bad_caption_line", f"expected caption#tokens#from#to, found "
                                           f"{len(fields)} '#'-separated field(s)")
    start_s, end_s = _parse_time(fields[-2], "start"), _parse_time(fields[-1], "end")
    caption = fields[0].strip()
    if not caption:
        raise _BadLine("empty_caption", "empty caption text")
    if start_s == 0.0 and end_s == 0.0:
        return caption, None
    return caption, (int(start_s * fps), int(end_s * fps))


def read_captions(path: Path, rel: str, fps: float, n_frames: int, report: SplitReport
                  ) -> tuple[list[str], dict[tuple[int, int], list[str]]]:
    """Whole-clip captions and ``{(start, end): captions}`` of one text file, in file order.

    A sub-clip span is cut at the motion's end (``n_frames``), as slicing does in HumanML3D, so
    spans are grouped by the frames they really cover. Bad lines and empty spans are counted in
    ``report`` (as ``rel:line``) and skipped; raises ``_Skip`` when the file is not UTF-8 text.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Skip("unreadable_text", f"{rel} ({type(exc).__name__}: {_short(exc)})") from None
    whole: list[str] = []
    spans: dict[tuple[int, int], list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            caption, span = parse_caption_line(line, fps)
        except _BadLine as bad:
            report.skip(bad.reason, f"{rel}:{number}: {bad.detail}: {line.strip()[:80]!r}")
            continue
        if span is None:
            whole.append(caption)
            continue
        start, end = span
        cut = min(end, n_frames)
        if start >= cut:
            report.skip("empty_span", f"{rel}:{number}: frames [{start}, {end}) of a "
                                      f"{n_frames}-frame motion: {line.strip()[:80]!r}")
            continue
        if cut < end:
            report.subclip_lines_cut += 1
        spans.setdefault((start, cut), []).append(caption)
    return whole, spans


# ---------------------------------------------------------------------------------------------
# Turning one id into records.

def _length_problem(n_frames: int, options: Options) -> str | None:
    """``"too_short"`` / ``"too_long"`` / ``None`` under the length filter."""
    if n_frames < options.min_frames:
        return "too_short"
    if options.max_frames and n_frames > options.max_frames:
        return "too_long"
    return None


def source_motion(motion_id: str) -> str:
    """The motion an id was made from: ``M<id>`` (the mirrored twin) -> ``<id>``, else the id."""
    return motion_id[1:] if motion_id.startswith("M") and len(motion_id) > 1 else motion_id


def _record(name: str, motion_id: str, coordinates: np.ndarray, labels: list[str]
            ) -> dict[str, Any]:
    """A dataset record; ``coordinates`` (T, V, 3) -> an owned float32 copy (T, V*3)."""
    flat = np.array(coordinates.reshape(coordinates.shape[0], -1), dtype=np.float32)  # (T, V*3)
    return {"video_name": name, "coordinates": flat, "labels": list(labels),
            "motion_type": None, "learner": source_motion(motion_id)}


def _subclip_records(motion_id: str, motion: np.ndarray,
                     spans: dict[tuple[int, int], list[str]], options: Options,
                     report: SplitReport) -> list[dict[str, Any]]:
    """One record per distinct frame span ``[start, end)``, in order of span."""
    records = []
    for start, end in sorted(spans):
        name = f"{motion_id}#{start}-{end}"
        problem = _length_problem(end - start, options)
        if problem:
            report.skip(problem, f"{name} ({end - start} frames)")
            continue
        records.append(_record(name, motion_id, motion[start:end],  # (T', V, 3)
                               spans[(start, end)]))
    return records


def convert_id(root: Path, motion_id: str, options: Options,
               report: SplitReport) -> list[dict[str, Any]]:
    """Records of one HumanML3D id: the whole clip (if it has whole-clip captions) and its
    sub-clips. Raises ``_Skip`` when the id yields nothing because of its files."""
    rel_npy = f"{options.joints_dir}/{motion_id}.npy"
    rel_text = f"{options.texts_dir}/{motion_id}.txt"
    npy, text = root / rel_npy, root / rel_text
    if not npy.is_file():
        raise _Skip("missing_npy", f"{motion_id} ({rel_npy})")
    if not text.is_file():
        raise _Skip("missing_text", f"{motion_id} ({rel_text})")
    motion = load_motion(npy, f"{motion_id} ({rel_npy})")  # (T, V, 3)
    whole_problem = _length_problem(motion.shape[0], options)
    if whole_problem and not options.keep_subclips_of_filtered:
        raise _Skip(whole_problem, f"{motion_id} ({motion.shape[0]} frames)")
    whole, spans = read_captions(text, rel_text, options.fps, motion.shape[0], report)
    if not whole and not spans:
        raise _Skip("no_captions", f"{motion_id} ({rel_text})")
    records = []
    if whole_problem:
        report.skip(whole_problem, f"{motion_id} ({motion.shape[0]} frames)")
    elif whole:
        records.append(_record(motion_id, motion_id, motion, whole))
        report.clips += 1
    else:
        report.skip("no_whole_clip_captions", f"{motion_id} ({rel_text})")
    subclips = _subclip_records(motion_id, motion, spans, options, report)
    report.subclips += len(subclips)
    return records + subclips


def convert_split(root: str | Path, split: str, options: Options = Options()
                  ) -> tuple[list[dict[str, Any]], SplitReport]:
    """Records and report of one split (``root/<split>.txt``)."""
    root = Path(root)
    ids = read_split_ids(root / f"{split}.txt")
    if options.limit is not None:
        ids = ids[:options.limit]
    report = SplitReport(split, ids=len(ids))
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for motion_id in tqdm(ids, desc=f"HumanML3D {split}", unit="id", disable=None):
        if motion_id in seen:
            report.skip("duplicate_id", motion_id)
            continue
        seen.add(motion_id)
        if not options.mirrored and motion_id.startswith("M"):
            report.skip("mirrored_excluded", motion_id)
            continue
        try:
            records.extend(convert_id(root, motion_id, options, report))
        except _Skip as skip:
            report.skip(skip.reason, skip.detail)
    report.texts = sum(len(rec["labels"]) for rec in records)
    return records, report


# ---------------------------------------------------------------------------------------------
# Writing and reporting.

def _write_pickle(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda fh: pickle.dump(records, fh, protocol=4))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2) + "\n"), mode="w")


def convert(root: str | Path, out: str | Path, *, splits: Sequence[str] = SPLITS,
            options: Options = Options(), overwrite: bool = False) -> dict[str, Any]:
    """Convert ``splits`` of the HumanML3D folder ``root`` into ``out/<split>.pkl`` and
    ``out/summary.json``; returns the summary (see :func:`format_summary`).

    All splits are converted and validated before anything is written; a split that yields no
    record is a :class:`ConversionError` (nothing is written then).
    """
    root, out = Path(root), Path(out)
    options.check()
    check_inputs(root, splits, options)
    check_outputs(out, splits, overwrite)
    converted = {split: convert_split(root, split, options) for split in splits}
    summary = {"root": str(root), "out": str(out), "options": asdict(options),
               "splits": {split: report.to_dict() for split, (_, report) in converted.items()}}
    for split, (records, report) in converted.items():
        if not records:
            reasons = ", ".join(f"{r} {n}" for r, n in report.to_dict()["skipped"].items())
            raise ConversionError(f"{root / (split + '.txt')}: no records left from {report.ids} "
                                  f"id(s) (skipped: {reasons or 'none'}); nothing was written")
        validate_records(records, f"{split} records converted from {root}")
    for split, (records, _) in converted.items():
        _write_pickle(out / f"{split}.pkl", records)
    _write_json(out / SUMMARY_NAME, summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A table of counts per split, then each skip reason with its count and first examples."""
    opts = summary["options"]
    max_frames = opts["max_frames"] or "no limit"
    lines = [f"HumanML3D {summary['root']} -> {summary['out']} (fps {opts['fps']}, frames "
             f"{opts['min_frames']}..{max_frames})",
             f"{'split':<6} {'ids':>7} {'clips':>7} {'sub-clips':>9} {'records':>8} {'texts':>8}"]
    for split, s in summary["splits"].items():
        lines.append(f"{split:<6} {s['ids']:>7} {s['clips']:>7} {s['subclips']:>9} "
                     f"{s['records']:>8} {s['texts']:>8}")
    for split, s in summary["splits"].items():
        if s["subclip_lines_cut"]:
            lines.append(f"{split}: {s['subclip_lines_cut']} sub-clip caption line(s) ran past "
                         f"the motion's end; their spans were cut there (as HumanML3D slices)")
        if not s["skipped"]:
            lines.append(f"{split}: nothing skipped")
            continue
        lines.append(f"{split}: skipped")
        for reason, count in s["skipped"].items():
            lines.append(f"  {reason:<23} {count:>6}  {REASONS[reason]}")
            lines.extend(f"      e.g. {example}" for example in s["examples"].get(reason, []))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataloaders.humanml3d",
        description="Convert a HumanML3D folder (new_joints/, texts/, train.txt, val.txt, "
                    "test.txt) into the project's dataset pickles <out>/{train,val,test}.pkl "
                    "and <out>/summary.json.",
        epilog="Sub-clip captions (from/to not both 0) become records named <id>#<start>-<end> "
               "(frames at --fps, end exclusive). The defaults reproduce HumanML3D's own loader: "
               "40 <= T < 200 frames, applied to the whole motion first. Example: python -m "
               "dataloaders.humanml3d --root ../HumanML3D --out data/humanml3d")
    parser.add_argument("--root", required=True, type=Path,
                        help="HumanML3D folder holding new_joints/, texts/ and the split files")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder for <split>.pkl and summary.json "
                             "(configs/pretrain_humanml3d.yaml reads data/humanml3d)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="splits to convert (default: %(default)s)")
    parser.add_argument("--min-frames", type=int, default=MIN_FRAMES,
                        help="drop clips and sub-clips with fewer frames (default %(default)s, "
                             "HumanML3D's min_motion_len; KIT-ML uses 24)")
    parser.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                        help="drop clips and sub-clips with more frames; 0 = no limit (default "
                             "%(default)s: HumanML3D drops motions of 200 frames or more)")
    parser.add_argument("--keep-subclips-of-filtered", action="store_true",
                        help="keep the sub-clips of a motion that fails the length filter "
                             "(HumanML3D drops them with the motion)")
    parser.add_argument("--fps", type=float, default=FPS,
                        help="frame rate that turns caption times into frames (default "
                             "%(default)s, HumanML3D's rate)")
    parser.add_argument("--no-mirrored", dest="mirrored", action="store_false",
                        help="leave out the mirrored M<id> motions listed in the split files")
    parser.add_argument("--joints-dir", default="new_joints",
                        help="folder of [T, 22, 3] .npy files inside --root (default %(default)s)")
    parser.add_argument("--texts-dir", default="texts",
                        help="folder of caption .txt files inside --root (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="convert only the first N ids of each split (a quick try)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing <split>.pkl files in --out")
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    options = Options(fps=args.fps, min_frames=args.min_frames, max_frames=args.max_frames,
                      joints_dir=args.joints_dir, texts_dir=args.texts_dir, limit=args.limit,
                      mirrored=args.mirrored,
                      keep_subclips_of_filtered=args.keep_subclips_of_filtered)
    try:
        summary = convert(args.root, args.out, splits=args.splits, options=options,
                          overwrite=args.overwrite)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    written = ", ".join(f"{s}.pkl" for s in args.splits)
    print(f"wrote {written} and {SUMMARY_NAME} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
