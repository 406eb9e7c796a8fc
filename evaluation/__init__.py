"""Caption evaluation: the COCO caption metrics (pycocoevalcap's numbers) with or without Java.

    from evaluation import score, score_by_group
    score({"clip": "a man walks"}, {"clip": ["a man is walking", "someone walks"]})

Command line: ``python -m evaluation.score --predictions P.json --references R.pkl``.
"""
from evaluation.metrics import (CaptionInputError, JavaNotFoundError, MetricSkippedWarning, MissingIdsError,
                                close_meteor, evaluate, score, score_by_group)

__all__ = ["score", "score_by_group", "evaluate", "close_meteor", "CaptionInputError", "MissingIdsError",
           "JavaNotFoundError", "MetricSkippedWarning"]
