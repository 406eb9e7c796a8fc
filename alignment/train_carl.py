"""Train the CARL-style frame embedder.

    python -m alignment.train_carl --cfg_file configs/carl_synthetic.yaml [dotted.key=value ...]

The run lives in ``results/<experiment or config stem>/`` (a ``results/<exp>/config.yaml`` runs in its
own folder): ``config.yaml``, ``train.log``, ``tb/`` (TensorBoard), ``checkpoints/last.pt`` and the
newest ``epoch_NNNN.pt`` files. Running the same command again resumes from the newest good
checkpoint (model, optimizer, scheduler, epoch, step, RNG states); raising ``train.epochs``
continues a finished run. Synthetic data are generated into ``<run>/data/`` when absent.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from alignment import config as C
from alignment.carl import FrameEmbedder, embedder_state, make_views, training_loss
from training import rng as rng_state
from training import run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "carl_synthetic.yaml"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("train.epochs", "train.max_minutes", "train.num_threads")
log = logging.getLogger("alignment.train_carl")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg_file", "--cfg-file", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/carl_synthetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=5")
    parser.add_argument("--allow_config_change", action="store_true",
                        help="run in a results folder whose config.yaml differs from this config")
    return parser.parse_args(argv)


def _repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def load_training_clips(cfg: C.CarlConfig, run_dir: Path) -> list[np.ndarray]:
    """Coordinates ``[T, 22, 3]`` of every training clip (dataset clips and the standards)."""
    from dataloaders.records import load_records, load_standards

    data = cfg.data
    if data.kind == "synthetic":
        folder = run_dir / "data"
        if not (folder / "train.pkl").is_file() or not (folder / "standard.pkl").is_file():
            from dataloaders import synthetic
            synthetic.write(folder, seed=data.synthetic.seed, mode=data.synthetic.mode,
                            train_per_kind=data.synthetic.train_per_kind,
                            test_per_kind=data.synthetic.test_per_kind)
            log.info("generated synthetic data into %s", folder)
        train_files, standard = [folder / "train.pkl"], folder / "standard.pkl"
    else:
        train_files = [_repo_path(p) for p in data.train]
        standard = _repo_path(data.standard) if data.standard else None
    clips = [rec["coordinates"] for path in train_files
             for rec in load_records(path, need_labels=False)]
    n_standards = 0
    if standard is not None:
        standards = load_standards(standard)
        clips += list(standards.values())
        n_standards = len(standards)
    log.info("training clips: %d (%d standards) from %s", len(clips), n_standards,
             ", ".join(str(p) for p in train_files + ([standard] if standard else [])))
    return clips


class Trainer:
    """Owns the embedder, optimizer, cosine schedule, the view sampler's generator and progress."""

    def __init__(self, cfg: C.CarlConfig, steps_per_epoch: int) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.model = FrameEmbedder(cfg.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        total = max(1, cfg.train.epochs * steps_per_epoch)  # closed form: resuming with more epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # just stretches the cosine
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.step = 0, 0  # epochs completed, optimizer steps taken

    def train_step(self, clips: list[np.ndarray]) -> float:
        views = make_views(clips, self.cfg.train.num_frames, self.cfg.model.channels, self.cfg.augment, self.rng)
        loss = training_loss(self.model, views, temperature=self.cfg.train.temperature,
                             variance=self.cfg.train.variance)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def state_dict(self, epoch_loss: float) -> dict:
        return {**embedder_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "state": {"epoch": self.epoch, "step": self.step},
                "sampler_rng": self.rng.bit_generator.state, "rng": [rng_state.rng_state()],
                "config": C.to_dict(self.cfg), "loss": epoch_loss}

    def load_state_dict(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        sched = self.scheduler  # the cosine's length may have changed with train.epochs
        for group, base, fn in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(sched.last_epoch)
        self.epoch, self.step = int(saved["state"]["epoch"]), int(saved["state"]["step"])
        self.rng.bit_generator.state = saved["sampler_rng"]
        rng_state.set_rng_state(saved["rng"][0])


def train_epoch(trainer: Trainer, clips: list[np.ndarray], writer) -> float:
    """One pass over the clips in a random order; returns the mean loss."""
    trainer.model.train()
    order = trainer.rng.permutation(len(clips))
    bs = trainer.cfg.train.batch_size
    losses = []
    bar = tqdm([order[i:i + bs] for i in range(0, len(order), bs)], leave=False, dynamic_ncols=True,
               desc=f"epoch {trainer.epoch + 1}/{trainer.cfg.train.epochs}", file=sys.stderr)
    for idx in bar:
        losses.append(trainer.train_step([clips[i] for i in idx]))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        writer.add_scalar("train/loss", losses[-1], trainer.step)
        writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step)
    return float(np.mean(losses))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    cfg_path = Path(args.cfg_file)
    try:
        cfg = C.load_config(cfg_path, args.overrides)
    except C.ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    run_dir = run.resolve_run_dir(REPO_ROOT / cfg.results_dir, cfg_path, cfg.experiment)
    run.prepare_run_dir(run_dir, cfg_path, C.to_dict(cfg), resumable=RESUMABLE_CHANGES,
                        allow_change=args.allow_config_change)
    run.setup_logging(run_dir)
    log.info("run folder %s", run_dir)

    clips = load_training_clips(cfg, run_dir)
    trainer = Trainer(cfg, steps_per_epoch=-(-len(clips) // cfg.train.batch_size))
    resume = run.find_resume_checkpoint(run_dir / "checkpoints")
    if resume:
        trainer.load_state_dict(resume[1])
        log.info("resumed from %s (epoch %d, step %d)", resume[0], trainer.epoch, trainer.step)
    if trainer.epoch >= cfg.train.epochs:
        log.info("nothing to do: %d of %d epochs already done (raise train.epochs to continue)",
                 trainer.epoch, cfg.train.epochs)
        return 0

    writer = run.tensorboard_writer(run_dir)
    started = time.monotonic()
    try:
        while trainer.epoch < cfg.train.epochs:
            loss = train_epoch(trainer, clips, writer)
            trainer.epoch += 1
            run.save_checkpoint(run_dir / "checkpoints", trainer.state_dict(loss), trainer.epoch,
                                cfg.train.keep_epoch_checkpoints, epoch_file=True)
            writer.add_scalar("epoch/loss", loss, trainer.epoch)
            minutes = (time.monotonic() - started) / 60
            log.info("epoch %d/%d  loss %.4f  lr %.2e  %.1f min", trainer.epoch, cfg.train.epochs,
                     loss, trainer.optimizer.param_groups[0]["lr"], minutes)
            if cfg.train.max_minutes and minutes >= cfg.train.max_minutes and trainer.epoch < cfg.train.epochs:
                log.info("stopping after %.1f min (train.max_minutes); the same command resumes", minutes)
                break
    finally:
        writer.close()
    log.info("done: %d epochs; embedder at %s", trainer.epoch, run_dir / "checkpoints" / "last.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
