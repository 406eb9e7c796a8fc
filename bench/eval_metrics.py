"""Benchmark: time to score N clips (template captions, 3 references each) with and without Java.

    python -m bench.eval_metrics [--clips 5000] [--refs 3] [--out bench/results/eval_metrics.json]

Prints a table and writes the figures as JSON.  Not a test: nothing here gates on a time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

from core.paths import shown
from evaluation import metrics
from evaluation.metrics import MetricSkippedWarning, close_meteor, java_available, score_captions
from tests.caption_templates import synthetic_case

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def tokenizer_rows(predictions: dict, references: dict, with_java: bool) -> list[dict]:
    """Tokenising both sides: pure Python against pycocoevalcap's Java PTBTokenizer."""
    rows = []
    for name, use_java in (("tokenize, Python", False), ("tokenize, Java", True)):
        if use_java and not with_java:
            continue
        seconds, _ = timed(lambda: (metrics.tokenize({k: list(v) for k, v in references.items()}, use_java=use_java),
                                    metrics.tokenize({k: [v] for k, v in predictions.items()}, use_java=use_java)))
        rows.append({"step": name, "seconds": seconds})
    return rows


def score_rows(predictions: dict, references: dict, with_java: bool) -> tuple[list[dict], dict]:
    """Whole ``score_captions()`` calls: without Java, with Java from a cold METEOR JVM, and warm."""
    rows, values = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricSkippedWarning)
        seconds, values["without_java"] = timed(score_captions, predictions, references, use_java=False)
    rows.append({"step": "score_captions(), no Java (BLEU, ROUGE-L, CIDEr)", "seconds": seconds})
    if with_java:
        close_meteor()
        seconds, values["with_java"] = timed(score_captions, predictions, references, use_java=True)
        rows.append({"step": "score_captions(), Java, first call (METEOR JVM start)", "seconds": seconds})
        seconds, _ = timed(score_captions, predictions, references, use_java=True)
        rows.append({"step": "score_captions(), Java, later call (JVM reused)", "seconds": seconds})
        close_meteor()
    return rows, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "eval_metrics.json")
    args = parser.parse_args(argv)

    predictions, references = synthetic_case(args.seed, args.clips, args.refs)
    with_java = java_available()
    rows = tokenizer_rows(predictions, references, with_java)
    score_part, values = score_rows(predictions, references, with_java)
    rows += score_part

    texts = args.clips * (args.refs + 1)
    print(f"{args.clips} clips x {args.refs} references ({texts} texts), Java {'found' if with_java else 'absent'}")
    print(f"{'step':<56} {'seconds':>9} {'clips/s':>9}")
    for row in rows:
        print(f"{row['step']:<56} {row['seconds']:>9.2f} {args.clips / row['seconds']:>9.0f}")
    if "with_java" in values:
        same = all(abs(values["with_java"][k] - values["without_java"][k]) < 1e-9 for k in values["without_java"])
        print(f"Java and pure-Python scores agree to 1e-9: {same}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "clips": args.clips, "refs_per_clip": args.refs, "seed": args.seed, "java": with_java,
        "python": platform.python_version(), "machine": platform.machine(), "rows": rows, "scores": values,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
