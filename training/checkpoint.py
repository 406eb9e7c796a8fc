"""Picking the checkpoint a run resumes from: the newest one that loads cleanly.

Writing and reading one file (atomically, with ``weights_only``) is :mod:`core.io`'s.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from core.io import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)


def natural_key(name: str) -> list:
    """Sort key that orders 'epoch_2' before 'epoch_10'."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def resume_candidates(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints to try on resume, best first: ``last.pt`` then ``epoch_NNNN.pt`` newest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    epochs = sorted(ckpt_dir.glob("epoch_*.pt"), key=lambda p: natural_key(p.name), reverse=True)
    last = [ckpt_dir / "last.pt"] if (ckpt_dir / "last.pt").is_file() else []
    return last + epochs


def load_first_good(candidates: list[Path], map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """Load the first candidate that reads cleanly, warning about each damaged one it passes.

    Returns None when there are no candidates; raises CheckpointError when all are damaged.
    """
    if not candidates:
        return None
    failures: list[str] = []
    for path in candidates:
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            failures.append(str(exc))
            continue
        if failures:
            log.warning("skipped damaged checkpoint(s): %s; resuming from %s instead",
                        " | ".join(failures), path)
        return path, state
    raise CheckpointError("no usable checkpoint to resume from: " + " | ".join(failures)
                          + ". Move the damaged files away to start the run afresh.")
