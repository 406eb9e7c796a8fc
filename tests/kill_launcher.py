"""Run ``train_t5_stagcn.py`` and SIGKILL it at one planned point (for the SIGKILL test).

    PYTHONPATH=. MOTION2TEXT_KILL=POINT python tests/kill_launcher.py --cfg_file ... key=value ...

POINT is one of
    step:N            after the N-th training step of this process
    eval:N            at the start of the N-th caption generation (an evaluation) of this process
    metrics:N         right after the N-th metrics.jsonl line is appended (before the checkpoint)
    write:NAME:N      half-way through the N-th atomic write of a file whose name contains NAME
                      (config.yaml, tokenizer, last.pt, epoch_, best.pt, predictions ...): the
                      temporary file holds half the bytes when the process dies
The process kills itself, so every planned kill lands exactly where planned; the test checks the
exit status (-9) to know that it did.
"""
from __future__ import annotations

import io
import os
import runpy
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after_calls(n: int, wrapped, before: bool = False):
    calls = [0]

    def call(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == n:
            die()
        result = wrapped(*args, **kwargs)
        if calls[0] == n:
            die()
        return result
    return call


def kill_half_way_through_writes(name: str, n: int) -> None:
    from core import io as checkpoint

    original, calls = checkpoint.atomic_write, [0]

    def atomic_write(path, write, mode="wb"):
        if name not in Path(path).name and name not in str(path):
            return original(path, write, mode)
        calls[0] += 1
        if calls[0] != n:
            return original(path, write, mode)

        def half(f):
            buffer = io.BytesIO() if "b" in mode else io.StringIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: max(1, len(data) // 2)])
            f.flush()
            os.fsync(f.fileno())
            die()
        return original(path, half, mode)
    checkpoint.atomic_write = atomic_write


def plan(point: str) -> None:
    from training import evaluate, run
    from training.trainer import Trainer

    kind, *rest = point.split(":")
    if kind == "step":
        Trainer.train_step = after_calls(int(rest[0]), Trainer.train_step)
    elif kind == "eval":
        evaluate.generate_captions = after_calls(int(rest[0]), evaluate.generate_captions, before=True)
    elif kind == "metrics":
        run.append_metrics = after_calls(int(rest[0]), run.append_metrics)
    elif kind == "write":
        kill_half_way_through_writes(rest[0], int(rest[1]))
    else:
        raise SystemExit(f"MOTION2TEXT_KILL={point!r}: unknown kill point")


if __name__ == "__main__":
    plan(os.environ["MOTION2TEXT_KILL"])
    import train_t5_stagcn as trainer
    try:
        trainer.main(sys.argv[1:])
    finally:
        from training import distributed
        distributed.shutdown()
