"""``MotionTextDataset``: validated records -> (features, standard, text) samples.

Everything is computed once at construction (segment crops, joint+bone features, the standard's
segment resampled to the learner's length); ``__getitem__`` only looks things up.

Segments (``segment=``):

* ``"none"``: the whole clip; with ``reference=True`` the whole standard.
* ``"gt" | "aligned" | "error"``: the learner's frames ``[<seg>_start_frame, <seg>_end_frame)``
  and the standard's frames ``[<seg>_std_start_frame, <seg>_std_end_frame)`` (end exclusive, as in
  the released BX data). A missing end falls back on what its own side has
  (:func:`dataloaders.records.segment_span`): the learner's on ``start + <seg>_seq_len``, the
  standard's on the standard's last frame. A record without a start field, or without both the
  learner's end and ``seq_len``, is a :class:`DataError`.

Reference (``reference=True``): each item carries the standard's segment features, linearly
resampled over time to the learner segment's length, so both share ``T`` and the frame mask.
When no standards are given (pretraining on HumanML3D-style data, which has no standard),
``standard`` is ``None``; the captioner then lets the learner's first frame repeated stand in.

Texts: ``labels="all"`` gives one sample per (clip, text); ``"random"`` one sample per clip whose
text is drawn per epoch from ``(seed, epoch)`` (call :meth:`set_epoch`). ``augmented_labels=True``
adds the clip's paraphrases to its training texts. ``train=False`` gives one sample per clip with
the first label as text (and ``""`` for unlabelled, inference-only clips). ``references`` are
always all of a clip's ``labels`` (no paraphrases).

Speed (``speed=s``, training only): each sample, each epoch, is played at a speed drawn from
``[1 - s, 1 + s]`` (from ``(seed, epoch)``): its frames linearly resampled, texts kept.

"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from configs.schema import LABEL_MODES, NORMALISATIONS, ON_BAD, SEGMENT_CHOICES

from .features import compute_features, resample_time
from .records import DataError, segment_key, segment_span

__all__ = ["MotionTextDataset", "SEGMENT_CHOICES", "LABEL_MODES"]



@dataclass(frozen=True)
class _Clip:
    video_name: str
    features: torch.Tensor  # (C, T, V)
    standard: torch.Tensor | None  # (C, T, V), same T
    references: list[str]
    targets: list[str]
    motion_type: str | None


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


class MotionTextDataset(Dataset):
    """Samples of skeleton features and target texts (see the module docstring).

    Args:
        records: normalised records (from :func:`dataloaders.records.load_records`).
        standards: ``{motion_type: [T, 22, 3]}`` or ``None``.
        segment: ``none | gt | aligned | error``.
        labels: ``all | random``.
        augmented_labels: add ``augmented_labels`` to the training texts.
        normalise: ``none | root_first_frame`` (per segment: the root at the segment's first frame).
        reference: carry the standard's segment features (``None`` without standards).
        train: ``False`` gives one sample per clip with its first label as text.
        seed: seeds ``labels="random"``.
        source: a name for the records in error messages (e.g. the file they came from).
        min_frames: the fewest frames a (cropped) clip may have; the trainer passes the encoder's
            temporal kernel, since a shorter clip is mostly convolution padding.
        on_bad: ``strict`` raises :class:`DataError` on a clip shorter than ``min_frames``;
            ``skip`` drops it with a warning (as ``data.on_bad`` does for invalid records).
        speed: training samples are played at a speed drawn from ``[1 - speed, 1 + speed]``.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]],
                 standards: Mapping[str, np.ndarray] | None = None, *, segment: str = "none",
                 labels: str = "all", augmented_labels: bool = False,
                 normalise: str = "root_first_frame", reference: bool = False,
                 train: bool = True, seed: int = 0, source: str = "<records>",
                 min_frames: int = 1, on_bad: str = "strict", mirror: float = 0.0, rotate: float = 0.0,
                 speed: float = 0.0) -> None:
        _check_choice("segment", segment, SEGMENT_CHOICES)
        _check_choice("labels", labels, LABEL_MODES)
        _check_choice("normalise", normalise, NORMALISATIONS)
        _check_choice("on_bad", on_bad, ON_BAD)
        if not records:
            raise DataError(f"{source}: no records to build a dataset from")
        self.segment, self.label_mode = segment, labels
        self.normalise, self.train, self.seed = normalise, train, seed
        self.use_augmented = augmented_labels
        if not 0.0 <= mirror <= 1.0:
            raise ValueError(f"mirror: expected a probability in [0, 1], found {mirror!r}")
        self.mirror = float(mirror) if train else 0.0  # share of samples mirrored each epoch (augment.py)
        if not 0.0 <= rotate <= 180.0:
            raise ValueError(f"rotate: expected degrees in [0, 180], found {rotate!r}")
        self.rotate = float(rotate) if train else 0.0  # samples turned by up to this many degrees (augment.py)
        if not 0.0 <= speed < 1.0:
            raise ValueError(f"speed: expected a number in [0, 1), found {speed!r}")
        self.speed = float(speed) if train else 0.0  # samples played at a speed in [1 - speed, 1 + speed]
        self.source = source
        use_standard = reference and bool(standards)
        self._std_cache: dict[tuple[str, int, int], np.ndarray] = {}
        self.min_frames, self.on_bad = int(min_frames), on_bad
        built = [self._build_clip(i, rec, standards if use_standard else None)
                 for i, rec in enumerate(records)]
        self._clips = [clip for clip in built if clip is not None]
        if not self._clips:
            raise DataError(f"{source}: every clip is shorter than min_frames={self.min_frames}")
        names = [clip.video_name for clip in self._clips]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{source}: video_name {dup!r} appears more than once")
        self._items = self._build_items()
        self.retrieved: dict[str, dict[str, list[str]]] = {}  # field -> video_name -> texts (set_retrieved)
        self._choice = np.zeros(len(self._clips), dtype=np.int64)
        self.set_epoch(0)

    # ---- construction ----------------------------------------------------------------------
    def _where(self, index: int, rec: Mapping[str, Any]) -> str:
        return f"{self.source}: record {index} (video_name={rec.get('video_name')!r})"

    def _bounds(self, index: int, rec: Mapping[str, Any], n_frames: int, what: str,
                standard: bool) -> tuple[int, int]:
        """``[start, end)`` of the chosen segment inside the learner's clip or (``standard``) the
        standard, of ``n_frames`` frames."""
        if self.segment == "none":
            return 0, n_frames
        prefix = "std_" if standard else ""
        start_key = segment_key(self.segment, prefix + "start_frame")
        end_key = segment_key(self.segment, prefix + "end_frame")
        start, end = segment_span(rec, self.segment, n_frames, standard=standard)
        if start is None or end is None:
            missing = [k for k in (start_key, end_key) if rec.get(k) is None]
            raise DataError(f"{self._where(index, rec)}: key {missing[0]!r}: expected an int "
                            f"frame index (segment={self.segment!r} crops the {what} with "
                            f"{start_key} / {end_key}), found none")
        if not 0 <= start < end <= n_frames:
            raise DataError(f"{self._where(index, rec)}: key {end_key!r}: expected "
                            f"0 <= {start_key} < {end_key} <= {n_frames} (the {what}'s length), "
                            f"found [{start}, {end})")
        return int(start), int(end)

    def _standard_features(self, index: int, rec: Mapping[str, Any],
                           standards: Mapping[str, np.ndarray], length: int) -> torch.Tensor:
        """The standard's segment features resampled to ``length`` frames: (C, length, V)."""
        motion_type = rec.get("motion_type")
        if motion_type not in standards:
            raise DataError(f"{self._where(index, rec)}: key 'motion_type': expected one of the "
                            f"standards {sorted(standards)}, found {motion_type!r}")
        std = standards[motion_type]
        start, end = self._bounds(index, rec, len(std), f"standard {motion_type!r}", standard=True)
        key = (motion_type, start, end)
        if key not in self._std_cache:
            self._std_cache[key] = compute_features(std[start:end], self.normalise)
        return torch.from_numpy(resample_time(self._std_cache[key], length))

    def _long_enough(self, index: int, rec: Mapping[str, Any], frames: int) -> bool:
        """False (skip) or a :class:`DataError` (strict) when a clip has < ``min_frames`` frames."""
        if frames >= self.min_frames:
            return True
        what = "clip" if self.segment == "none" else f"{self.segment!r} segment of the clip"
        message = (f"{self._where(index, rec)}: key 'coordinates': expected at least "
                   f"{self.min_frames} frames (the encoder's temporal kernel, "
                   f"model.encoder.temporal_kernel), found a {what} of {frames} frame(s)")
        if self.on_bad == "strict":
            raise DataError(message + "; in training, data.on_bad=skip drops such clips")
        warnings.warn(message + "; skipped", stacklevel=3)
        return False

    def _build_clip(self, index: int, rec: Mapping[str, Any],
                    standards: Mapping[str, np.ndarray] | None) -> _Clip | None:
        coords = np.asarray(rec["coordinates"], dtype=np.float32)
        start, end = self._bounds(index, rec, len(coords), "clip", standard=False)
        if not self._long_enough(index, rec, end - start):
            return None
        features = torch.from_numpy(compute_features(coords[start:end], self.normalise))
        standard = (None if standards is None
                    else self._standard_features(index, rec, standards, end - start))
        references = list(rec.get("labels") or [])
        if self.train:
            paraphrases = list(rec.get("augmented_labels") or []) if self.use_augmented else []
            targets = references + paraphrases
            if not targets:
                raise DataError(f"{self._where(index, rec)}: key 'labels': expected at least one "
                                f"training text, found none")
        else:
            targets = references[:1] or [""]
        return _Clip(str(rec["video_name"]), features, standard, references, targets,
                     rec.get("motion_type"))

    def _build_items(self) -> list[tuple[int, int]]:
        """(clip index, text index or -1 for "drawn per epoch") per sample."""
        if self.train and self.label_mode == "all":
            return [(c, k) for c, clip in enumerate(self._clips) for k in range(len(clip.targets))]
        if self.train and self.label_mode == "random":
            return [(c, -1) for c in range(len(self._clips))]
        return [(c, 0) for c in range(len(self._clips))]

    # ---- epochs ----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Re-draw the ``labels="random"`` texts, deterministically from (seed, epoch, clip)."""
        self.epoch = int(epoch)
        counts = np.array([len(clip.targets) for clip in self._clips], dtype=np.int64)
        rng = np.random.default_rng([int(self.seed), self.epoch])
        self._choice = rng.integers(0, counts)  # (num_clips,): one draw per clip
        mirror_rng = np.random.default_rng([int(self.seed), self.epoch, 1])
        self._mirrored = mirror_rng.random(len(self._items)) < self.mirror  # (num_samples,)
        turn_rng = np.random.default_rng([int(self.seed), self.epoch, 2])
        self._turns = turn_rng.uniform(-self.rotate, self.rotate, len(self._items))  # (num_samples,) degrees
        speed_rng = np.random.default_rng([int(self.seed), self.epoch, 3])
        self._speeds = speed_rng.uniform(1.0 - self.speed, 1.0 + self.speed, len(self._items))  # (num_samples,)

    # ---- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_index, text_index = self._items[index]
        clip = self._clips[clip_index]
        if text_index < 0:
            text_index = int(self._choice[clip_index])
        item = {
            "video_name": clip.video_name,
            "features": clip.features,
            "standard": clip.standard,
            "text": clip.targets[text_index],
            "references": clip.references,
            "motion_type": clip.motion_type,
            **{field: texts.get(clip.video_name) for field, texts in self.retrieved.items()},
        }
        if self.speed:
            item = self._speed_item(item, float(self._speeds[index]))
        if self.mirror and self._mirrored[index]:
            item = self._mirror_item(item)
        return self._turn_item(item, float(self._turns[index])) if self.rotate else item

    def _speed_item(self, item: dict[str, Any], factor: float) -> dict[str, Any]:
        """The item played ``factor`` times as fast: its frames (and its standard's, which share
        them) linearly resampled from ``T`` to ``round(T / factor)``, never below ``min_frames``;
        texts kept. Joints and bones are linear in the coordinates, so these are the features of
        the resampled coordinates."""
        frames = item["features"].shape[1]
        length = max(self.min_frames, 1, int(round(frames / factor)))
        out = dict(item, features=torch.from_numpy(resample_time(item["features"].numpy(), length)))
        if item["standard"] is not None:
            out["standard"] = torch.from_numpy(resample_time(item["standard"].numpy(), length))
        return out

    @staticmethod
    def _turn_item(item: dict[str, Any], degrees: float) -> dict[str, Any]:
        """The item turned about the vertical axis (its standard by the same angle); texts kept."""
        from .augment import rotate_features

        out = dict(item, features=rotate_features(item["features"], degrees))
        if item["standard"] is not None:
            out["standard"] = rotate_features(item["standard"], degrees)
        return out

    @staticmethod
    def _mirror_item(item: dict[str, Any]) -> dict[str, Any]:
        """The item's mirror image: skeleton (and standard) reflected, left and right swapped in
        every text (target, references and retrieved texts)."""
        from .augment import mirror_features, swap_left_right

        out = dict(item, features=mirror_features(item["features"]), text=swap_left_right(item["text"]),
                   references=[swap_left_right(t) for t in item["references"]])
        if item["standard"] is not None:
            out["standard"] = mirror_features(item["standard"])
        for field in ("retrieved", "pool"):
            if item.get(field) is not None:
                out[field] = [swap_left_right(t) for t in item[field]]
        return out

    def set_retrieved(self, texts: Mapping[str, Sequence[str]], field: str = "retrieved") -> None:
        """Give every item a ``field`` of retrieved training texts (see :mod:`dataloaders.retrieval`):
        ``"retrieved"`` (the encoder-side input) or ``"pool"`` (what candidates are reranked against), from
        ``{video_name: texts}``, which must cover every clip; ``"familiar"`` takes one flag a clip
        (:meth:`dataloaders.retrieval.Retriever.familiar`)."""
        missing = [c.video_name for c in self._clips if c.video_name not in texts]
        if missing:
            raise ValueError(f"retrieved texts missing for {len(missing)} clip(s), e.g. {missing[:3]}")
        as_value = bool if field == "familiar" else list
        self.retrieved[field] = {c.video_name: as_value(texts[c.video_name]) for c in self._clips}

    def clip_sample_indices(self) -> list[int]:
        """One sample index per clip (its first), in clip order: a clip-level pass over the data."""
        first: dict[int, int] = {}
        for index, (clip, _) in enumerate(self._items):
            first.setdefault(clip, index)
        return [first[c] for c in sorted(first)]

    def sample_lengths(self) -> list[int]:
        """Frames of each sample's clip, in sample order (for length-grouped batches)."""
        lengths = self.clip_lengths()
        return [lengths[c] for c, _ in self._items]

    def clip_ids(self) -> list[str]:
        """Unique video names in dataset order."""
        return [clip.video_name for clip in self._clips]

    def references(self) -> dict[str, list[str]]:
        """``{video_name: all labels}`` for scoring."""
        return {clip.video_name: list(clip.references) for clip in self._clips}

    def clip_lengths(self) -> list[int]:
        """Frames per clip (after the segment crop), in dataset order."""
        return [int(clip.features.shape[1]) for clip in self._clips]
