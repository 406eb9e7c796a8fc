"""Motion-to-text evaluation as the HumanML3D papers report it.

    python -m evaluation.m2t --predictions P.json --data DIR --references tokenised

``P.json`` maps clip ids to generated captions (``{id: caption}``, or the records that
:func:`evaluation.score.load_predictions` reads).  ``DIR`` is a HumanML3D folder
(``texts/<id>.txt``; ``new_joint_vecs/<id>.npy`` for R-Precision) or, for a model trained on
other data, one of this project's dataset files (a pickle or JSON of records with ``labels``).
Clip ids: ``<id>`` (the whole motion, the lines whose times are both 0), the converter's
``<id>#<start>-<end>`` (frames of a sub-clip, :mod:`dataloaders.humanml3d`) or the published
loaders' ``<id>_<from>_<to>`` (seconds written with six decimals).

The figures and how each is made:

* **BLEU@1, BLEU@4, ROUGE-L, CIDEr** against each clip's references in the convention that
  ``--references`` names (there is no default: figures in the two are not comparable):

  - ``tokenised`` (TM2T, MotionGPT): a reference is the ``tokens`` field of a ``texts/*.txt``
    line (``caption#tokens#from#to``; tokens are ``word/POS``), each token cut at its first
    ``/`` and the words joined by single spaces; every token is kept.  Nothing else is done
    (TM2T neither lower-cases nor filters), because the field was made by HumanML3D's text
    processing: hyphens removed, spaCy tokens that are not purely alphabetic dropped (so
    punctuation and numbers are gone), nouns and verbs replaced by their lemma except the word
    "left", other words as written; the released captions are lower case, so the words are too.
    ``a man kicks something with his left leg.`` becomes ``a man kick something with his left leg``.
  - ``raw`` (MotionGPT3 and later): a reference is the caption text, the line's first field.

  Either way a clip's references are its lines in file order, the first three kept and fewer
  repeated up to three (one line counted thrice, two lines as first, second, first), as the
  published loaders do; this weights CIDEr and BERTScore, not BLEU or ROUGE-L.  Predictions are
  scored as given (``--prediction-form as-given``, what MotionGPT does with its model's text), or
  put through the same processing as the ``tokens`` field (``tokenised``: needs spaCy), which is
  the form TM2T's own predictions had (its model writes vocabulary words).  The scorer
  (``--scorer``): ``metricverse`` (default) is nlg-metricverse's definitions, which MotionGPT and
  MotionGPT3 use, as :mod:`evaluation.published` re-computes them; ``nlgeval`` is the COCO
  caption scorers on white-space tokens with no other tokenisation, which TM2T's own table used
  (the ``nlg-eval`` package), computed by :func:`evaluation.metrics.coco_metrics`.
* **BERTScore**: ``bert_score.score`` with idf weights (from the references), baseline
  rescaling and the best of a clip's three references, mean F1, as TM2T and MotionGPT call it
  (``lang="en"``: ``roberta-large``, layer 17).  Needs the optional ``bert-score`` package
  (``requirements-m2t.txt``) and a local copy of the model (``--bertscore-model DIR``, a folder
  named ``roberta-large`` to use the tuned layer and the baseline table that bert-score ships).
* **R-Precision top-1/2/3, MM-Dist**: Guo et al.'s text-motion matching evaluator
  (:mod:`evaluation.matching`) on the clips' 263-dim features, with the released weights and
  vocabulary (``--evaluator DIR``), the evaluator's own normalisation, and the predictions tagged
  by the user's spaCy pipeline (``--spacy-model``; TM2T used ``en_core_web_sm`` 3.2.0).  Two rows:
  the predictions, and the references (one line per clip drawn at random each replication, its
  ``tokens`` field as the text: the "Real" row of the tables).  Random groups of 32 (a seeded
  permutation; an incomplete last group is left out), ``--replications`` runs with seeds
  ``--seed``, ``--seed``+1, ...

The command prints every figure it can compute with what it was given and names the input
each other figure needs; ``--require-all`` turns such a gap into an error.  A flag that names a
missing or unusable file is always an error: one line on standard error, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from evaluation.metrics import CaptionInputError, MetricSkippedWarning, list_ids

REFERENCE_CONVENTIONS = ("tokenised", "raw")
SCORERS = ("metricverse", "nlgeval")
PREDICTION_FORMS = ("as-given", "tokenised")
REFERENCES_PER_CLIP = 3
FPS = 20
TEXT_FIGURES = ("BLEU@1", "BLEU@4", "ROUGE-L", "CIDEr")
BERTSCORE = "BERTScore"
MATCHING_FIGURES = ("R-Precision top-1", "R-Precision top-2", "R-Precision top-3", "MM-Dist")

CONVENTION_NOTES = {
    "tokenised": "the tokens field of each texts/*.txt line, words only (lemmas, no punctuation): TM2T, MotionGPT",
    "raw": "the caption text of each line: MotionGPT3 and later",
}
SCORER_NOTES = {
    "metricverse": "nlg-metricverse definitions (MotionGPT, MotionGPT3), re-computed by evaluation.published",
    "nlgeval": "COCO scorers on white-space tokens as nlg-eval runs them (TM2T), by evaluation.metrics",
}
NEEDS = {
    BERTSCORE: "--bertscore-model DIR (a local roberta-large folder, the model bert-score uses for English) "
               "and the bert-score package (pip install -r requirements-m2t.txt)",
    "evaluator": "--evaluator DIR (the released text_mot_match/model/finest.tar, the our_vab_data.npy / "
                 "our_vab_words.pkl / our_vab_idx.pkl vocabulary, and mean_eval.npy / std_eval.npy or "
                 "--evaluator-meta DIR)",
    "spacy": "--spacy-model NAME (a spaCy pipeline that tags the predictions as HumanML3D's tokens were "
             "tagged, e.g. en_core_web_sm; pip install -r requirements-m2t.txt)",
    "features": "--data a HumanML3D folder with new_joint_vecs/ (the clips' 263-dim features)",
}


class M2TInputError(CaptionInputError):
    """Inputs that cannot be evaluated; the message is one line and names the flag or file."""


# ------------------------------------------------------------------------------------------
# HumanML3D's text lines and the two reference conventions
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextLine:
    """One ``caption#tokens#from#to`` line (times in seconds; NaN read as 0)."""

    caption: str
    tokens: tuple[str, ...] | None      # None for a dataset record, which has no tokens field
    start: float = 0.0
    end: float = 0.0

    @property
    def whole_clip(self) -> bool:
        return self.start == 0.0 and self.end == 0.0

    def reference(self, convention: str) -> str:
        if convention == "raw":
            return self.caption
        if self.tokens is None:
            raise M2TInputError("--references tokenised needs the tokens field of HumanML3D's texts/*.txt; "
                                "this data has captions only (use --references raw, or --data a HumanML3D folder)")
        return tokenised_reference(self.tokens)


def parse_text_line(line: str, where: str = "<line>") -> TextLine:
    """Split a ``texts/*.txt`` line as the published loaders do: ``line.strip().split("#")``, the
    caption is field 0 (as it is), the tokens field 1 split on single spaces, the times fields 2
    and 3 (a NaN time counts as 0)."""
    fields = line.strip().split("#")
    if len(fields) < 4:
        raise M2TInputError(f"{where}: expected caption#tokens#from#to, found {len(fields)} '#'-separated "
                            f"field(s): {line.strip()[:80]!r}")
    try:
        start, end = float(fields[2]), float(fields[3])
    except ValueError:
        raise M2TInputError(f"{where}: the times {fields[2]!r}, {fields[3]!r} are not numbers") from None
    start = 0.0 if math.isnan(start) else start
    end = 0.0 if math.isnan(end) else end
    return TextLine(fields[0], tuple(fields[1].split(" ")), start, end)


def tokenised_reference(tokens: Sequence[str]) -> str:
    """The ``tokenised`` reference: each ``word/POS`` token cut at its first ``/``, joined by spaces."""
    return " ".join(token.split("/")[0] for token in tokens)


def three_references(references: Sequence[str]) -> list[str]:
    """The first three references; two become (first, second, first), one is repeated thrice."""
    refs = list(references)
    if not refs:
        raise ValueError("a clip needs at least one reference")
    if len(refs) == 2:
        return refs + refs[:1]
    if len(refs) == 1:
        return refs * 3
    return refs[:REFERENCES_PER_CLIP]


# ------------------------------------------------------------------------------------------
# The data: a HumanML3D folder or a dataset file
# ------------------------------------------------------------------------------------------
@dataclass
class Clip:
    name: str
    lines: list[TextLine]
    motion_id: str | None = None                # HumanML3D: the file stem of texts/ and new_joint_vecs/
    frames: tuple[int, int | None] = (0, None)  # the slice of the motion's frames


_FRAMES_NAME = re.compile(r"^(?P<id>.+)#(?P<start>\d+)-(?P<end>\d+)$")
_SECONDS_NAME = re.compile(r"^(?P<id>.+)_(?P<start>\d+\.\d+)_(?P<end>\d+\.\d+)$")


class HumanML3DFolder:
    """``texts/<id>.txt`` (and ``new_joint_vecs/<id>.npy``) of a HumanML3D release."""

    has_features_dir: bool

    def __init__(self, root: Path) -> None:
        self.root = root
        self.texts = root / "texts"
        self.features_dir = root / "new_joint_vecs"
        if not self.texts.is_dir():
            raise M2TInputError(f"--data {root}: no texts/ folder (a HumanML3D folder holds texts/<id>.txt; "
                                "unpack texts.zip there)")
        self.has_features_dir = self.features_dir.is_dir()
        self._lines: dict[str, list[TextLine]] = {}

    def lines_of(self, motion_id: str) -> list[TextLine] | None:
        if motion_id not in self._lines:
            path = self.texts / f"{motion_id}.txt"
            if not path.is_file():
                return None
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise M2TInputError(f"{path}: not readable UTF-8 text ({exc})") from None
            self._lines[motion_id] = [parse_text_line(line, f"{path}:{number}")
                                      for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return self._lines[motion_id]

    def clip(self, name: str) -> Clip | None:
        """The clip a prediction id names, or ``None`` when the folder has no such clip."""
        lines = self.lines_of(name)
        if lines is not None:
            whole = [line for line in lines if line.whole_clip]
            return Clip(name, whole, name) if whole else None
        match = _FRAMES_NAME.match(name)
        if match and self.lines_of(match["id"]) is not None:
            start, end = int(match["start"]), int(match["end"])
            n = self._frames(match["id"])
            picked = [line for line in self.lines_of(match["id"]) or [] if not line.whole_clip
                      and int(line.start * FPS) == start
                      and (int(line.end * FPS) == end or (n is not None and int(line.end * FPS) > end >= n))]
            return Clip(name, picked, match["id"], (start, end)) if picked else None
        match = _SECONDS_NAME.match(name)
        if match and self.lines_of(match["id"]) is not None:
            picked = [line for line in self.lines_of(match["id"]) or [] if not line.whole_clip
                      and f"{line.start:f}" == match["start"] and f"{line.end:f}" == match["end"]]
            if picked:
                return Clip(name, picked, match["id"], (int(picked[0].start * FPS), int(picked[0].end * FPS)))
        return None

    def _frames(self, motion_id: str) -> int | None:
        """Frames of the motion's features (the converter cut spans at its joints' end, one more)."""
        path = self.features_dir / f"{motion_id}.npy"
        if not path.is_file():
            return None
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])

    def features(self, clip: Clip) -> np.ndarray:
        """The clip's 263-dim features ``(T, 263)`` (the motion's, sliced for a sub-clip)."""
        path = self.features_dir / f"{clip.motion_id}.npy"
        if not path.is_file():
            raise M2TInputError(f"{path}: no features for clip {clip.name!r} (R-Precision needs "
                                "new_joint_vecs/<id>.npy)")
        try:
            motion = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise M2TInputError(f"{path}: not a readable .npy array ({exc})") from None
        start, end = clip.frames
        return np.asarray(motion[start:end], dtype=np.float32)

    def coverage(self, names: Sequence[str]) -> str | None:
        """How many of ``test.txt``'s ids the predictions name (whole clips), when it exists."""
        split = self.root / "test.txt"
        if not split.is_file():
            return None
        ids = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
        covered = len(set(ids) & set(names))
        return (f"the predictions name {covered} of the {len(ids)} ids in test.txt as whole clips (published "
                "tables score every test motion of 40..199 frames and its sub-clips)")


def read_records(path: Path) -> dict[str, Clip]:
    """Clips of a dataset pickle or JSON (labels only: no tokens field, no 263-dim features)."""
    from evaluation.score import InputFileError, load_references

    try:
        references, _ = load_references(path)
    except InputFileError as exc:
        raise M2TInputError(f"--data {exc}") from None
    clips = {}
    for name, labels in references.items():
        if not isinstance(labels, list) or not labels or not all(isinstance(t, str) and t.strip() for t in labels):
            raise M2TInputError(f"--data {path}: the labels of {name!r} are not a list of non-empty texts")
        clips[str(name)] = Clip(str(name), [TextLine(t, None) for t in labels])
    return clips


# ------------------------------------------------------------------------------------------
# The figures
# ------------------------------------------------------------------------------------------
def text_figures(ids: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]], scorer: str,
                 notes: list[str]) -> dict[str, float]:
    """BLEU@1, BLEU@4, ROUGE-L, CIDEr of the clips ``ids`` as fractions (CIDEr on its 0..10 scale)."""
    ids = list(ids)
    if scorer == "metricverse":
        from evaluation.published import published_details

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricSkippedWarning)
            scores = published_details(dict(zip(ids, predictions)), dict(zip(ids, references)))["scores"]
        notes += [str(w.message) for w in caught if issubclass(w.category, MetricSkippedWarning)]
        return {"BLEU@1": scores["BLEU-1"], "BLEU@4": scores["BLEU-4"], "ROUGE-L": scores["ROUGE-L"],
                "CIDEr": scores["CIDEr"]}
    from evaluation.metrics import coco_metrics, validate_inputs

    hypotheses, refs = dict(zip(ids, predictions)), dict(zip(ids, map(list, references)))
    validate_inputs(hypotheses, refs)
    scores = coco_metrics(refs, {i: [hypotheses[i]] for i in ids}, with_meteor=False, notes=notes)
    return {"BLEU@1": scores["BLEU-1"], "BLEU@4": scores["BLEU-4"], "ROUGE-L": scores["ROUGE-L"],
            "CIDEr": scores["CIDEr"]}


def bertscore_figure(predictions: Sequence[str], references: Sequence[Sequence[str]], model_dir: Path,
                     layers: int | None, baseline: Path | None, notes: list[str]) -> tuple[str, float]:
    from evaluation.published import published_bertscore

    try:
        result = published_bertscore(predictions, references, model_dir, notes, num_layers=layers, baseline=baseline)
    except Exception as exc:  # noqa: BLE001 - a folder that is not a model fails inside transformers
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise M2TInputError(f"--bertscore-model {model_dir}: bert-score could not use it "
                            f"({type(exc).__name__}: {first})") from None
    if result is None:  # checked before scoring; kept for a package that fails late
        raise M2TInputError(f"--bertscore-model {model_dir}: {notes[-1] if notes else 'BERTScore failed'}")
    return result


def check_bertscore(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise M2TInputError(f"--bertscore-model {model_dir}: no such folder (a local copy of the model, "
                            "e.g. roberta-large)")
    if importlib.util.find_spec("bert_score") is None:
        raise M2TInputError("--bertscore-model needs the bert-score package, which is not installed "
                            "(pip install -r requirements-m2t.txt)")


@dataclass
class Inputs:
    """What the optional figures need, resolved (or ``None``) before anything is scored."""

    nlp: Callable[[str], Any] | None = None
    evaluator_files: Any = None      # evaluation.matching.EvaluatorFiles
    evaluator: Any = None            # evaluation.matching.Evaluator, loaded and checked
    vocabulary: Any = None
    norm: Any = None
    needs: dict[str, list[str]] = field(default_factory=dict)   # figure -> what it lacks


def resolve_inputs(args: argparse.Namespace, data_is_folder: bool, has_features: bool) -> Inputs:
    """Check every optional input that was given (loading the evaluator and spaCy), so that a bad
    one stops the command before anything is scored, and list what the others would need."""
    from evaluation.matching import (EvaluatorError, Evaluator, Normalisation, Vocabulary, find_evaluator_files,
                                     load_spacy)

    inputs = Inputs()
    try:
        if args.bertscore_model is not None:
            check_bertscore(args.bertscore_model)
        else:
            inputs.needs[BERTSCORE] = [NEEDS[BERTSCORE]]
        if args.spacy_model is not None:
            inputs.nlp = load_spacy(args.spacy_model)
        elif args.prediction_form == "tokenised":
            raise M2TInputError("--prediction-form tokenised needs --spacy-model NAME (the pipeline that tags "
                                "the predictions)")
        if args.evaluator is not None:
            if not (data_is_folder and has_features):
                raise M2TInputError(f"--evaluator needs the clips' 263-dim features: {NEEDS['features']}")
            files = inputs.evaluator_files = find_evaluator_files(args.evaluator, args.evaluator_meta)
            inputs.evaluator = Evaluator.load(files.checkpoint, device=args.device)
            inputs.vocabulary = Vocabulary.from_folder(files.vocabulary)
            inputs.norm = Normalisation.from_files(files.mean, files.std)
        missing = ([NEEDS["evaluator"]] if args.evaluator is None else []) \
            + ([NEEDS["features"]] if not (data_is_folder and has_features) else [])
        if missing:
            inputs.needs["R-Precision, MM-Dist"] = missing + ([NEEDS["spacy"]] if inputs.nlp is None else [])
        elif inputs.nlp is None:
            inputs.needs["R-Precision, MM-Dist of the predictions"] = [NEEDS["spacy"]]
    except EvaluatorError as exc:
        raise M2TInputError(str(exc)) from None
    if args.require_all and inputs.needs:
        gaps = "; ".join(f"{figure} needs {' and '.join(n.split(' (')[0] for n in needs)}"
                         for figure, needs in inputs.needs.items())
        raise M2TInputError(f"--require-all: not computed: {gaps}")
    return inputs


def matching_rows(folder: HumanML3DFolder, clips: Sequence[Clip], predictions: Sequence[str],
                  inputs: Inputs, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    """R-Precision and MM-Dist of the predictions (with spaCy) and of the references."""
    from evaluation.matching import (MAX_MOTION_FRAMES_EXCLUSIVE, MIN_MOTION_FRAMES, EvaluatorError, process_text,
                                     repeated_matching)

    files, evaluator, vocabulary, norm = inputs.evaluator_files, inputs.evaluator, inputs.vocabulary, inputs.norm
    try:
        features = [folder.features(clip) for clip in clips]
        odd = [c.name for c, f in zip(clips, features)
               if not MIN_MOTION_FRAMES <= len(f) < MAX_MOTION_FRAMES_EXCLUSIVE]
        if odd:
            notes.append(f"{len(odd)} clip(s) outside the published evaluation's 40..199 frames (scored all the "
                         f"same): {list_ids(odd)}")
        motions = evaluator.embed_motions(features, norm)
        # The references' row: each clip's lines, one drawn per run.
        all_lines = [evaluator.embed_texts(vocabulary, [list(line.tokens or ()) for line in clip.lines])
                     for clip in clips]

        def draw(rng: np.random.Generator) -> np.ndarray:
            return np.stack([lines[rng.integers(len(lines))] for lines in all_lines])

        rows = {"references": repeated_matching(motions, None, seed=args.seed, replications=args.replications,
                                                direction=args.direction, choose=draw)}
        if inputs.nlp is not None:
            tagged = [process_text(inputs.nlp, text) for text in predictions]
            texts = evaluator.embed_texts(vocabulary, tagged)
            rows = {"predictions": repeated_matching(motions, texts, seed=args.seed,
                                                     replications=args.replications, direction=args.direction),
                    **rows}
    except EvaluatorError as exc:
        raise M2TInputError(str(exc)) from None
    return {"rows": rows, "checkpoint": str(files.checkpoint), "vocabulary": str(files.vocabulary),
            "normalisation": norm.source, "epoch": evaluator.epoch}


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
EPILOG = """\
examples:
  python -m evaluation.m2t --predictions results/synthetic/predictions/test_best.json \\
      --data results/synthetic/data/test.pkl --references raw
  python -m evaluation.m2t --predictions P.json --data HumanML3D --references tokenised \\
      --evaluator t2m_evaluator --spacy-model en_core_web_sm --bertscore-model models/roberta-large

exit status: 0 when every figure asked for was computed (figures whose inputs were not given are
named, not computed, unless --require-all); 2 on a missing or unusable file or flag (one line)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.m2t", epilog=EPILOG,
                                     description="Motion-to-text figures as the HumanML3D papers report them "
                                                 "(BLEU@1/@4, ROUGE-L, CIDEr, BERTScore, R-Precision, MM-Dist).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path, metavar="P.json", help="{clip id: caption}")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR",
                        help="a HumanML3D folder (texts/, new_joint_vecs/) or a dataset pickle/JSON with labels")
    parser.add_argument("--references", required=True, choices=REFERENCE_CONVENTIONS,
                        help="tokenised: the tokens field of texts/*.txt, words only (TM2T, MotionGPT); "
                             "raw: the caption text (MotionGPT3 and later). Figures in the two are not comparable")
    parser.add_argument("--scorer", choices=SCORERS, default="metricverse",
                        help="metricverse: nlg-metricverse's definitions (MotionGPT, MotionGPT3; default); "
                             "nlgeval: COCO scorers on white-space tokens (TM2T)")
    parser.add_argument("--prediction-form", choices=PREDICTION_FORMS, default="as-given",
                        help="as-given (default) or tokenised: processed like the tokens field (needs --spacy-model)")
    parser.add_argument("--bertscore-model", type=Path, metavar="DIR", help="local BERTScore model (roberta-large)")
    parser.add_argument("--bertscore-layers", type=int, metavar="N", help="its layer (default: bert-score's for the name)")
    parser.add_argument("--bertscore-baseline", type=Path, metavar="TSV", help="baseline table (default: bert-score's)")
    parser.add_argument("--evaluator", type=Path, metavar="DIR",
                        help="the released text-motion matching evaluator (text_mot_match/model/finest.tar, "
                             "glove/our_vab_*)")
    parser.add_argument("--evaluator-meta", type=Path, metavar="DIR",
                        help="folder with the evaluator's mean_eval.npy / std_eval.npy (default: inside --evaluator)")
    parser.add_argument("--spacy-model", metavar="NAME", help="spaCy pipeline that tags the predictions (en_core_web_sm)")
    parser.add_argument("--direction", choices=("motion-to-text", "text-to-motion"), default="motion-to-text",
                        help="what R-Precision ranks: for each motion the texts (TM2T; default) or for each text "
                             "the motions (MotionGPT)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random groups of 32 (default 0)")
    parser.add_argument("--replications", type=int, default=1, help="runs with seeds seed, seed+1, ... (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device for the evaluator (default cpu)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with a dataset file: leave out its clips that have no prediction")
    parser.add_argument("--require-all", action="store_true",
                        help="an error (exit 2) instead of a 'not computed' line when a figure's inputs are not given")
    parser.add_argument("--out", type=Path, metavar="M.json", help="also write the figures as JSON")
    return parser


def _load_clips(args: argparse.Namespace, predictions: Mapping[str, Any]) -> tuple[list[Clip], Any, list[str]]:
    notes: list[str] = []
    if args.data.is_dir():
        folder = HumanML3DFolder(args.data)
        found = {name: folder.clip(name) for name in predictions}
        unknown = [name for name, clip in found.items() if clip is None]
        if unknown:
            raise M2TInputError(f"--data {args.data}: no caption lines for {len(unknown)} predicted id(s): "
                                f"{list_ids(unknown)} (ids: <id>, <id>#<start>-<end> or <id>_<from>_<to>)")
        coverage = folder.coverage(list(predictions))
        if coverage:
            notes.append(coverage)
        return [found[name] for name in predictions], folder, notes
    if not args.data.is_file():
        raise M2TInputError(f"--data {args.data}: no such folder or file")
    records = read_records(args.data)
    unknown = [name for name in predictions if name not in records]
    if unknown:
        raise M2TInputError(f"--data {args.data}: {len(unknown)} predicted id(s) are not in it: {list_ids(unknown)}")
    unpredicted = [name for name in records if name not in predictions]
    if unpredicted and not args.allow_missing:
        raise M2TInputError(f"--data {args.data}: {len(unpredicted)} clip(s) have no prediction: "
                            f"{list_ids(unpredicted)} (--allow-missing leaves them out)")
    if unpredicted:
        notes.append(f"left out {len(unpredicted)} clip(s) without a prediction")
    return [records[name] for name in predictions], None, notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    from evaluation.score import InputFileError, load_predictions

    if args.replications < 1:
        raise M2TInputError("--replications must be at least 1")
    try:
        raw_predictions = load_predictions(args.predictions)
    except InputFileError as exc:
        raise M2TInputError(f"--predictions {exc}") from None
    predictions = {str(k): v for k, v in raw_predictions.items()}
    for name, text in predictions.items():
        if not isinstance(text, str) or not text.strip():
            raise M2TInputError(f"--predictions {args.predictions}: the caption of {name!r} is not a non-empty text")
    if not predictions:
        raise M2TInputError(f"--predictions {args.predictions}: no captions")
    clips, folder, notes = _load_clips(args, predictions)
    references = [three_references([line.reference(args.references) for line in clip.lines]) for clip in clips]
    inputs = resolve_inputs(args, folder is not None, folder is not None and folder.has_features_dir)

    texts = list(predictions.values())
    if args.prediction_form == "tokenised":
        from evaluation.matching import process_text

        texts = [" ".join(t.split("/")[0] for t in process_text(inputs.nlp, text)) for text in texts]
    figures: dict[str, float] = text_figures(list(predictions), texts, references, args.scorer, notes)
    bertscore_label = None
    if args.bertscore_model is not None:
        bertscore_label, figures[BERTSCORE] = bertscore_figure(texts, references, args.bertscore_model,
                                                               args.bertscore_layers, args.bertscore_baseline, notes)
    matching = None
    if inputs.evaluator is not None:
        matching = matching_rows(folder, clips, list(predictions.values()), inputs, args, notes)

    document = {
        "predictions": str(args.predictions), "data": str(args.data), "clips": len(clips),
        "references": args.references, "references_note": CONVENTION_NOTES[args.references],
        "references_per_clip": "the first 3 of each clip (file order), fewer repeated up to 3",
        "prediction_form": args.prediction_form, "scorer": args.scorer, "scorer_note": SCORER_NOTES[args.scorer],
        "figures": figures, "bertscore": bertscore_label, "matching": matching,
        "not_computed": inputs.needs, "notes": list(dict.fromkeys(notes)),
    }
    print(format_report(document, args))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return document


def format_report(document: Mapping[str, Any], args: argparse.Namespace) -> str:
    lines = [f"{document['clips']} clips from {document['data']}",
             f"references: {document['references']} ({document['references_note']}); "
             f"{document['references_per_clip']}",
             f"predictions: {document['prediction_form']}; scorer: {document['scorer']} ({document['scorer_note']})",
             "", f"{'figure':<22}  {'value':>8}  {'x100':>7}"]
    for name, value in document["figures"].items():
        label = document["bertscore"] if name == BERTSCORE else name
        lines.append(f"{label:<22}  {value:>8.4f}  {100 * value:>7.2f}")
    matching = document["matching"]
    if matching is not None:
        lines += ["", f"text-motion matching ({args.direction}, groups of 32, seed {args.seed}, "
                      f"{args.replications} replication(s); evaluator {matching['checkpoint']})",
                  f"{'row':<12}  {'clips':>5}  " + "  ".join(f"{n:>17}" for n in MATCHING_FIGURES)]
        for row, result in matching["rows"].items():
            cells = "  ".join(f"{result['mean'][n]:>8.4f} ±{result['interval'][n]:.4f}"
                              if args.replications > 1 else f"{result['mean'][n]:>17.4f}" for n in MATCHING_FIGURES)
            lines.append(f"{row:<12}  {result['clips']:>5}  {cells}")
            if result["left_out"]:
                lines.append(f"  ({result['left_out']} clip(s) beyond the last full group of 32 left out)")
    if document["not_computed"]:
        lines += ["", "not computed (inputs the user must bring):"]
        for figure, needs in document["not_computed"].items():
            lines.append(f"  {figure}: needs " + "; ".join(needs))
    lines += [f"note: {note}" for note in document["notes"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CaptionInputError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
