"""Caption metrics that equal the COCO caption evaluation (``pycocoevalcap``).

``score_captions(predictions, references)`` returns corpus BLEU-1..4 (closest reference length),
METEOR 1.5 (only when Java is present), ROUGE-L and CIDEr-D, computed by pycocoevalcap's own
scorers on COCO-tokenised text, so the numbers are the ones published papers report.  BERTScore
is added when a local model folder is given and ``bert-score`` is installed.
``score_with_breakdown(predictions, references, groups)`` returns the same table overall and for
each group of clips (the ``motion_type``), tokenising once.

Tokenisation: with Java, the CoreNLP 3.4.1 PTBTokenizer jar that pycocoevalcap ships, run with
pycocoevalcap's options and punctuation list (once per side, not per clip); without Java,
:mod:`core.ptb_tokenizer`, which gives the same tokens.

Scoring writes nothing to the console: the Java tokenizer's progress line ("PTBTokenizer
tokenized N tokens ...") is captured and logged at DEBUG on this module's logger, and BLEU runs
with ``verbose=0``.  Metrics left out (METEOR without Java, BERTScore without a model) are
reported as :class:`MetricSkippedWarning`, which the caller may filter or record.

The module imports neither torch nor torch.distributed; the training loop calls
:func:`score_with_breakdown` on rank 0 with gathered predictions.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

from configs.schema import METRIC_NAMES  # noqa: F401  (the names scored here; evaluation.score lists them)
from core.ptb_tokenizer import coco_clean_line, coco_tokenize_python, one_line

log = logging.getLogger(__name__)

BERTSCORE_NAME = "BERTScore-F1"
MAX_LISTED_IDS = 10


# ------------------------------------------------------------------------------------------
# Errors and warnings
# ------------------------------------------------------------------------------------------
class CaptionInputError(ValueError):
    """Predictions or references that cannot be scored (the message names the id)."""


class MissingIdsError(CaptionInputError):
    """Clip ids present on one side only."""

    def __init__(self, only_in_predictions: Sequence[Hashable], only_in_references: Sequence[Hashable]):
        self.only_in_predictions = list(only_in_predictions)
        self.only_in_references = list(only_in_references)
        parts = []
        if self.only_in_predictions:
            parts.append(f"{len(self.only_in_predictions)} predicted id(s) have no references: "
                         + list_ids(self.only_in_predictions))
        if self.only_in_references:
            parts.append(f"{len(self.only_in_references)} reference id(s) have no prediction: "
                         + list_ids(self.only_in_references))
        super().__init__("; ".join(parts) + ". Every clip needs both a prediction and references "
                         "(the scorer command's --allow-missing leaves such clips out).")


class JavaNotFoundError(RuntimeError):
    """``use_java=True`` but no ``java`` executable is on PATH."""


class MetricSkippedWarning(UserWarning):
    """A metric was left out of the table (METEOR without Java, BERTScore without a model)."""


def list_ids(ids: Sequence[Hashable], limit: int = MAX_LISTED_IDS) -> str:
    """``'a', 'b', ... (+N more)`` for an error message."""
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (f", ... (+{len(ids) - limit} more)" if len(ids) > limit else "")


# ------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------
def validate_inputs(predictions: Mapping[Hashable, Any], references: Mapping[Hashable, Any], *,
                    allow_empty_predictions: bool = False) -> list[Hashable]:
    """Check both sides and return the clip ids in the references' order.

    Raises :class:`CaptionInputError` (a ``ValueError``) naming the offending id: a prediction
    that is not a string or is empty, references that are not a non-empty list of non-empty
    strings, or ids present on one side only (:class:`MissingIdsError`).
    """
    if not isinstance(predictions, Mapping):
        raise CaptionInputError(f"predictions must be a dict {{id: text}}, got {type(predictions).__name__}")
    if not isinstance(references, Mapping):
        raise CaptionInputError(f"references must be a dict {{id: [texts]}}, got {type(references).__name__}")
    only_pred = [i for i in predictions if i not in references]
    only_ref = [i for i in references if i not in predictions]
    if only_pred or only_ref:
        raise MissingIdsError(only_pred, only_ref)
    if not references:
        raise CaptionInputError("nothing to score: predictions and references are empty")
    for clip_id, text in predictions.items():
        _check_prediction(clip_id, text, allow_empty_predictions)
    for clip_id, refs in references.items():
        _check_references(clip_id, refs)
    return list(references)


def _check_prediction(clip_id: Hashable, text: Any, allow_empty: bool) -> None:
    if not isinstance(text, str):
        raise CaptionInputError(f"prediction for id {clip_id!r} is {type(text).__name__} "
                                f"({text!r:.60}); expected a string")
    if not allow_empty and not text.strip():
        raise CaptionInputError(f"prediction for id {clip_id!r} is empty; expected a non-empty caption "
                                "(pass allow_empty_predictions=True to score it as an empty hypothesis)")


def _check_references(clip_id: Hashable, refs: Any) -> None:
    if isinstance(refs, str) or not isinstance(refs, (list, tuple)):
        raise CaptionInputError(f"references for id {clip_id!r} are {type(refs).__name__} "
                                f"({refs!r:.60}); expected a list of strings")
    if not refs:
        raise CaptionInputError(f"references for id {clip_id!r} are an empty list; "
                                "expected at least one reference text")
    for k, ref in enumerate(refs):
        if not isinstance(ref, str):
            raise CaptionInputError(f"reference {k} for id {clip_id!r} is {type(ref).__name__} "
                                    f"({ref!r:.60}); expected a string")
        if not ref.strip():
            raise CaptionInputError(f"reference {k} for id {clip_id!r} is empty; expected a non-empty text")


# ------------------------------------------------------------------------------------------
# Tokenisation
# ------------------------------------------------------------------------------------------
def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (needed by METEOR and the Java tokenizer)."""
    return shutil.which("java") is not None


def resolve_use_java(use_java: bool | None) -> bool:
    """``None`` means: use Java when it is installed."""
    if use_java is None:
        return java_available()
    if use_java and not java_available():
        raise JavaNotFoundError("use_java=True but no 'java' executable is on PATH; install a Java "
                                "runtime (METEOR needs one) or pass use_java=None/False")
    return bool(use_java)


def tokenize(captions: Mapping[Hashable, Sequence[str]], *, use_java: bool) -> dict[Hashable, list[str]]:
    """COCO-tokenise ``{id: [texts]}`` in one pass (one Java process with ``use_java``).

    Texts are put one per line in the order given, as pycocoevalcap's PTBTokenizer does; line
    breaks inside a text are replaced by spaces first (the Java tokenizer would otherwise see
    extra lines and shift every later caption).
    """
    ids = [i for i, texts in captions.items() for _ in texts]
    lines = [one_line(t) for texts in captions.values() for t in texts]
    tokenized = _tokenize_java(lines) if use_java else coco_tokenize_python(lines)
    out: dict[Hashable, list[str]] = {i: [] for i in captions}
    for clip_id, line in zip(ids, tokenized):
        out[clip_id].append(line)
    return out


def _tokenize_java(lines: Sequence[str]) -> list[str]:
    """The Java PTB tokenizer on ``lines``; falls back to the (equivalent) Python tokenizer
    with a warning if the Java call fails."""
    try:
        return java_ptb_tokenize(lines)
    except Exception as exc:  # noqa: BLE001 - any failure of the external tool: fall back
        warnings.warn(f"the Java PTB tokenizer failed ({exc!r}); using the pure-Python tokenizer, "
                      "which gives the same tokens", MetricSkippedWarning, stacklevel=3)
        return coco_tokenize_python(lines)


def corenlp_jar() -> Path:
    """The Stanford CoreNLP 3.4.1 jar shipped inside pycocoevalcap's tokenizer package."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    return Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR


def java_ptb_tokenize(lines: Sequence[str]) -> list[str]:
    """COCO tokenisation of ``lines`` (no line breaks inside) by the Java PTBTokenizer.

    The same jar, options (``-preserveLines -lowerCase``), one-caption-per-line input file and
    punctuation removal as pycocoevalcap's ``PTBTokenizer.tokenize``, so the tokens are the
    same.  Unlike that method, it writes its input file to the system temporary folder (not the
    installed package folder, which may be read-only) and captures the tokenizer's standard
    error, which would otherwise reach the console, logging it at DEBUG.  Raises
    ``RuntimeError`` if Java fails or returns fewer lines than it was given.
    """
    # coco_clean_line drops core.ptb_tokenizer.PUNCTUATIONS, pycocoevalcap's list (a
    # tokenizer test checks the two are equal).
    fd, input_path = tempfile.mkstemp(prefix="coco_ptb_", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write("\n".join(lines).encode("utf-8"))
        command = ["java", "-cp", str(corenlp_jar()), "edu.stanford.nlp.process.PTBTokenizer",
                   "-preserveLines", "-lowerCase", input_path]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, check=False)
    finally:
        with contextlib.suppress(OSError):
            os.remove(input_path)
    stderr = done.stderr.decode("utf-8", errors="replace").strip()
    if stderr:
        log.debug("Java PTBTokenizer: %s", stderr)
    if done.returncode != 0:
        raise RuntimeError(f"java exited with status {done.returncode}: {stderr[-500:]}")
    output = done.stdout.decode("utf-8").split("\n")
    if len(output) < len(lines):
        raise RuntimeError(f"the Java tokenizer returned {len(output)} lines for {len(lines)} captions")
    return [coco_clean_line(line) for line in output[:len(lines)]]


# ------------------------------------------------------------------------------------------
# METEOR (a long-lived JVM, started once per process and reused: starting it costs ~10 s)
# ------------------------------------------------------------------------------------------
class _MeteorService:
    def __init__(self) -> None:
        self._meteor = None
        self._lock = threading.Lock()

    def score(self, gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]]) -> float:
        from pycocoevalcap.meteor.meteor import Meteor

        with self._lock:
            if self._meteor is None or self._meteor.meteor_p.poll() is not None:
                self._meteor = Meteor()
            try:
                return float(self._meteor.compute_score(gts, res)[0])
            except Exception:
                self._close_locked()
                raise

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is None:
            return
        with contextlib.suppress(Exception):
            meteor.meteor_p.stdin.close()
        with contextlib.suppress(Exception):
            meteor.meteor_p.kill()
            meteor.meteor_p.wait(timeout=10)
        # Meteor.__del__ takes its lock, which a failed compute_score leaves held: give it a
        # fresh one so garbage collection cannot hang.
        meteor.lock = threading.Lock()


_METEOR = _MeteorService()
atexit.register(_METEOR.close)


def close_meteor() -> None:
    """Stop the METEOR JVM (it is restarted on the next METEOR computation)."""
    _METEOR.close()


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------
def coco_metrics(gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]], *,
                 with_meteor: bool, notes: list[str]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D with pycocoevalcap's scorers on tokenised text."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # verbose=0: with its default verbose=1 BLEU prints its n-gram totals.  Rouge and Cider
    # print nothing (tests/test_evaluation_metrics.py checks that scoring stays silent).
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"BLEU-{n + 1}": float(bleu[n]) for n in range(4)}
    if with_meteor:
        try:
            out["METEOR"] = _METEOR.score(gts, res)
        except Exception as exc:  # noqa: BLE001 - the JVM failing must not lose the other metrics
            notes.append(f"METEOR left out: the METEOR Java process failed ({exc!r})")
    out["ROUGE-L"] = float(rouge)
    out["CIDEr"] = float(cider)
    return out


def bert_score_module(model_dir: str | Path, notes: list[str]) -> Any:
    """The ``bert_score`` module when ``model_dir`` exists and the package is installed; else
    ``None`` with a note saying which is missing (bert-score is not a project requirement)."""
    if not Path(model_dir).is_dir():
        notes.append(f"BERTScore skipped: model folder {str(model_dir)!r} does not exist")
        return None
    try:
        import bert_score  # type: ignore[import-not-found]
    except ImportError:
        notes.append("BERTScore skipped: the 'bert-score' package is not installed (it is not a project "
                     "requirement; pip install bert-score)")
        return None
    return bert_score


def bertscore_f1(predictions: Sequence[str], references: Sequence[Sequence[str]],
                 model_dir: str | Path, notes: list[str]) -> float | None:
    """Mean BERTScore F1 (best over each clip's references) with a local model folder, or
    ``None`` with a note when the folder or the ``bert-score`` package is missing."""
    bert_score = bert_score_module(model_dir, notes)
    if bert_score is None:
        return None
    model_dir = Path(model_dir)
    num_layers = _num_layers(model_dir)
    _, _, f1 = bert_score.score(list(predictions), [list(r) for r in references],
                                model_type=str(model_dir), num_layers=num_layers, verbose=False)
    return float(f1.mean())


def _num_layers(model_dir: Path) -> int | None:
    """All layers of a local model (its config's ``num_hidden_layers``)."""
    config = model_dir / "config.json"
    if config.is_file():
        layers = json.loads(config.read_text()).get("num_hidden_layers")
        if isinstance(layers, int):
            return layers
    return None


def _warn(notes: Iterable[str]) -> None:
    for note in dict.fromkeys(notes):      # each distinct note once
        # 1 = here, 2 = _score_overall_and_groups, 3 = the public function, 4 = its caller
        warnings.warn(note, MetricSkippedWarning, stacklevel=4)


def _meteor_note(with_java: bool) -> list[str]:
    if with_java:
        return []
    why = ("Java was switched off (use_java=False / --no-java)" if java_available()
           else "it needs a Java runtime and no 'java' is on PATH")
    return [f"METEOR left out: {why}; BLEU, ROUGE-L and CIDEr were computed with the pure-Python "
            "tokenizer, which gives the same values as the Java one"]


def _tokenize_both(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                   ids: Sequence[Hashable], use_java: bool) -> tuple[dict, dict]:
    """References then predictions, each side in one tokenizer call, in ``ids`` order."""
    gts = tokenize({i: list(references[i]) for i in ids}, use_java=use_java)
    res = tokenize({i: [predictions[i]] for i in ids}, use_java=use_java)
    return gts, res


def _score_subset(ids: Sequence[Hashable], gts: dict, res: dict, predictions: Mapping, references: Mapping,
                  with_java: bool, bertscore_model: str | Path | None, notes: list[str]) -> dict[str, float]:
    sub_gts = {i: gts[i] for i in ids}
    sub_res = {i: res[i] for i in ids}
    out = coco_metrics(sub_gts, sub_res, with_meteor=with_java, notes=notes)
    if bertscore_model is not None:
        f1 = bertscore_f1([predictions[i] for i in ids], [references[i] for i in ids], bertscore_model, notes)
        if f1 is not None:
            out[BERTSCORE_NAME] = f1
    return out


def score_captions(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
                   use_java: bool | None = None, bertscore_model: str | Path | None = None,
                   allow_empty_predictions: bool = False) -> dict[str, float]:
    """Corpus caption metrics, equal to pycocoevalcap run directly.

    Args:
        predictions: ``{clip id: generated text}``.
        references: ``{clip id: [reference texts]}`` (all of a clip's references are used).
        use_java: ``None`` = use Java when installed; ``True`` = require it (METEOR and the Java
            tokenizer); ``False`` = pure Python (no METEOR).
        bertscore_model: a local model folder for BERTScore (needs ``bert-score``); skipped
            with a warning otherwise.
        allow_empty_predictions: score an empty prediction as an empty hypothesis instead of
            raising (useful inside a training loop early in training).

    Returns:
        ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR" (with Java), "ROUGE-L", "CIDEr",
        "BERTScore-F1" (optional)}`` as floats on COCO's scale (CIDEr-D is not bounded by 1).

    Raises:
        CaptionInputError: bad input, naming the id (a ``ValueError``).
        JavaNotFoundError: ``use_java=True`` without Java.
    """
    overall, _ = _score_overall_and_groups(predictions, references, None, use_java=use_java,
                                           bertscore_model=bertscore_model,
                                           allow_empty_predictions=allow_empty_predictions)
    return overall


def score_with_breakdown(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                         groups: Mapping[Hashable, str | None] | None, *, use_java: bool | None = None,
                         bertscore_model: str | Path | None = None, allow_empty_predictions: bool = False
                         ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``(overall, by_group)``: the table of :func:`score_captions` for all clips, and for each
    group of clips (e.g. ``{video_name: motion_type}``).

    The texts are tokenised once and METEOR's JVM is shared.  Each group is scored as its own
    test set, exactly as pycocoevalcap would score that subset (so CIDEr-D's document
    frequencies come from the group's references).  Clips whose group is missing or ``None``
    form the group ``"(none)"``; groups come out sorted by name.  With ``groups=None``,
    ``by_group`` is ``{}``.  Arguments, warnings and errors are those of :func:`score_captions`.
    """
    return _score_overall_and_groups(predictions, references, groups, use_java=use_java,
                                     bertscore_model=bertscore_model,
                                     allow_empty_predictions=allow_empty_predictions)


def group_members(ids: Sequence[Hashable], groups: Mapping[Hashable, str | None]) -> dict[str, list[Hashable]]:
    """``{group name: [ids]}`` sorted by group name; a missing or ``None`` group is ``"(none)"``."""
    members: dict[str, list[Hashable]] = {}
    for clip_id in ids:
        group = groups.get(clip_id)
        members.setdefault("(none)" if group is None else str(group), []).append(clip_id)
    return {g: members[g] for g in sorted(members)}


def _score_overall_and_groups(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                              groups: Mapping[Hashable, str | None] | None, *, use_java: bool | None,
                              bertscore_model: str | Path | None, allow_empty_predictions: bool
                              ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The work of both public functions.  Notes about skipped metrics are issued as
    :class:`MetricSkippedWarning`, each once, attributed to the public function's caller."""
    ids = validate_inputs(predictions, references, allow_empty_predictions=allow_empty_predictions)
    with_java = resolve_use_java(use_java)
    notes = _meteor_note(with_java)
    gts, res = _tokenize_both(predictions, references, ids, with_java)

    def run(subset: Sequence[Hashable]) -> dict[str, float]:
        return _score_subset(subset, gts, res, predictions, references, with_java, bertscore_model, notes)

    overall = run(ids)
    by_group = {g: run(m) for g, m in group_members(ids, groups).items()} if groups is not None else {}
    _warn(notes)
    return overall, by_group
