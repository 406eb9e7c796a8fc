"""Evaluation during training: caption a split on every rank, score it, log it (predictions file,
``metrics.jsonl``, TensorBoard, sample texts and attention pictures), keep ``best.pt`` by the
validation score, and score the test split once on the chosen checkpoint.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader

from configs import schema
from core.io import atomic_save, atomic_write_text, load_checkpoint
from core.paths import portable
from dataloaders.build import Data
from inference.decode import decode_batch
from training import distributed, run
from training.trainer import Trainer, to_device

log = logging.getLogger("motion2text")


def generate_captions(model, dataset, data: Data, cfg: schema.Config, dist: distributed.Dist) -> dict[str, str]:
    """Every rank captions its share of ``dataset``'s clips; ``{video_name: text}`` on every rank."""
    distributed.sync_buffers(model, dist)  # every rank evaluates the model the checkpoint stores
    model.eval()
    lengths = dataset.clip_lengths()
    share = sorted(distributed.shard(len(dataset), dist), key=lambda i: lengths[i])  # less padding
    loader = DataLoader(dataset, batch_sampler=BatchSampler(share, cfg.eval.batch_size, False),
                        collate_fn=data.collate, num_workers=cfg.data.num_workers)
    mine: dict[str, str] = {}
    with torch.random.fork_rng(devices=[]):  # sampling-free, but leave the training stream untouched
        for batch in loader:
            batch = to_device(batch, dist.device)
            mine.update(zip(batch["video_names"], caption_batch(model, batch, cfg, data)))
    model.train()
    return distributed.merge_disjoint(distributed.gather_dicts(mine, dist))


def caption_batch(model, batch: dict, cfg: schema.Config, data: Data) -> list[str]:
    """One caption per clip, decoded as ``caption.py`` decodes (:func:`inference.decode.decode_batch`)."""
    return [texts[0] for texts in decode_batch(model, batch, cfg)]


def metrics_of(predictions: dict[str, str], dataset, data: Data, cfg: schema.Config) -> dict:
    """Corpus metrics; novelty, distinct captions and self-retrieval R@1 (which see through
    n-gram scores); and the per-motion_type breakdown when there are several types."""
    from evaluation import score_with_breakdown
    from evaluation.quality import distinct, novelty, self_retrieval

    references = dataset.references()
    metrics, by_type = score_with_breakdown(predictions, references, data.groups,
                                            use_java=cfg.eval.use_java, allow_empty_predictions=True)
    metrics.update(novelty=novelty(predictions, data.train_texts), distinct=distinct(predictions),
                   **{"R@1": self_retrieval(predictions, references, ks=(1,))["R@1"]})
    if len(by_type) > 1:
        metrics["by_motion_type"] = by_type
    return metrics


def evaluate_split(model, dataset, data: Data, cfg: schema.Config, dist: distributed.Dist) -> tuple[dict, dict]:
    """(predictions, metrics) of one split on every rank."""
    predictions = generate_captions(model, dataset, data, cfg, dist)
    metrics = metrics_of(predictions, dataset, data, cfg) if dist.main else {}
    return predictions, distributed.broadcast_object(metrics, dist)


def periodic_evaluation(model, data: Data, cfg: schema.Config, dist: distributed.Dist) -> dict[str, tuple[dict, dict]]:
    """The validation split (which chooses best.pt) and, with ``eval.log_test`` or without a
    validation split, the test split (logged for reference only)."""
    results = {}
    if data.val is not None:
        results["val"] = evaluate_split(model, data.val, data, cfg, dist)
    if cfg.eval.log_test or data.val is None:
        results["test"] = evaluate_split(model, data.test, data, cfg, dist)
    return results


def log_evaluation(run_dir: Path, writer, trainer: Trainer, results: dict[str, tuple[dict, dict]], data: Data,
                   train_loss: float | None = None) -> None:
    """Per split: a predictions file, metrics in the metrics.jsonl line, the log and TensorBoard;
    sample texts and attention pictures of the first split."""
    p, cfg = trainer.progress, trainer.cfg
    entry: dict[str, Any] = {"epoch": p.epoch, "step": p.step}
    if train_loss is not None:
        entry["train_loss"] = train_loss
    for split, (predictions, metrics) in results.items():
        atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1),
                               run_dir / "predictions" / f"{split}_epoch_{p.epoch:04d}.json")
        entry[split] = metrics
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        log.info("epoch %d %s metrics: %s", p.epoch, split, "  ".join(f"{k} {v:.4f}" for k, v in flat.items()))
        for k, v in flat.items() if writer is not None else ():
            writer.add_scalar(f"{split}/{k}", v, p.step)
    run.append_metrics(run_dir, entry)
    split, (predictions, _) = next(iter(results.items()))
    dataset = data.val if split == "val" else data.test
    refs = dataset.references()
    samples = sorted(predictions)[: cfg.eval.num_logged_samples]
    for vid in samples:
        log.info("  %s %s | pred: %s | ref: %s", split, vid, predictions[vid], refs[vid][0])
    if writer is None:
        return
    writer.add_text(f"{split}/samples", "\n\n".join(
        f"**{vid}**  \npred: {predictions[vid]}  \nref: {refs[vid][0]}" for vid in samples), p.step)
    if cfg.eval.num_logged_pictures > 0:
        log_attention_pictures(writer, trainer.model, dataset, data, cfg, samples[:cfg.eval.num_logged_pictures], p.step)
    writer.flush()


def log_attention_pictures(writer, model, dataset, data: Data, cfg: schema.Config, names: list[str], step: int) -> None:
    """Node- and cross-attention heat maps of the first logged clips (skipped without matplotlib)."""
    from inference import pictures

    index = {vid: i for i, vid in enumerate(dataset.clip_ids())}
    batch = to_device(data.collate([dataset[index[vid]] for vid in names]), next(model.parameters()).device)
    with torch.random.fork_rng(devices=[]):
        pictures.log_attention(writer, model, batch, step, num_beams=cfg.eval.num_beams,
                               max_new_tokens=cfg.eval.max_new_tokens)


def keep_best(run_dir: Path, trainer: Trainer, metrics: dict, tokenizer_files: dict) -> None:
    """Write ``best.pt`` when ``eval.metric`` improved on the validation split (main process)."""
    p, metric = trainer.progress, trainer.cfg.eval.metric
    score = metrics.get(metric)
    if score is None:
        log.warning("eval.metric %s was not computed (have: %s); best.pt not updated",
                    metric, ", ".join(k for k in metrics if k != "by_motion_type"))
        return
    if score > p.best_score:
        p.best_score, p.best_epoch = float(score), p.epoch
        atomic_save({"model": trainer.model.state_dict(), "config": schema.to_dict(trainer.cfg),
                          "tokenizer": tokenizer_files, "state": asdict(p), "metrics": metrics, **trainer.extras},
                         run_dir / "checkpoints" / "best.pt")
        log.info("new best validation %s %.4f at epoch %d -> checkpoints/best.pt", metric, score, p.epoch)


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """``--ckpt``: a file, else best | last | epoch_NNNN[.pt] of the run's checkpoints/."""
    path = Path(which)
    return path if path.is_file() else run_dir / "checkpoints" / (which if which.endswith(".pt") else f"{which}.pt")


def score_split(model, data: Data, cfg: schema.Config, dist: distributed.Dist, run_dir: Path, which: str,
                split: str) -> dict:
    """Caption ``split`` (test | val) with checkpoint ``which`` and write
    ``predictions/<split>_<name>.json`` and ``<split>_<name>_metrics.json``."""
    path = checkpoint_path(run_dir, which)
    payload = load_checkpoint(path)
    model.load_state_dict(payload["model"])
    predictions, metrics = evaluate_split(model, data.test if split == "test" else data.val, data, cfg, dist)
    if dist.main:
        epoch = payload.get("state", {}).get("epoch")
        atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1),
                               run_dir / "predictions" / f"{split}_{path.stem}.json")
        atomic_write_text(json.dumps({"split": split, "checkpoint": portable(path, run_dir), "epoch": epoch,
                                      **metrics},
                                          indent=1), run_dir / f"{split}_{path.stem}_metrics.json")
        log.info("%s split, %s (epoch %s): %s", split, path.name, epoch,
                 "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))))
    return metrics
