"""What a trained model is given: motion files, dataset pickles and HybrIK results read into
validated records, each paired with its standard, and turned into the features training computed.

* :func:`read_motion`: a ``.npy`` of ``[T, 22, 3]`` or ``[T, 66]`` (a HumanML3D ``new_joints``
  file is ``[T, 22, 3]``) -> float32 ``[T, 22, 3]``, with errors that name the file.
* :func:`records_from_inputs`: ``.npy`` files, dataset pickles and HybrIK results (``res.pk``,
  or any pickle holding a dict: :mod:`dataloaders.hybrik`), all read with the restricted
  unpickler of :mod:`dataloaders.records` -> validated records, optionally only some
  ``video_name`` s.
* :func:`run_data_files` / :func:`data_frame`: a run's test and standard pickles, and the axes
  and units (:data:`dataloaders.hybrik.FRAMES`) its clips are in, so that a HybrIK result is
  converted to what the model was trained on.
* :func:`read_standards` / :func:`pair_with_standards`: the standard of each clip, for a model
  with the reference branch (``model.reference == "subtract"``).
* :func:`build_dataset` / :func:`iter_batches`: records -> batches through
  :class:`dataloaders.dataset.MotionTextDataset` (``train=False``, the run's body frame
  ``data.frame``, ``data.normalise`` and segment) and :class:`dataloaders.collate.Collator`, i.e. exactly the features the model
  saw in training and evaluation. A clip shorter than the encoder's temporal kernel is refused,
  as training refuses it.

Problems with the inputs are :class:`dataloaders.records.DataError` (file, record, what was
expected, what was found); option conflicts are :class:`UsageError`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from dataloaders import hybrik
from dataloaders.records import DataError, DataFileNotFound, read_pickle, segment_span, validate_records
from dataloaders.skeleton import NUM_JOINTS

log = logging.getLogger("motion2text.inference")

MOTION_SUFFIXES = (".npy",)
DATASET_SUFFIXES = (".pkl", ".pickle")  # a dataset, or a HybrIK result when the pickle holds a dict
HYBRIK_SUFFIXES = (".pk",)  # HybrIK's demos write res.pk
MOTION_EXPECTED = f"a numeric array [T, {NUM_JOINTS}, 3] or [T, {NUM_JOINTS * 3}] with T >= 2 and finite values"


class UsageError(ValueError):
    """Options that do not fit together (e.g. several return sequences from greedy decoding)."""


# ============================================================================ reading ========
def read_motion(path: str | Path) -> np.ndarray:
    """A motion ``.npy`` -> float32 ``[T, 22, 3]``; a :class:`DataError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFound(f"{path}: motion file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy motion file (expected {MOTION_EXPECTED}; "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise DataError(f"{path}: expected {MOTION_EXPECTED}, found {type(array).__name__} "
                        f"of dtype {getattr(array, 'dtype', '?')}")
    if array.ndim == 2 and array.shape[1] == NUM_JOINTS * 3:
        array = array.reshape(array.shape[0], NUM_JOINTS, 3)  # (T, 66) -> (T, V, 3)
    if not (array.ndim == 3 and array.shape[1:] == (NUM_JOINTS, 3)):
        raise DataError(f"{path}: expected {MOTION_EXPECTED}, found shape {tuple(array.shape)}")
    if array.shape[0] < 2:
        raise DataError(f"{path}: expected {MOTION_EXPECTED}, found {array.shape[0]} frame(s)")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        frame, joint, _ = np.argwhere(~np.isfinite(array))[0]
        raise DataError(f"{path}: expected {MOTION_EXPECTED}, found a non-finite value at frame "
                        f"{frame}, joint {joint}")
    return array


def _unique_name(path: Path, taken: set[str]) -> str:
    """The file's stem, or its path when another input already has that stem."""
    return path.stem if path.stem not in taken else str(path)


def _records_of_pickle(path: Path, video_names: Sequence[str] | None, taken: set[str],
                       hybrik_frame: str | Callable[[], str]) -> list[dict]:
    """A dataset pickle's records (only ``video_names`` when given), or a HybrIK result's clip."""
    raw = read_pickle(path)
    if hybrik.is_hybrik_result(raw) or path.suffix.lower() in HYBRIK_SUFFIXES:
        frame = hybrik_frame() if callable(hybrik_frame) else hybrik_frame
        name = hybrik.clip_name(path)
        return [hybrik.record_of_result(raw, path, frame, video_name=name if name not in taken else str(path))]
    records = validate_records(raw, str(path), need_labels=False)
    if not video_names:
        return records
    wanted = set(video_names)
    return [rec for rec in records if rec["video_name"] in wanted]


def records_from_inputs(paths: Sequence[str | Path], video_names: Sequence[str] | None = None,
                        hybrik_frame: str | Callable[[], str] = "project") -> list[dict]:
    """Validated records (``need_labels=False``) of motion ``.npy`` files, dataset pickles and
    HybrIK results.

    A ``.npy`` becomes one record named after the file's stem (``labels`` empty). A pickle gives
    all its records, or with ``video_names`` only those; a name found in no pickle is an error.
    A HybrIK result (a ``.pk``, or a pickle holding a dict) becomes one record named after its
    folder (:func:`dataloaders.hybrik.clip_name`), converted to ``hybrik_frame`` (a name of
    :data:`dataloaders.hybrik.FRAMES`, or a function called once when a HybrIK input is met).
    """
    if not paths:
        raise UsageError("no input files given")
    records: list[dict] = []
    taken: set[str] = set()
    for raw in paths:
        path = Path(raw)
        suffix = path.suffix.lower()
        if suffix in MOTION_SUFFIXES:
            name = _unique_name(path, taken)
            found = validate_records([{"video_name": name, "coordinates": read_motion(path), "labels": []}],
                                     str(path), need_labels=False)
        elif suffix in DATASET_SUFFIXES + HYBRIK_SUFFIXES:
            found = _records_of_pickle(path, video_names, taken, hybrik_frame)
        else:
            raise DataError(f"{path}: unsupported input; expected a motion .npy ([T, 22, 3] or "
                            f"[T, 66]), a dataset pickle (.pkl) or a HybrIK result (res.pk)")
        for rec in found:
            if rec["video_name"] in taken:
                raise DataError(f"{path}: video_name {rec['video_name']!r} was already read from "
                                f"another input; video names must be unique")
            taken.add(rec["video_name"])
        records.extend(found)
    if video_names:
        pickles = [str(p) for p in paths if Path(p).suffix.lower() in DATASET_SUFFIXES]
        missing = [v for v in video_names if v not in taken]
        if not pickles:
            raise UsageError("--video_name selects clips of a dataset pickle, but no .pkl input was given")
        if missing:
            raise DataError(f"{', '.join(pickles)}: no clip with video_name {', '.join(map(repr, missing))}")
    return records


# ============================================================================ a run's data ===
def run_data_files(cfg: Any, ckpt_path: str | Path | None = None) -> tuple[Path | None, Path | None]:
    """(test pickle, standard pickle) of the run a checkpoint belongs to, each None when absent.

    Synthetic runs keep their data in ``<run>/data/`` (the run folder is the checkpoint's
    ``checkpoints/`` folder's parent, or ``ckpt_path`` itself when it is a folder); pickle runs
    name theirs in ``data.root``.
    """
    from dataloaders.build import data_files

    if cfg.data.kind == "synthetic" and ckpt_path is None:
        return None, None
    path = Path(ckpt_path).resolve() if ckpt_path is not None else Path(".")
    run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    _, _, test, standard = data_files(cfg, run_dir, main=False, barrier=lambda: None)
    return (test if test.is_file() else None), (standard if standard and standard.is_file() else None)


def data_frame(cfg: Any, ckpt_path: str | Path | None = None) -> str:
    """The axes and units (:data:`dataloaders.hybrik.FRAMES`) a HybrIK result is read in for a
    run: the project's frame for a run in the canonical body frame (``data.frame``; the dataset
    then puts it in that frame) or on synthetic data; for a run on the clips as stored, its
    standards' (else its test clips') frame (BX and FS are in HybrIK's). ``"project"``, with a
    note, when none can be read."""
    if cfg.data.frame == "canonical" or cfg.data.kind == "synthetic":
        return "project"
    test, standard = run_data_files(cfg, ckpt_path)
    for path in (standard, test):
        if path is not None:
            first = validate_records(read_pickle(path), str(path), need_labels=False)[0]
            return hybrik.frame_of(first["coordinates"])
    log.warning("the run's data (data.root %r) cannot be found: HybrIK results are converted to the "
                "project's frame (metres, y up); give --hybrik_frame if the run was trained on "
                "HybrIK's (as BX and FS are)", cfg.data.root)
    return "project"


# ============================================================================ standards ======
def read_standards(path: str | Path, motion_type: str | None = None,
                   hybrik_frame: str | Callable[[], str] = "project") -> dict[str, np.ndarray]:
    """``{name: [T, 22, 3]}`` from a standard pickle (only ``motion_type`` when given), a ``.npy``
    or a HybrIK result (converted to ``hybrik_frame``, as in :func:`records_from_inputs`).

    A ``.npy`` or HybrIK standard is named ``motion_type`` when given, else after its file.
    """
    path = Path(path)
    if path.suffix.lower() in MOTION_SUFFIXES:
        return {motion_type or path.stem: read_motion(path)}
    if path.suffix.lower() not in DATASET_SUFFIXES + HYBRIK_SUFFIXES:
        raise DataError(f"{path}: unsupported standard; expected a standard pickle (.pkl), a "
                        f"motion .npy ([T, 22, 3] or [T, 66]) or a HybrIK result (res.pk)")
    raw = read_pickle(path)
    if hybrik.is_hybrik_result(raw) or path.suffix.lower() in HYBRIK_SUFFIXES:
        frame = hybrik_frame() if callable(hybrik_frame) else hybrik_frame
        return {motion_type or hybrik.clip_name(path): hybrik.record_of_result(raw, path, frame)["coordinates"]}
    standards = {rec["video_name"]: rec["coordinates"]
                 for rec in validate_records(raw, str(path), need_labels=False)}
    if motion_type is None:
        return standards
    if motion_type not in standards:
        raise DataError(f"{path}: no standard named {motion_type!r} (--motion_type); the file "
                        f"holds {', '.join(sorted(standards))}")
    return {motion_type: standards[motion_type]}


def standard_for_every_clip(path: str | Path, motion_type: str | None) -> str | None:
    """The standard that serves every clip: ``motion_type`` when given, a ``.npy``'s or a HybrIK
    ``.pk``'s own name, else None (each clip's ``motion_type`` picks its standard of the pickle)."""
    if motion_type is not None:
        return motion_type
    suffix = Path(path).suffix.lower()
    if suffix in MOTION_SUFFIXES:
        return Path(path).stem
    return hybrik.clip_name(path) if suffix in HYBRIK_SUFFIXES else None


def pair_with_standards(records: Sequence[dict], standards: Mapping[str, np.ndarray],
                        every_clip: str | None = None) -> list[dict]:
    """Copies of ``records`` whose ``motion_type`` names their standard in ``standards``.

    ``every_clip`` (see :func:`standard_for_every_clip`) gives every clip that standard; otherwise
    each clip's own ``motion_type`` picks its standard, and a clip without a match is an error.
    """
    if every_clip is not None:
        if every_clip not in standards:
            raise UsageError(f"no standard named {every_clip!r}; have {', '.join(sorted(standards))}")
        return [{**rec, "motion_type": every_clip} for rec in records]
    paired = []
    for rec in records:
        if rec.get("motion_type") not in standards:
            raise DataError(f"clip {rec['video_name']!r}: motion_type {rec.get('motion_type')!r} "
                            f"has no standard in the --standard file (it holds "
                            f"{', '.join(sorted(standards))}); pick one with --motion_type")
        paired.append(dict(rec))
    return paired


def uses_standards(model: Any, standards: Mapping[str, np.ndarray] | None) -> bool:
    """Whether the model's reference branch gets real standards (else the first-frame stand-in)."""
    return model.reference == "subtract" and bool(standards)


# ============================================================================ features =======
def _has_segment(rec: Mapping[str, Any], segment: str,
                 standards: Mapping[str, np.ndarray] | None) -> bool:
    """Whether the record's fields give the learner's segment and, with standards, the standard's."""
    sides = [segment_span(rec, segment, len(rec["coordinates"]), standard=False)]
    if standards is not None:
        std = standards.get(rec.get("motion_type"))
        sides.append((None, None) if std is None else segment_span(rec, segment, len(std), standard=True))
    return all(None not in side for side in sides)


def choose_segment(requested: str, cfg: Any, records: Sequence[Mapping[str, Any]],
                   standards: Mapping[str, np.ndarray] | None) -> str:
    """The segment to crop: ``auto`` is the run's ``data.segment`` when every clip has its fields
    (and, with ``standards``, its standard's), else the whole clip (``none``, with a note); an
    explicit choice is used as given."""
    if requested != "auto":
        return requested
    segment = cfg.data.segment
    if segment == "none":
        return "none"
    complete = all(_has_segment(r, segment, standards) for r in records)
    if not complete:
        log.warning("the run was trained on the %r segment, but not every input has %s_* fields: "
                    "captioning whole clips (segment none)", segment, segment)
        return "none"
    return segment


def build_dataset(model: Any, cfg: Any, records: Sequence[dict],
                  standards: Mapping[str, np.ndarray] | None, segment: str = "auto",
                  source: str = "<inputs>") -> Any:
    """The evaluation dataset of these records, built as training builds its test set: a clip
    shorter than the encoder's temporal kernel is a :class:`DataError` naming ``source``, the
    clip and its length."""
    from dataloaders import body_frame
    from dataloaders.dataset import MotionTextDataset

    records = body_frame.convert_records(records, cfg.data.frame, source, per_clip=True)  # inputs of several files
    standards = body_frame.convert_standards(standards, cfg.data.frame, "the standards", per_clip=True)
    with_std = uses_standards(model, standards)
    segment = choose_segment(segment, cfg, records, standards if with_std else None)
    dataset = MotionTextDataset(records, standards if with_std else None, segment=segment,
                                normalise=cfg.data.normalise, reference=with_std, train=False,
                                seed=cfg.seed, source=source,
                                min_frames=cfg.model.encoder.temporal_kernel, on_bad="strict")
    retriever = getattr(model, "retriever", None)
    if retriever is not None:  # the run's retrieval, over its training clips (stored in the checkpoint)
        from dataloaders.build import retrieval_fields

        fields = retrieval_fields(cfg, retriever, records)
        if "pool" not in fields:  # caption.py --rerank on a run that did not rerank in training
            names = [str(rec["video_name"]) for rec in records]
            fields["pool"] = dict(zip(names, retriever.texts(records, cfg.eval.rerank_k, cfg.model.retrieval.exclude)))
        for name, texts in fields.items():
            dataset.set_retrieved(texts, name)
    return dataset


def collator_for(model: Any, cfg: Any) -> Any:
    """The collate function of inference: no labels; the retrieved texts' tokens when the
    model reads them."""
    from dataloaders.collate import Collator

    r = cfg.model.retrieval
    if getattr(model, "retriever", None) is None or not r.k:
        return Collator(tokenizer=None)
    return Collator(model.tokenizer, max_target_len=cfg.data.max_target_len, retrieved_texts=r.texts,
                    retrieved_max_tokens=r.max_tokens)


def iter_batches(dataset: Any, batch_size: int, device: torch.device | str = "cpu", collate: Any = None
                 ) -> Iterator[dict[str, Any]]:
    """Collated batches in dataset order, tensors on ``device`` (by default without labels)."""
    from dataloaders.collate import Collator

    collate = collate or Collator(tokenizer=None)
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
