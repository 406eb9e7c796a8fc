"""Read and validate dataset pickles (the released BX / FS / HumanML3D format and synthetic data).

A dataset file is a pickle of a list of dicts (see docs/design.md, "Data format"). :func:`load_records` reads it
with the restricted unpickler, validates every record and returns them normalised:

* ``video_name``: ``str`` (unique in the file)
* ``coordinates``: ``np.ndarray`` float32 ``[T, 22, 3]`` (from ``[T, 66]`` or ``[T, 22, 3]``, torch
  tensor or ndarray), ``T >= 2``, all finite
* ``labels``: ``list[str]`` (non-empty strings; ``[]`` only with ``need_labels=False``)
* ``augmented_labels``: ``list[str]`` (``[]`` when absent)
* ``motion_type``: ``str`` or ``None``
* segment fields ``{gt,aligned,error}_{start_frame,end_frame,std_start_frame,std_end_frame,seq_len}``
  as ``int``; a value of ``-1`` (the public pre-processing's "not annotated") becomes ``None``
* every other key kept as is.

Segment conventions (checked against the released BX data): ``start_frame`` / ``end_frame`` index
the learner's clip, ``std_start_frame`` / ``std_end_frame`` the standard, ``end`` is exclusive, so
``0 <= start < end <= T``. ``seq_len`` belongs to the learner's side: it is only checked to be a
positive int (DTW-based pre-processing stores the warping-path length there, which may exceed
``end - start``). :func:`segment_span` says where a missing end falls.

Errors are :class:`DataError` and name the file, the record (index and ``video_name``), the key,
what was expected and what was found. With ``on_bad="skip"`` bad records are dropped and one
warning gives their count and the first few reasons.
"""
from __future__ import annotations

import logging
import numbers
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from configs.schema import ON_BAD, SEGMENTS

from .safe_pickle import safe_load
from .skeleton import NUM_JOINTS

__all__ = [
    "DataError", "Record", "SEGMENTS", "SEGMENT_FIELDS", "ON_BAD", "load_records",
    "load_standards", "validate_records", "validate_record", "segment_key", "segment_span",
    "DataFileNotFound", "read_pickle",
]

log = logging.getLogger(__name__)

SEGMENT_FIELDS = ("start_frame", "end_frame", "std_start_frame", "std_end_frame", "seq_len")
MAX_REASONS_IN_WARNING = 5

Record = dict  # a normalised record (plain dict, see the module docstring)


class DataError(ValueError):
    """A dataset file or record is unusable; the message says where and why."""


class DataFileNotFound(DataError, FileNotFoundError):
    """The dataset file does not exist (also a ``FileNotFoundError``)."""


def segment_key(segment: str, field: str) -> str:
    """``segment_key("aligned", "std_start_frame") -> "aligned_std_start_frame"``."""
    return f"{segment}_{field}"


def segment_span(rec: Mapping[str, Any], segment: str, n_frames: int, *, standard: bool
                 ) -> tuple[int | None, int | None]:
    """``(start, end)`` of one side of ``segment`` (the learner's clip, or with ``standard=True``
    the standard), whose clip has ``n_frames`` frames; ``None`` for what the record lacks.

    A missing end falls back on what the same side owns: the learner's on ``start + <seg>_seq_len``
    (the learner segment's length), the standard's on the standard's last frame (``n_frames``).
    ``seq_len`` never bounds the standard, whose segment may be longer or shorter than the
    learner's (DTW) and is resampled to the learner's length by the dataset.
    """
    prefix = "std_" if standard else ""
    start = rec.get(segment_key(segment, prefix + "start_frame"))
    end = rec.get(segment_key(segment, prefix + "end_frame"))
    if end is None and start is not None:
        length = n_frames - start if standard else rec.get(segment_key(segment, "seq_len"))
        end = None if length is None else start + length
    return start, end


_SEGMENT_KEYS = tuple(segment_key(s, f) for s in SEGMENTS for f in SEGMENT_FIELDS)


# ---------------------------------------------------------------------------------------------
# Small helpers that describe values in error messages.

def _describe(value: Any) -> str:
    """A short description of ``value`` for an error message."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class _RecordError(Exception):
    """Internal: one problem with one record (key, expected, found)."""

    def __init__(self, key: str, expected: str, found: str) -> None:
        super().__init__(key)
        self.key, self.expected, self.found = key, expected, found


def _where(source: str, index: int, video_name: Any) -> str:
    name = video_name if isinstance(video_name, str) else "?"
    return f"{source}: record {index} (video_name={name!r})"


def _format(source: str, index: int, video_name: Any, err: _RecordError) -> str:
    return (f"{_where(source, index, video_name)}: key {err.key!r}: expected {err.expected}, "
            f"found {err.found}")


# ---------------------------------------------------------------------------------------------
# Field validators: each returns the normalised value or raises _RecordError.

def _as_coordinates(value: Any, key: str = "coordinates") -> np.ndarray:
    """Coordinates -> float32 ``[T, 22, 3]``; ``T >= 2``, finite."""
    expected = "a float tensor/array [T, 66] or [T, 22, 3] with T >= 2 and finite values"
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        array = tensor.numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise _RecordError(key, expected, _describe(value))
    if array.dtype.kind not in "fiu":
        raise _RecordError(key, expected, _describe(value))
    if array.ndim == 2 and array.shape[1] == NUM_JOINTS * 3:
        array = array.reshape(array.shape[0], NUM_JOINTS, 3)  # (T, 66) -> (T, V, 3)
    elif not (array.ndim == 3 and array.shape[1:] == (NUM_JOINTS, 3)):
        raise _RecordError(key, expected, _describe(value))
    if array.shape[0] < 2:
        raise _RecordError(key, expected, f"{array.shape[0]} frame(s)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is caught just below
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise _RecordError(key, expected, f"a non-finite value at frame {bad[0]}, joint {bad[1]}")
    return array


def _as_texts(value: Any, key: str, *, allow_empty: bool) -> list[str]:
    """A non-empty string or a list of non-empty strings -> ``list[str]``."""
    expected = "a non-empty string or a list of non-empty strings"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _RecordError(key, expected, _describe(value))
    if not value and not allow_empty:
        raise _RecordError(key, expected, "an empty list")
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise _RecordError(f"{key}[{i}]", "a non-empty string", _describe(text))
    return list(value)


def _as_frame_int(value: Any, key: str) -> int | None:
    """A segment field -> int (``-1`` -> ``None``: not annotated)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _RecordError(key, "an int", _describe(value))
    value = int(value)
    if value == -1:
        return None
    if value < 0:
        raise _RecordError(key, "a frame index >= 0 (or -1: not annotated)", str(value))
    return value


def _check_span(rec: Mapping, seg: str, start_field: str, end_field: str, length: int | None,
                what: str) -> None:
    """``0 <= start < end <= length`` for one (start, end) pair of a segment, where present."""
    start_key, end_key = segment_key(seg, start_field), segment_key(seg, end_field)
    start, end = rec.get(start_key), rec.get(end_key)
    if length is not None:
        if start is not None and start >= length:
            raise _RecordError(start_key, f"a frame inside the {what} (< {length})", str(start))
        if end is not None and end > length:
            raise _RecordError(end_key, f"an exclusive end inside the {what} (<= {length})",
                               str(end))
    if start is not None and end is not None and not start < end:
        raise _RecordError(end_key, f"an end frame > {start_key} ({start})", str(end))


def _check_segments(rec: dict, n_frames: int, std_frames: int | None) -> None:
    """Normalise segment fields to ints and check they lie inside the clip and the standard."""
    for key in _SEGMENT_KEYS:
        if key in rec and rec[key] is not None:
            rec[key] = _as_frame_int(rec[key], key)
    for seg in SEGMENTS:
        _check_span(rec, seg, "start_frame", "end_frame", n_frames, "clip")
        _check_span(rec, seg, "std_start_frame", "std_end_frame", std_frames, "standard")
        seq_key = segment_key(seg, "seq_len")
        if rec.get(seq_key) == 0:
            raise _RecordError(seq_key, "a positive segment length", "0")


def validate_record(raw: Any, *, need_labels: bool = True,
                    standards: Mapping[str, np.ndarray] | None = None) -> Record:
    """Validate one raw record and return it normalised (raises ``_RecordError``)."""
    if not isinstance(raw, dict):
        raise _RecordError("<record>", "a dict", _describe(raw))
    rec = dict(raw)
    name = rec.get("video_name")
    if not isinstance(name, str) or not name:
        raise _RecordError("video_name", "a non-empty string", _describe(name))
    if "coordinates" not in rec:
        raise _RecordError("coordinates", "present", "no such key")
    rec["coordinates"] = _as_coordinates(rec["coordinates"])
    labels = rec.get("labels")
    if labels is None or (not need_labels and isinstance(labels, (list, tuple)) and not labels):
        if need_labels:
            raise _RecordError("labels", "a non-empty string or a list of non-empty strings",
                               "no such key" if "labels" not in rec else "None")
        rec["labels"] = []
    else:
        rec["labels"] = _as_texts(labels, "labels", allow_empty=False)
    augmented = rec.get("augmented_labels")
    rec["augmented_labels"] = ([] if augmented is None
                               else _as_texts(augmented, "augmented_labels", allow_empty=True))
    motion_type = rec.get("motion_type")
    if motion_type is not None and (not isinstance(motion_type, str) or not motion_type):
        raise _RecordError("motion_type", "a non-empty string", _describe(motion_type))
    rec["motion_type"] = motion_type
    std_frames = None
    if standards is not None:
        if motion_type not in standards:
            known = ", ".join(sorted(standards)) or "none"
            raise _RecordError("motion_type", f"a motion type with a standard ({known})",
                               _describe(motion_type))
        std_frames = int(standards[motion_type].shape[0])
    _check_segments(rec, rec["coordinates"].shape[0], std_frames)
    return rec


def validate_records(raw: Any, source: str, *, need_labels: bool = True,
                     standards: Mapping[str, np.ndarray] | None = None,
                     on_bad: str = "strict") -> list[Record]:
    """Validate a whole unpickled dataset (see :func:`load_records`)."""
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a list of record dicts at the top level, "
                        f"found {_describe(raw)}")
    if not raw:
        raise DataError(f"{source}: the dataset is empty (a list with no records)")
    records: list[Record] = []
    seen: dict[str, int] = {}
    reasons: list[str] = []
    for index, item in enumerate(raw):
        name = item.get("video_name") if isinstance(item, dict) else None
        try:
            rec = validate_record(item, need_labels=need_labels, standards=standards)
            if rec["video_name"] in seen:
                raise _RecordError("video_name", "a unique name",
                                   f"a duplicate of record {seen[rec['video_name']]}")
        except _RecordError as err:
            message = _format(source, index, name, err)
            if on_bad == "strict":
                raise DataError(message) from None
            reasons.append(message)
            continue
        seen[rec["video_name"]] = index
        records.append(rec)
    if reasons:
        shown = "; ".join(reasons[:MAX_REASONS_IN_WARNING])
        more = len(reasons) - MAX_REASONS_IN_WARNING
        log.warning("%s: skipped %d of %d records as invalid: %s%s", source, len(reasons),
                    len(raw), shown, f"; and {more} more" if more > 0 else "")
    if not records:
        raise DataError(f"{source}: no valid records left ({len(reasons)} of {len(raw)} skipped; "
                        f"first reason: {reasons[0] if reasons else 'none'})")
    return records


# ---------------------------------------------------------------------------------------------
# Files.

def read_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with the restricted unpickler; a missing or unreadable file is a
    DataError naming it (a refused global is :class:`~dataloaders.safe_pickle.UnsafePickleError`)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFound(f"{path}: dataset file not found")
    if path.suffix.lower() == ".json":
        raise DataError(f"{path}: a JSON file carries no coordinates, so it is not a dataset; "
                        f"use the pickle (.pkl) with the same records")
    try:
        return safe_load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable dataset pickle ({type(exc).__name__}: {exc})") \
            from exc


def load_records(path: str | os.PathLike, *, need_labels: bool = True,
                 standards: Mapping[str, np.ndarray] | None = None,
                 on_bad: str = "strict") -> list[Record]:
    """Read a dataset pickle and return its validated, normalised records.

    Args:
        path: the pickle (list of record dicts).
        need_labels: ``False`` for inference-only data (labels may then be missing).
        standards: ``{motion_type: [T, 22, 3]}`` (from :func:`load_standards`); when given, every
            record's ``motion_type`` must have a standard and its ``*_std_*`` frames must lie
            inside that standard.
        on_bad: ``"strict"`` raises on the first bad record; ``"skip"`` drops bad records with
            one counted warning.
    """
    return validate_records(read_pickle(path), str(path), need_labels=need_labels,
                            standards=standards, on_bad=on_bad)


def load_standards(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a standard file: ``{video_name (= motion type): float32 [T, 22, 3]}``."""
    records = validate_records(read_pickle(path), str(path), need_labels=False)
    return {rec["video_name"]: rec["coordinates"] for rec in records}
