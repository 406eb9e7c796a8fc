"""Caption evaluation: the COCO caption metrics (pycocoevalcap's numbers) with or without Java.

    from evaluation import score_captions, score_with_breakdown
    score_captions({"clip": "a man walks"}, {"clip": ["a man is walking", "someone walks"]})
    overall, by_type = score_with_breakdown(predictions, references, {"clip": "walk"})

Command line: ``python -m evaluation.score --predictions P.json --references R.pkl``
(``evaluation.score`` is that command's module, not a function).
"""
from evaluation.metrics import (CaptionInputError, JavaNotFoundError, MetricSkippedWarning, MissingIdsError,
                                close_meteor, score_captions, score_with_breakdown)

__all__ = ["score_captions", "score_with_breakdown", "close_meteor", "CaptionInputError", "MissingIdsError",
           "JavaNotFoundError", "MetricSkippedWarning"]
