"""What the web page (``demo.py``) does, without the web: a run's model, its clips and standards,
captions, pictures and metrics of one motion at a time.

The page only lays this out. Everything a caption depends on goes through :mod:`inference.decode`
exactly as ``caption.py`` does (the same reading of files, the same pairing with standards, the
same features and decoding), and :meth:`Decoding.caption_args` and :meth:`DemoRun.command`
give the ``caption.py`` command line that prints the same texts. The pictures are
:func:`inference.pictures.clip_pictures`'s.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from core.paths import shown
from dataloaders.records import load_records, load_standards
from inference import decode, inputs
from inference.inputs import UsageError

__all__ = ["STANDARD_OWN", "STANDARD_NONE", "STANDARD_UPLOAD", "DECODING_MODES", "Decoding", "Result",
           "DemoRun", "shell_quote", "message_of"]

log = logging.getLogger("motion2text.demo")

STANDARD_OWN = "the clip's own motion type"
STANDARD_NONE = "none (the first frame stands in)"
STANDARD_UPLOAD = "the uploaded standard file"
DECODING_MODES = ("greedy", "beam search", "sampling")
KEEP_REQUESTS = 8  # request folders kept on disk (the page shows the latest)

Progress = Callable[[float, str], None]



def shell_quote(text: str) -> str:
    import shlex
    return shlex.quote(str(text))


@dataclass(frozen=True)
class Decoding:
    """The decoding options of ``caption.py``, as the page offers them."""

    mode: str = "greedy"  # one of DECODING_MODES
    num_beams: int = 3  # beam search width
    num_return_sequences: int = 1
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    max_new_tokens: int = 64
    seed: int = 0
    rerank: int | None = None  # beam candidates reranked against retrieved texts (None: the run's eval.rerank)

    def __post_init__(self) -> None:
        if self.mode not in DECODING_MODES:
            raise UsageError(f"decoding must be one of {', '.join(DECODING_MODES)}, got {self.mode!r}")

    @property
    def beams(self) -> int:
        return int(self.num_beams) if self.mode == "beam search" else 1

    def generate_kwargs(self) -> dict[str, Any]:
        """Checked ``T5.generate`` arguments (:func:`inference.decode.generation_kwargs`)."""
        sample = self.mode == "sampling"
        return decode.generation_kwargs(self.beams, sample, float(self.temperature) if sample else None,
                                           float(self.top_p) if sample else None, int(self.num_return_sequences),
                                           int(self.max_new_tokens))

    def caption_args(self) -> list[str]:
        """The ``caption.py`` options that decode the same way."""
        args = ["--num_beams", str(self.beams), "--num_return_sequences", str(int(self.num_return_sequences)),
                "--max_new_tokens", str(int(self.max_new_tokens)), "--seed", str(int(self.seed))]
        if self.mode == "sampling":
            args += ["--sample", "--temperature", repr(float(self.temperature)), "--top_p", repr(float(self.top_p))]
        if self.rerank is not None:
            args += ["--rerank", str(int(self.rerank))]
        return args


@dataclass
class Result:
    """One motion's caption(s), pictures and, for a test clip, its references and metrics."""

    name: str
    texts: list[str]
    frames: int
    animation: Path  # GIF: the learner and the aligned standard side by side
    key_frames: Path  # PNG strip
    node_attention: Path
    cross_attention: Path
    command: str  # the caption.py command that prints the same texts
    references: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    standard: str | None = None  # the standard's name, None when none was used
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class DemoRun:
    """A trained run opened for the page: model, test clips, standards, and a folder for pictures."""

    def __init__(self, run: str | Path | None = None, ckpt: str | Path | None = None, device: str = "auto",
                 work_dir: str | Path | None = None) -> None:
        self.model, self.cfg, self.ckpt = decode.load_model(run, ckpt, device)
        self.run_arg = ("--run", str(run)) if run is not None else ("--ckpt", str(ckpt))
        self.test_path, self.standard_path = inputs.run_data_files(self.cfg, self.ckpt)
        self.test_records = ({r["video_name"]: r for r in load_records(self.test_path, need_labels=False)}
                             if self.test_path else {})
        self.standards = load_standards(self.standard_path) if self.standard_path else {}
        self._frame: str | None = None
        self._df = None
        self._lock = threading.Lock()
        self._owns_work = work_dir is None
        self.work = Path(tempfile.mkdtemp(prefix="motion2text-demo-")) if work_dir is None else Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self._requests: deque[Path] = deque()
        self.split_metrics = self._read_split_metrics()

    # ------------------------------------------------------------------ what the page lists
    @property
    def name(self) -> str:
        return Path(self.run_arg[1]).name or self.run_arg[1]

    @property
    def uses_standards(self) -> bool:
        return self.model.reference == "subtract"

    @property
    def retrieves(self) -> bool:
        """Whether the run was trained with retrieval (so its beam candidates can be reranked)."""
        return getattr(self.model, "retriever", None) is not None

    def candidates_text(self, rerank: int) -> str:
        """"5 beam candidates" (and "and 10 sampled ones" with ``eval.rerank_samples``; the retrieved
        texts with ``eval.rerank_candidates``, for familiar clips only when ``gated``; "plus ... the
        model's log-probability" with ``eval.rerank_logprob``)."""
        ev = self.cfg.eval
        plus = f" (plus {ev.rerank_logprob:g} x the model's log-probability)" if ev.rerank_logprob else ""
        if ev.rerank_candidates == "retrieved":
            return "the nearest training clips' texts" + plus
        text = (f"{rerank} beam candidates" + (f" and {ev.rerank_samples} sampled ones" if ev.rerank_samples else "")
                + (" and the nearest training clips' texts" if ev.rerank_candidates == "both" else ""))
        if ev.rerank_candidates == "gated":  # the log-probability scores the familiar clips' texts only
            return (f"the nearest training clips' texts{plus} when the nearest clip is likely of the same learner, "
                    f"else {text}")
        return text + plus

    def rerank_of(self, decoding: Decoding) -> int:
        """The reranking ``caption.py`` applies with these options: theirs, else the run's ``eval.rerank``."""
        return int(self.cfg.eval.rerank if decoding.rerank is None else decoding.rerank)

    def clip_names(self) -> list[str]:
        return list(self.test_records)

    def motion_types(self) -> list[str]:
        return sorted(self.standards)

    def standard_choices(self) -> list[str]:
        return [STANDARD_OWN, *self.motion_types(), STANDARD_UPLOAD, STANDARD_NONE]

    def hybrik_frame(self) -> str:
        """The frame HybrIK uploads are converted to: the run's training data's."""
        if self._frame is None:
            self._frame = inputs.data_frame(self.cfg, self.ckpt)
        return self._frame

    def describe(self) -> str:
        """One paragraph about the run, for the page's header."""
        m = self.cfg.model
        parts = [f"checkpoint `{self.ckpt}`", f"projection `{m.projection.policy}`",
                 "compares with a standard (reference branch)" if self.uses_standards else "no reference branch",
                 *([f"retrieval (reranks {self.candidates_text(self.cfg.eval.rerank)})"] if self.retrieves else []),
                 f"{len(self.test_records)} test clips" if self.test_records else "no test clips found",
                 f"standards: {', '.join(self.motion_types())}" if self.standards else "no standards found",
                 f"HybrIK uploads are read in the `{self.hybrik_frame()}` frame"]
        return "; ".join(parts) + "."

    # ------------------------------------------------------------------ reading
    def read_motion(self, path: str | Path, folder_is_cache: bool = False) -> tuple[dict, list[str]]:
        """The record of an uploaded motion file, read as ``caption.py`` reads it (a dataset
        pickle of several clips gives its first, with a note). ``folder_is_cache``: the file sits
        in a folder of the web server's upload cache, so a HybrIK ``res.pk`` (named after its
        folder) is named after the file instead."""
        path = Path(path)
        records = inputs.records_from_inputs([path], hybrik_frame=self.hybrik_frame)
        if folder_is_cache and records[0]["video_name"] == path.parent.name:
            records[0] = dict(records[0], video_name=path.stem)
        notes = []
        if len(records) > 1:
            notes.append(f"the file holds {len(records)} clips; captioning the first, {records[0]['video_name']!r}")
        return records[0], notes

    def test_clip(self, name: str) -> dict:
        if name not in self.test_records:
            raise UsageError(f"no test clip named {name!r}")
        return self.test_records[name]

    def read_standard(self, path: str | Path) -> dict[str, np.ndarray]:
        """``{name: [T, 22, 3]}`` of an uploaded standard (``.npy``, HybrIK result or standard pickle)."""
        return inputs.read_standards(Path(path), None, self.hybrik_frame)

    # ------------------------------------------------------------------ standards
    def _standards_for(self, record: dict, choice: str, upload: str | Path | None
                       ) -> tuple[dict[str, np.ndarray] | None, str | None, list[str]]:
        """(standards, the one that serves this clip or None for its own motion type, caption.py options)."""
        if choice == STANDARD_NONE:
            return None, None, []
        if choice == STANDARD_UPLOAD:
            if not upload:
                raise UsageError("choose a standard file to upload, or pick a standard by motion type")
            standards = self.read_standard(upload)
            every = inputs.standard_for_every_clip(upload, None)
            if every is None and len(standards) == 1:  # a one-standard pickle serves the clip whatever its type
                every = next(iter(standards))
                return standards, every, ["--standard", str(upload), "--motion_type", every]
            return standards, every, ["--standard", str(upload)]
        if not self.standards:
            raise UsageError(f"the run has no standards file ({self.standard_path or 'none found'}); "
                             f"upload a standard instead")
        if choice == STANDARD_OWN:
            if record.get("motion_type") not in self.standards:
                raise UsageError(f"clip {record['video_name']!r} has motion type {record.get('motion_type')!r}, "
                                 f"which has no standard; pick one of {', '.join(self.motion_types())}")
            return self.standards, None, ["--standard", str(self.standard_path)]
        if choice not in self.standards:
            raise UsageError(f"no standard named {choice!r}; the run has {', '.join(self.motion_types())}")
        return self.standards, choice, ["--standard", str(self.standard_path), "--motion_type", choice]

    # ------------------------------------------------------------------ captioning
    def command(self, source: str | Path, video_name: str | None, standard_args: Sequence[str],
                decoding: Decoding) -> str:
        """The ``caption.py`` command that prints the texts the page shows."""
        words = ["python", "caption.py", *self.run_arg, str(source)]
        if video_name is not None:
            words += ["--video_name", video_name]
        words += [*standard_args, *decoding.caption_args()]
        return " ".join(shell_quote(shown(w)) for w in words)

    def caption(self, record: dict, *, standard: str = STANDARD_OWN, standard_upload: str | Path | None = None,
                decoding: Decoding = Decoding(), source: str | Path | None = None,
                progress: Progress | None = None) -> Result:
        """Caption one record (an upload's or a test clip's) and draw its pictures."""
        say = progress or (lambda fraction, text: None)
        start = time.perf_counter()
        gen = decoding.generate_kwargs()
        rerank = self.rerank_of(decoding)
        say(0.1, "pairing with the standard")
        standards, every, standard_args = self._standards_for(record, standard, standard_upload)
        notes: list[str] = []
        if standards is not None and not self.uses_standards:
            notes.append("this model has no reference branch: the standard is shown, not used for the caption")
        if standards is None and self.uses_standards:
            notes.append("no standard: the first frame of the clip repeated stands in (as in pretraining)")
        records = inputs.pair_with_standards([record], standards, every) if standards else [dict(record)]
        used = records[0].get("motion_type") if standards else None
        say(0.2, "captioning")
        with self._lock:
            captions = decode.caption_records(self.model, self.cfg, records,
                                                 standards if self.uses_standards else None, batch_size=1,
                                                 seed=decoding.seed, source=str(source or record["video_name"]),
                                                 rerank=rerank, **gen)
            texts = captions[record["video_name"]]
            say(0.45, "drawing the skeletons and the attention")
            pictures = self._pictures(records[0], standards, decoding)
        if rerank:
            notes.append(f"the caption is the best of {self.candidates_text(rerank)} by CIDEr-D against the texts of "
                         f"the nearest training clips; the attention pictures are those of the first beam")
        elif decoding.mode == "sampling":
            notes.append("the attention pictures are those of the greedy caption")
        is_test = source is None and record["video_name"] in self.test_records
        references = list(record.get("labels") or [])
        say(0.95, "scoring")
        metrics = self.clip_metrics(texts[0], references) if references else {}
        command = self.command(self.test_path if is_test else source, record["video_name"] if is_test else None,
                               standard_args, decoding)
        return Result(name=record["video_name"], texts=texts, frames=len(record["coordinates"]),
                      animation=pictures["gif"], key_frames=pictures["png"], node_attention=pictures["node"],
                      cross_attention=pictures["cross"], command=command, references=references, metrics=metrics,
                      standard=used, notes=notes, seconds=time.perf_counter() - start)

    def _pictures(self, record: dict, standards: Mapping[str, np.ndarray] | None,
                  decoding: Decoding) -> dict[str, Path]:
        from inference import pictures

        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.work))
        self._requests.append(folder)
        while len(self._requests) > KEEP_REQUESTS:
            shutil.rmtree(self._requests.popleft(), ignore_errors=True)
        return pictures.clip_pictures(self.model, self.cfg, record, standards, folder, mp4=False,
                                      num_beams=decoding.beams, max_new_tokens=int(decoding.max_new_tokens))

    # ------------------------------------------------------------------ metrics
    def clip_metrics(self, text: str, references: Sequence[str]) -> dict[str, float]:
        """BLEU-1..4 and ROUGE-L of one caption against its references (pycocoevalcap's, without
        Java), and CIDEr-D with the document frequencies of the test split's references (one clip
        alone has none: every n-gram would occur in every document)."""
        from evaluation import quality
        from evaluation.metrics import MetricSkippedWarning, score_captions

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricSkippedWarning)
            scores = score_captions({"clip": text}, {"clip": list(references)}, use_java=False,
                                    allow_empty_predictions=True)
        scores.pop("CIDEr", None)
        if self._df is None and self.test_records:
            self._df = quality.document_frequency([r["labels"] for r in self.test_records.values() if r["labels"]])
        if self._df is not None:  # an empty caption scores 0
            scores["CIDEr-D"] = (float(quality.cider_d_matrix([text], [list(references)], self._df)[0, 0])
                                 if text.strip() else 0.0)
        return scores

    def _read_split_metrics(self) -> dict[str, float]:
        """The test-split metrics training wrote for this checkpoint (``test_<best|last>_metrics.json``)."""
        path = Path(self.ckpt).resolve().parent.parent / f"test_{Path(self.ckpt).stem}_metrics.json"
        if Path(self.ckpt).is_dir():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items()
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}

    def close(self) -> None:
        if self._owns_work:
            shutil.rmtree(self.work, ignore_errors=True)


def message_of(exc: BaseException) -> str:
    """One line for the page."""
    return " ".join(str(exc).split()) or type(exc).__name__

