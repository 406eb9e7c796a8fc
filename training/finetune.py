"""Finetuning: which checkpoint a run starts from, and loading what fits of it."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from training import checkpoint as ckpt

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


def choose_init_checkpoint(init_from: str, run_dir: Path) -> tuple[Path, str] | None:
    """The checkpoint to finetune from and why it was chosen, or None (train from scratch).

    ``train.init_from`` wins; else ``pretrain_checkpoints/`` must hold one checkpoint, or a
    ``best.pt`` among several; anything else is ambiguous and stops with the list of files.
    """
    if init_from:
        path = Path(init_from) if Path(init_from).is_absolute() else REPO_ROOT / init_from
        if not path.is_file():
            raise FileNotFoundError(f"train.init_from: {path} does not exist")
        return path, "train.init_from"
    folder = run_dir / "pretrain_checkpoints"
    files = sorted(p for pattern in ("*.pt", "*.pth", "*.bin") for p in folder.glob(pattern)
                   if p.is_file() and not p.name.startswith(ckpt.TMP_PREFIX)) if folder.is_dir() else []
    if len(files) == 1:
        return files[0], "the only checkpoint in pretrain_checkpoints/"
    if (folder / "best.pt") in files:
        return folder / "best.pt", f"best.pt preferred among {len(files)} files in pretrain_checkpoints/"
    if files:
        raise SystemExit(f"error: {folder} holds {len(files)} checkpoints ({', '.join(p.name for p in files)}) "
                         "and no best.pt: set train.init_from to the one to finetune from")
    return None


def load_finetune_weights(model: torch.nn.Module, incoming: dict, source: Path) -> None:
    """Copy matching tensors; skip those whose shape differs; log missing/unexpected/skipped."""
    own = model.state_dict()
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k, v in incoming.items() if k in own and own[k].shape != v.shape]
    model.load_state_dict(usable, strict=False)
    log.info("finetuning from %s: %d tensors loaded", source, len(usable))
    log.info("finetune: skipped (shape differs): %s",
             [f"{k} {tuple(incoming[k].shape)}->{tuple(own[k].shape)}" for k in skipped] or "none")
    log.info("finetune: missing (kept at init): %s", [k for k in own if k not in incoming] or "none")
    log.info("finetune: unexpected (ignored): %s", [k for k in incoming if k not in own] or "none")
