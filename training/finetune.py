"""Finetuning: which checkpoint a run starts from, and loading what fits of it.

The source is a training checkpoint or an export folder (``python -m models.export``). Its weights
come to the new run with plain T5 names and any LoRA adapters merged exactly once
(:func:`load_init_source`); a run with ``model.t5.lora`` then finetunes fresh adapters (``B = 0``)
over them, so in every combination (LoRA or not on either side) the model starts equal to its
source wherever the architectures agree.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from models import lora
from core.io import TMP_PREFIX, CheckpointError, load_checkpoint

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


def choose_init_checkpoint(init_from: str, run_dir: Path) -> tuple[Path, str] | None:
    """The checkpoint to finetune from and why it was chosen, or None (train from scratch).

    ``train.init_from`` (a checkpoint file or an export folder) wins; else ``pretrain_checkpoints/``
    must hold one checkpoint, or a ``best.pt`` among several; anything else is ambiguous and stops
    with the list of files.
    """
    from models import export

    if init_from:
        path = Path(init_from) if Path(init_from).is_absolute() else REPO_ROOT / init_from
        if path.is_dir() and not export.is_export(path):
            raise FileNotFoundError(f"train.init_from: {path} is a folder but not an export "
                                    f"(no {export.MANIFEST}); give a checkpoint file or an export folder")
        if not path.exists():
            raise FileNotFoundError(f"train.init_from: {path} does not exist")
        return path, "train.init_from"
    folder = run_dir / "pretrain_checkpoints"
    files = sorted(p for pattern in ("*.pt", "*.pth", "*.bin") for p in folder.glob(pattern)
                   if p.is_file() and not p.name.startswith(TMP_PREFIX)) if folder.is_dir() else []
    if len(files) == 1:
        return files[0], "the only checkpoint in pretrain_checkpoints/"
    if (folder / "best.pt") in files:
        return folder / "best.pt", f"best.pt preferred among {len(files)} files in pretrain_checkpoints/"
    if files:
        raise SystemExit(f"error: {folder} holds {len(files)} checkpoints ({', '.join(p.name for p in files)}) "
                         "and no best.pt: set train.init_from to the one to finetune from")
    return None


def load_init_source(path: Path) -> dict:
    """The finetuning source as a checkpoint-like dict (``model``, ``config``, ``tokenizer``) whose
    ``model`` has plain T5 names: an export's weights (merged when exported), a plain checkpoint
    as it is, or a LoRA checkpoint rebuilt with its adapters and merged once, on a copy."""
    from configs import schema
    from models import export
    from dataloaders.tokenizer import tokenizer_files_of
    from models.build import model_from_payload

    path = Path(path)
    if export.is_export(path):
        with torch.random.fork_rng(devices=[]):  # building a model draws random weights: keep the stream
            model, cfg = export.load_export(path)
        log.info("finetuning source is an export folder (T5 %s)", export.read_manifest(path)["adapters"])
        return {"model": model.state_dict(), "config": schema.to_dict(cfg),
                "tokenizer": tokenizer_files_of(model.tokenizer)}
    payload = load_checkpoint(path)
    if "model" not in payload:
        raise CheckpointError(f"cannot finetune from {path}: it holds no 'model' weights")
    if lora.has_adapters(payload["model"]):
        with torch.random.fork_rng(devices=[]):
            model, _ = model_from_payload(payload, path)
        payload = {**payload, "model": lora.plain_state_dict(model)}
        log.info("finetuning source has LoRA adapters %s: merged once into its T5 weights",
                 (payload.get("t5") or {}).get("lora"))
    return payload


def source_frame(payload: dict) -> str | None:
    """The body frame (``data.frame``) the finetuning source's clips were in; None when its config
    is not stored. A config written before the key existed reads as ``stored``."""
    from configs import schema

    config = payload.get("config")
    if not isinstance(config, dict):
        return None
    return schema.with_predated(config).get("data", {}).get("frame")


def report_frames(payload: dict, frame: str, source: Path) -> None:
    """Log the body frames of the source's clips and of this run's; a warning when they differ,
    since the encoder then meets another kind of body than it was pretrained on."""
    theirs = source_frame(payload)
    if theirs is None:
        log.info("finetune: %s records no body frame; this run's clips are in the %s frame", source, frame)
    elif theirs == frame:
        log.info("finetune: the source's clips and this run's are in the %s body frame", frame)
    else:
        log.warning("finetune: the source's clips were in the %s body frame, this run's are in the %s one "
                    "(data.frame): the pretrained encoder meets another kind of body", theirs, frame)


def load_finetune_weights(model: torch.nn.Module, incoming: dict, source: Path) -> None:
    """Copy matching tensors; skip those whose shape differs; log missing/unexpected/skipped.

    ``incoming`` has plain T5 names (:func:`load_init_source`). Into a model with LoRA they go to
    the wrapped names (``...q.base_layer.weight``); its adapters keep their fresh initialisation.
    """
    if lora.has_adapters(incoming):
        raise ValueError(f"{source}: finetuning weights still hold LoRA adapters; merge them first "
                         "(training.finetune.load_init_source)")
    own = model.state_dict()
    plain = {key: lora.plain_name(key) for key in own}
    adapters = [key for key, name in plain.items() if name is None]
    own_name = {name: key for key, name in plain.items() if name is not None}
    incoming = {own_name.get(k, k): v for k, v in incoming.items()}
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k, v in incoming.items() if k in own and own[k].shape != v.shape]
    model.load_state_dict(usable, strict=False)
    log.info("finetuning from %s: %d tensors loaded", source, len(usable))
    log.info("finetune: skipped (shape differs): %s",
             [f"{k} {tuple(incoming[k].shape)}->{tuple(own[k].shape)}" for k in skipped] or "none")
    log.info("finetune: missing (kept at init): %s",
             [k for k in own if k not in incoming and k not in adapters] or "none")
    log.info("finetune: unexpected (ignored): %s", [k for k in incoming if k not in own] or "none")
    if adapters:
        log.info("finetune: %d fresh LoRA adapter tensors (B = 0: the model starts as its source)", len(adapters))
