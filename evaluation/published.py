"""The published protocol: caption metrics as the CoachMe paper computes them for its BX table.

The CoachMe paper (the successor of the system this repository re-creates) scores its boxing
results with the ``nlg-metricverse`` library (version 0.9.9 read for this module):
``NLGMetricverse([bleu max_order=1, bleu max_order=4, rouge, cider])(predictions, references,
reduce_fn="max")``, reading ``bleu_1``/``bleu_4`` ``score``, ``rouge`` ``rougeL`` and ``cider``
``score``, plus BERTScore from the ``bert-score`` package (``lang="en"``, ``idf=True``,
``rescale_with_baseline=True``, mean F1).  :func:`score_published` re-computes those numbers
with this project's own code (numpy and the standard library only), so a figure of ours can
stand beside the paper's table.  It is a second protocol, not a replacement: the project's
headline figures stay the COCO ones of :func:`evaluation.score_captions`.

What each metric is in that library, and so here (``reduce_fn="max"`` does NOT apply to all):

* **BLEU-1, BLEU-4**: *corpus* BLEU (the tensorflow/nmt ``compute_bleu`` the library loads),
  no smoothing, uniform weights over orders 1..n.  The references of a clip are used *jointly*
  (n-gram counts clipped by the maximum count in any reference), the brevity penalty compares
  the total hypothesis length with the sum of each clip's *shortest* reference length (COCO
  uses the closest length).  ``reduce_fn`` is ignored.  Tokens: ASCII punctuation
  (``string.punctuation``) replaced by spaces, lower-cased, split on white space; other
  characters (such as the typographic apostrophe) stay inside tokens.
* **ROUGE-L**: the ``rouge_score`` package's ``rougeL`` F-measure (longest common
  subsequence, not ``rougeLsum``, no stemming), computed against each reference *separately*;
  the best reference counts (this is where ``reduce_fn="max"`` acts), then the clips are
  averaged.  Tokens: lower-cased, every run of characters outside ``[a-z0-9]`` is a separator.
  The library does not report the plain mean: it reports the median of 1000 bootstrap
  resamples of that mean (``rouge_score``'s ``BootstrapAggregator``, ``mid``), seeded from
  numpy's global state, so the paper's value moves by about 1e-3 between runs on 41 BX clips.
  This module returns the mean, the centre those runs scatter around.
* **CIDEr**: CIDEr-D's formula as in pycocoevalcap (tf-idf n-grams 1..4, clipped, Gaussian
  length penalty with sigma 6, times 10) with the document frequencies of the scored set's
  references, averaged over a clip's references (not their maximum: ``reduce_fn`` is ignored)
  and then over clips.  Unlike pycocoevalcap, the raw texts are split on white space with no
  other change: case and punctuation stay ("Keep" and "keep," are different words).  With a
  single clip the library sets ``log(number of clips)`` to 1 instead of 0, and so does this
  module.  (When *every* clip has exactly one reference the library scores only the first
  prediction, against all references pooled; this module scores every clip instead.)
* **BERTScore** (only with ``bertscore_model``, a local model folder, and the ``bert-score``
  package installed; it is not a project requirement): ``bert_score.score`` with idf weights
  from the references, the best reference per clip, rescaled with the model's baseline and
  averaged (mean F1).  The paper used ``roberta-large`` at layer 17; its baseline table ships
  with ``bert-score`` and is found when the folder is named ``roberta-large``.  The result is
  reported as ``"BERTScore-F1 (idf, rescaled)"`` or, without a baseline, ``"BERTScore-F1 (idf,
  not rescaled)"``.

Scale: every value is returned as nlg-metricverse returns it: BLEU, ROUGE-L and BERTScore as
fractions in [0, 1], CIDEr on its own 0..10 scale.  The paper prints them multiplied by 100
(its BX table: BLEU-4 12.3 for CoachMe, 9.4 for the basic variant); the command prints both.

Empty predictions: rejected, as by :func:`evaluation.score_captions`, unless
``allow_empty_predictions=True``; then a prediction that is exactly ``""`` is left out of
every metric as the library does (it counts it in ``empty_items``), with a
:class:`~evaluation.metrics.MetricSkippedWarning`.

Command line: ``python -m evaluation.published --predictions P.json --references R.pkl``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import string
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from evaluation.metrics import (CaptionInputError, MetricSkippedWarning, list_ids, score_captions,
                                validate_inputs)

PUBLISHED_NAMES = ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr")
BERTSCORE_RESCALED = "BERTScore-F1 (idf, rescaled)"
BERTSCORE_NOT_RESCALED = "BERTScore-F1 (idf, not rescaled)"
SCALE_NOTE = ("values are fractions (BLEU, ROUGE-L, BERTScore in 0..1; CIDEr on its 0..10 scale); "
              "the CoachMe paper prints them x100")

CIDER_ORDER = 4
CIDER_SIGMA = 6.0

_ASCII_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


# ------------------------------------------------------------------------------------------
# Tokenisation (one rule per metric, as the library has)
# ------------------------------------------------------------------------------------------
def bleu_tokens(text: str) -> list[str]:
    """BLEU's tokens: ASCII punctuation becomes a space, then lower case, split on white space."""
    spaced = _ASCII_PUNCTUATION.sub(" ", text)
    return " ".join(spaced.split()).lower().split()


def rouge_tokens(text: str) -> list[str]:
    """ROUGE-L's tokens: lower case; anything outside ``[a-z0-9]`` separates tokens."""
    return [token for token in _NOT_ALPHANUMERIC.sub(" ", text.lower()).split() if token]


def cider_tokens(text: str) -> list[str]:
    """CIDEr's tokens: the raw text split on white space (case and punctuation kept)."""
    return text.split()


# ------------------------------------------------------------------------------------------
# BLEU (corpus level, references used jointly)
# ------------------------------------------------------------------------------------------
def _ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start:start + order])] += 1
    return counts


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
                max_order: int = 4) -> dict[str, Any]:
    """Corpus BLEU on token lists, no smoothing: ``{"score", "precisions", "brevity_penalty",
    "length_ratio", "translation_length", "reference_length"}``.

    Matches are clipped by the largest count of the n-gram in any one reference of the clip;
    the reference length of a clip is its shortest reference.  A corpus whose hypotheses or
    references have no tokens at all scores 0 (the library would divide by zero).
    """
    matches = [0] * max_order
    possible = [0] * max_order
    hypothesis_length = reference_length = 0
    for hypothesis, refs in zip(hypotheses, references):
        hypothesis_length += len(hypothesis)
        reference_length += min(len(ref) for ref in refs)
        best_counts: Counter = Counter()
        for ref in refs:
            best_counts |= _ngram_counts(ref, max_order)
        for ngram, count in (_ngram_counts(hypothesis, max_order) & best_counts).items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(hypothesis) - order + 1 > 0:
                possible[order - 1] += len(hypothesis) - order + 1
    precisions = [matches[i] / possible[i] if possible[i] > 0 else 0.0 for i in range(max_order)]
    if min(precisions) > 0:
        geometric_mean = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions))
    else:
        geometric_mean = 0.0
    if hypothesis_length == 0 or reference_length == 0:
        ratio, penalty = 0.0, 0.0
    else:
        ratio = hypothesis_length / reference_length
        penalty = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return {"score": geometric_mean * penalty, "precisions": precisions, "brevity_penalty": penalty,
            "length_ratio": ratio, "translation_length": hypothesis_length,
            "reference_length": reference_length}


# ------------------------------------------------------------------------------------------
# ROUGE-L (best single reference)
# ------------------------------------------------------------------------------------------
def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure of one hypothesis against one reference (0 when either has no token)."""
    hyp, ref = rouge_tokens(hypothesis), rouge_tokens(reference)
    if not hyp or not ref:
        return 0.0
    common = lcs_length(ref, hyp)
    precision, recall = common / len(hyp), common / len(ref)
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l_best(hypothesis: str, references: Sequence[str]) -> float:
    """ROUGE-L against the best single reference (the library's ``reduce_fn="max"``)."""
    return max(rouge_l(hypothesis, ref) for ref in references)


# ------------------------------------------------------------------------------------------
# CIDEr (raw white-space tokens, document frequencies from the scored references)
# ------------------------------------------------------------------------------------------
def _cider_vector(counts: Mapping[tuple, int], document_frequency: Mapping[tuple, float],
                  log_clips: float) -> tuple[list[dict], list[float], int]:
    """tf-idf weights per n-gram order, their norms, and the bigram count (the length the
    Gaussian penalty compares, as in pycocoevalcap)."""
    vectors: list[dict] = [{} for _ in range(CIDER_ORDER)]
    norms = [0.0] * CIDER_ORDER
    length = 0
    for ngram, term_frequency in counts.items():
        order = len(ngram) - 1
        weight = float(term_frequency) * (log_clips - math.log(max(1.0, document_frequency.get(ngram, 0.0))))
        vectors[order][ngram] = weight
        norms[order] += weight ** 2
        if order == 1:
            length += term_frequency
    return vectors, [math.sqrt(n) for n in norms], length


def _cider_similarity(hyp: tuple[list[dict], list[float], int], ref: tuple[list[dict], list[float], int]
                      ) -> list[float]:
    hyp_vectors, hyp_norms, hyp_length = hyp
    ref_vectors, ref_norms, ref_length = ref
    penalty = math.exp(-(float(hyp_length - ref_length) ** 2) / (2 * CIDER_SIGMA ** 2))
    values = []
    for order in range(CIDER_ORDER):
        value = 0.0
        for ngram, weight in hyp_vectors[order].items():
            ref_weight = ref_vectors[order].get(ngram, 0.0)
            value += min(weight, ref_weight) * ref_weight
        if hyp_norms[order] != 0 and ref_norms[order] != 0:
            value /= hyp_norms[order] * ref_norms[order]
        values.append(value * penalty)
    return values


def cider_per_clip(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """CIDEr of each clip (mean over n = 1..4 of the summed similarities / number of references,
    times 10), with document frequencies counted over these clips' references."""
    hyp_counts = [_ngram_counts(cider_tokens(h), CIDER_ORDER) for h in hypotheses]
    ref_counts = [[_ngram_counts(cider_tokens(r), CIDER_ORDER) for r in refs] for refs in references]
    document_frequency: dict[tuple, float] = defaultdict(float)
    for refs in ref_counts:
        for ngram in {ngram for counts in refs for ngram in counts}:
            document_frequency[ngram] += 1
    # The library's choice for a single clip (pycocoevalcap would use log(1) = 0).
    log_clips = 1.0 if len(ref_counts) == 1 else math.log(float(len(ref_counts)))
    scores = []
    for hyp, refs in zip(hyp_counts, ref_counts):
        hyp_vector = _cider_vector(hyp, document_frequency, log_clips)
        summed = [0.0] * CIDER_ORDER
        for ref in refs:
            for order, value in enumerate(_cider_similarity(hyp_vector, _cider_vector(ref, document_frequency,
                                                                                      log_clips))):
                summed[order] += value
        scores.append(sum(summed) / CIDER_ORDER / len(refs) * 10.0)
    return scores


# ------------------------------------------------------------------------------------------
# BERTScore (optional: a local model folder and the bert-score package)
# ------------------------------------------------------------------------------------------
def _layers_from_config(model_dir: Path) -> int | None:
    config = model_dir / "config.json"
    if config.is_file():
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
        if isinstance(layers, int):
            return layers
    return None


def published_bertscore(predictions: Sequence[str], references: Sequence[Sequence[str]],
                        model_dir: str | Path, notes: list[str], *, num_layers: int | None = None,
                        baseline: str | Path | None = None) -> tuple[str, float] | None:
    """``(label, mean F1)`` with idf weights and the best reference per clip, rescaled when a
    baseline table is found; ``None`` with a note when the folder or ``bert-score`` is missing.

    ``num_layers`` defaults to bert-score's tuned layer for a folder named like a known model
    (17 for ``roberta-large``, the paper's), else to all layers of the model.  ``baseline``
    defaults to the table bert-score ships for that name (``rescale_baseline/en/<name>.tsv``).
    """
    from evaluation.metrics import bert_score_module

    bert_score = bert_score_module(model_dir, notes)
    if bert_score is None:
        return None
    model_dir = Path(model_dir)
    from bert_score.utils import model2layers  # type: ignore[import-not-found]

    if num_layers is None:
        num_layers = model2layers.get(model_dir.name) or _layers_from_config(model_dir)
    if baseline is None:
        shipped = Path(bert_score.__file__).resolve().parent / "rescale_baseline" / "en" / f"{model_dir.name}.tsv"
        baseline = shipped if shipped.is_file() else None
    elif not Path(baseline).is_file():
        notes.append(f"BERTScore baseline {str(baseline)!r} does not exist; BERTScore is not rescaled")
        baseline = None
    if baseline is None:
        notes.append(f"no BERTScore baseline table for {model_dir.name!r}; reporting {BERTSCORE_NOT_RESCALED}, "
                     "which is not comparable with the paper's rescaled figure")
    _, _, f1 = bert_score.score(list(predictions), [list(refs) for refs in references], model_type=str(model_dir),
                                num_layers=num_layers, idf=True, lang="en", verbose=False,
                                rescale_with_baseline=baseline is not None,
                                baseline_path=None if baseline is None else str(baseline))
    return (BERTSCORE_RESCALED if baseline is not None else BERTSCORE_NOT_RESCALED), float(f1.mean())


# ------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------
def _warn(notes: Sequence[str]) -> None:
    for note in dict.fromkeys(notes):
        # 1 = here, 2 = published_details, 3 = its caller (score_published when called through it)
        warnings.warn(note, MetricSkippedWarning, stacklevel=3)


def published_details(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
                      bertscore_model: str | Path | None = None, bertscore_layers: int | None = None,
                      bertscore_baseline: str | Path | None = None,
                      allow_empty_predictions: bool = False) -> dict[str, Any]:
    """:func:`score_published`'s table with its workings: ``{"scores", "bleu" (the BLEU-1 and
    BLEU-4 statistics), "per_clip" ({id: {"ROUGE-L", "CIDEr"}}), "left_out_empty" (ids),
    "scale"}``.  Arguments, warnings and errors are those of :func:`score_published`."""
    ids = validate_inputs(predictions, references, allow_empty_predictions=allow_empty_predictions)
    notes: list[str] = []
    empty = [i for i in ids if predictions[i] == ""]
    if empty:
        notes.append(f"{len(empty)} empty prediction(s) left out of every metric, as nlg-metricverse does: "
                     + list_ids(empty))
    ids = [i for i in ids if predictions[i] != ""]
    if not ids:
        raise CaptionInputError("every prediction is empty: nothing to score")
    hyps = [predictions[i] for i in ids]
    refs = [list(references[i]) for i in ids]

    hyp_tokens = [bleu_tokens(h) for h in hyps]
    ref_tokens = [[bleu_tokens(r) for r in group] for group in refs]
    bleu = {f"BLEU-{n}": corpus_bleu(hyp_tokens, ref_tokens, max_order=n) for n in (1, 4)}
    rouge = [rouge_l_best(h, group) for h, group in zip(hyps, refs)]
    cider = cider_per_clip(hyps, refs)
    scores = {"BLEU-1": bleu["BLEU-1"]["score"], "BLEU-4": bleu["BLEU-4"]["score"],
              "ROUGE-L": sum(rouge) / len(rouge), "CIDEr": sum(cider) / len(cider)}
    if bertscore_model is not None:
        bert = published_bertscore(hyps, refs, bertscore_model, notes, num_layers=bertscore_layers,
                                   baseline=bertscore_baseline)
        if bert is not None:
            scores[bert[0]] = bert[1]
    _warn(notes)
    return {"scores": scores, "bleu": bleu,
            "per_clip": {i: {"ROUGE-L": r, "CIDEr": c} for i, r, c in zip(ids, rouge, cider)},
            "left_out_empty": empty, "scale": SCALE_NOTE}


def score_published(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
                    bertscore_model: str | Path | None = None, bertscore_layers: int | None = None,
                    bertscore_baseline: str | Path | None = None,
                    allow_empty_predictions: bool = False) -> dict[str, float]:
    """The CoachMe paper's metrics (nlg-metricverse's definitions; see the module docstring).

    Args:
        predictions: ``{clip id: generated text}``.
        references: ``{clip id: [reference texts]}``.
        bertscore_model: a local model folder for BERTScore (needs ``bert-score``; skipped with
            a :class:`~evaluation.metrics.MetricSkippedWarning` otherwise).
        bertscore_layers: the model layer BERTScore reads (default: bert-score's tuned layer
            for the folder's name, else the last layer).
        bertscore_baseline: a baseline table for rescaling (default: the one bert-score ships
            for the folder's name, if any).
        allow_empty_predictions: leave ``""`` predictions out (as the library does) instead
            of raising.

    Returns:
        ``{"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"}`` plus, with a model, ``"BERTScore-F1 (idf,
        rescaled)"`` (or ``"... not rescaled)"``), as fractions (CIDEr on its 0..10 scale); the
        paper prints them x100.

    Raises:
        CaptionInputError: bad input, naming the id (a ``ValueError``).
    """
    return published_details(predictions, references, bertscore_model=bertscore_model,
                             bertscore_layers=bertscore_layers, bertscore_baseline=bertscore_baseline,
                             allow_empty_predictions=allow_empty_predictions)["scores"]


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
DESCRIPTION = """\
Score generated captions with the CoachMe paper's protocol (nlg-metricverse's BLEU-1, BLEU-4,
ROUGE-L with the best single reference, CIDEr, optionally BERTScore with idf and baseline
rescaling), re-computed by this project's code.  Values are fractions; the x100 column is the
paper's scale.  --with-coco adds this project's COCO figures (evaluation.score) beside them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.published", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, type=Path, metavar="P.json",
                        help="generated captions: {video_name: text} or a list of {video_name, caption|text}")
    parser.add_argument("--references", required=True, type=Path, metavar="R.pkl|R.json",
                        help="dataset pickle or released JSON with video_name and labels")
    parser.add_argument("--out", type=Path, metavar="M.json", help="also write the figures as JSON")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score only the clips present on both sides (default: one-sided ids are an error)")
    parser.add_argument("--allow-empty", action="store_true",
                        help='leave "" predictions out, as nlg-metricverse does (default: an error)')
    parser.add_argument("--with-coco", action="store_true",
                        help="also compute the project's COCO protocol (pure-Python tokenizer, no METEOR)")
    parser.add_argument("--bertscore-model", type=Path, metavar="DIR",
                        help="local model folder for BERTScore (the paper's: roberta-large; needs bert-score)")
    parser.add_argument("--bertscore-layers", type=int, metavar="N", help="model layer for BERTScore")
    parser.add_argument("--bertscore-baseline", type=Path, metavar="TSV", help="baseline table for rescaling")
    return parser


def format_comparison(published: Mapping[str, float], coco: Mapping[str, float] | None) -> str:
    """One row per published metric: the fraction, x100, and the COCO value when given."""
    name_width = max(len(name) for name in published)
    header = f"{'metric':<{name_width}}  {'published':>10}  {'x100':>8}" + (f"  {'COCO':>10}" if coco else "")
    lines = [header, "-" * len(header)]
    for name, value in published.items():
        row = f"{name:<{name_width}}  {value:>10.4f}  {100 * value:>8.2f}"
        if coco is not None:
            row += f"  {coco[name]:>10.4f}" if name in coco else f"  {'-':>10}"
        lines.append(row)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read, score, print (and write with --out); returns the JSON document."""
    from evaluation.score import load_predictions, load_references, restrict_to_common

    predictions = load_predictions(args.predictions)
    references, _ = load_references(args.references)
    predictions, references, missing = restrict_to_common(predictions, references, allow_missing=args.allow_missing)
    for key, what in (("only_in_predictions", "predicted clip(s) without references"),
                      ("only_in_references", "reference clip(s) without a prediction")):
        if missing[key]:
            print(f"left out {len(missing[key])} {what}: {list_ids(missing[key])}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricSkippedWarning)
        details = published_details(predictions, references, bertscore_model=args.bertscore_model,
                                    bertscore_layers=args.bertscore_layers,
                                    bertscore_baseline=args.bertscore_baseline,
                                    allow_empty_predictions=args.allow_empty)
        coco = None
        if args.with_coco:
            left_out = set(details["left_out_empty"])
            scored = {i: p for i, p in predictions.items() if i not in left_out}
            coco = score_captions(scored, {i: references[i] for i in scored}, use_java=False)
    notes = [str(w.message) for w in caught if issubclass(w.category, MetricSkippedWarning)
             and not str(w.message).startswith("METEOR left out")]
    print(f"{len(details['per_clip'])} clips; published protocol (nlg-metricverse definitions); {SCALE_NOTE}")
    print(format_comparison(details["scores"], coco))
    for note in notes:
        print(f"note: {note}")
    document = {"predictions": str(args.predictions), "references": str(args.references),
                "protocol": "nlg-metricverse 0.9.9 definitions (CoachMe paper), re-computed",
                "scale": SCALE_NOTE, "published": details["scores"], "coco": coco,
                "bleu": details["bleu"], "per_clip": {str(k): v for k, v in details["per_clip"].items()},
                "left_out_empty": details["left_out_empty"], "left_out": missing, "notes": notes}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CaptionInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
