"""Train the CARL-style frame embedder.

    python -m alignment.train_carl --cfg_file configs/carl_synthetic.yaml [dotted.key=value ...]

The run lives in ``results/<name or config stem>/`` (a ``results/<exp>/config.yaml`` runs in its
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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from tqdm import tqdm

from alignment import config as C
from alignment.carl import FrameEmbedder, embedder_state, make_views, training_loss
from training import checkpoint as ckpt

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "carl_synthetic.yaml"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("train.epochs", "train.max_minutes", "train.num_threads")
log = logging.getLogger("alignment.train_carl")


# ============================================================================ run folder ======
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg_file", "--cfg-file", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/carl_synthetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=5")
    parser.add_argument("--allow_config_change", action="store_true",
                        help="run in a results folder whose config.yaml differs from this config")
    return parser.parse_args(argv)


def prepare_run_dir(cfg: C.CarlConfig, cfg_path: Path, run_dir: Path, allow_change: bool) -> None:
    """Create the run folder, refuse one that belongs to another config, save the resolved config."""
    saved = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = ckpt.remove_temporaries(run_dir)
    is_source = saved.resolve() == cfg_path.resolve()
    if saved.is_file() and not is_source and not allow_change:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        diff = ckpt.config_differences(old, C.to_dict(cfg), RESUMABLE_CHANGES)
        if diff:
            raise SystemExit(f"error: {run_dir} belongs to a different config ({saved}); differing "
                             f"keys: {'; '.join(diff[:10])}. Set another `name`, or pass "
                             f"--allow_config_change to run there anyway.")
    if not is_source:
        ckpt.atomic_write_text(C.to_yaml(cfg), saved)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted run", file=sys.stderr)


def setup_logging(run_dir: Path) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_carl", False):
            root.removeHandler(handler)
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(run_dir / "train.log", encoding="utf-8")):
        handler.setFormatter(fmt)
        handler._carl = True  # type: ignore[attr-defined]
        root.addHandler(handler)


# ============================================================================ data ============
def _repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def load_training_clips(cfg: C.CarlConfig, run_dir: Path) -> list[np.ndarray]:
    """Coordinates ``[T, 22, 3]`` of every training clip (dataset clips and the standards)."""
    from dataloaders.records import load_records, load_standards

    data = cfg.data
    if data.source == "synthetic":
        folder = run_dir / "data"
        if not (folder / "train.pkl").is_file() or not (folder / "standard.pkl").is_file():
            from dataloaders import synthetic
            synthetic.write(folder, seed=data.synthetic_seed, mode=data.synthetic_mode,
                            train_per_kind=data.synthetic_train_per_kind,
                            test_per_kind=data.synthetic_test_per_kind)
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


# ============================================================================ state ===========
@dataclass
class State:
    model: FrameEmbedder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    epoch: int = 0   # epochs completed
    step: int = 0


def build_state(cfg: C.CarlConfig, steps_per_epoch: int) -> State:
    torch.manual_seed(cfg.train.seed)
    model = FrameEmbedder(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay)
    total = max(1, cfg.train.epochs * steps_per_epoch)  # closed form: resuming with more epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(       # just stretches the cosine
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    return State(model, optimizer, scheduler, np.random.default_rng(cfg.train.seed))


def checkpoint_dict(state: State, cfg: C.CarlConfig, epoch_loss: float) -> dict:
    return {
        **embedder_state(state.model),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "rng_numpy": state.rng.bit_generator.state,
        "rng_torch": torch.get_rng_state(),
        "config": C.to_dict(cfg),
        "loss": epoch_loss,
    }


def save_checkpoints(state: State, cfg: C.CarlConfig, ckpt_dir: Path, epoch_loss: float) -> None:
    """Write ``epoch_NNNN.pt`` and ``last.pt`` atomically; keep the newest ``keep_epochs`` epochs."""
    payload = checkpoint_dict(state, cfg, epoch_loss)
    ckpt.atomic_save(payload, ckpt_dir / f"epoch_{state.epoch:04d}.pt")
    ckpt.atomic_save(payload, ckpt_dir / "last.pt")
    epochs = sorted(ckpt_dir.glob("epoch_*.pt"), key=lambda p: ckpt.natural_key(p.name))
    for old in epochs[:-max(cfg.train.keep_epochs, 1)]:
        old.unlink(missing_ok=True)


def resume(state: State, ckpt_dir: Path) -> None:
    """Load the newest good checkpoint into ``state`` (nothing to do on a fresh run)."""
    found = ckpt.load_first_good(ckpt.resume_candidates(ckpt_dir))
    if found is None:
        return
    path, saved = found
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    sched = state.scheduler  # the cosine's length may have changed with train.epochs
    for group, base, fn in zip(state.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(sched.last_epoch)
    state.epoch, state.step = int(saved["epoch"]), int(saved["step"])
    state.rng.bit_generator.state = saved["rng_numpy"]
    torch.set_rng_state(saved["rng_torch"])
    log.info("resumed from %s (epoch %d, step %d)", path, state.epoch, state.step)


# ============================================================================ loop ============
def train_one_epoch(state: State, cfg: C.CarlConfig, clips: list[np.ndarray], writer) -> float:
    """One pass over the clips in a random order; returns the mean loss."""
    state.model.train()
    order = state.rng.permutation(len(clips))
    bs = cfg.train.batch_size
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    losses = []
    bar = tqdm(batches, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False,
               dynamic_ncols=True, file=sys.stderr)
    for idx in bar:
        views = make_views([clips[i] for i in idx], cfg.train.num_frames, cfg.model.channels,
                           cfg.augment, state.rng)
        loss = training_loss(state.model, views, temperature=cfg.train.temperature,
                             variance=cfg.train.variance)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        state.step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        writer.add_scalar("train/loss", losses[-1], state.step)
        writer.add_scalar("train/lr", state.optimizer.param_groups[0]["lr"], state.step)
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
    run_dir = ckpt.resolve_run_dir(REPO_ROOT / "results", cfg_path, cfg.name)
    prepare_run_dir(cfg, cfg_path, run_dir, args.allow_config_change)
    setup_logging(run_dir)
    log.info("run folder %s", run_dir)

    clips = load_training_clips(cfg, run_dir)
    steps_per_epoch = -(-len(clips) // cfg.train.batch_size)
    state = build_state(cfg, steps_per_epoch)
    resume(state, run_dir / "checkpoints")
    if state.epoch >= cfg.train.epochs:
        log.info("nothing to do: %d of %d epochs already done (raise train.epochs to continue)",
                 state.epoch, cfg.train.epochs)
        return 0

    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(run_dir / "tb"))
    started = time.monotonic()
    try:
        while state.epoch < cfg.train.epochs:
            loss = train_one_epoch(state, cfg, clips, writer)
            state.epoch += 1
            save_checkpoints(state, cfg, run_dir / "checkpoints", loss)
            writer.add_scalar("epoch/loss", loss, state.epoch)
            minutes = (time.monotonic() - started) / 60
            log.info("epoch %d/%d  loss %.4f  lr %.2e  %.1f min", state.epoch, cfg.train.epochs,
                     loss, state.optimizer.param_groups[0]["lr"], minutes)
            if cfg.train.max_minutes and minutes >= cfg.train.max_minutes \
                    and state.epoch < cfg.train.epochs:
                log.info("stopping after %.1f min (train.max_minutes); the same command resumes",
                         minutes)
                break
    finally:
        writer.close()
    log.info("done: %d epochs; embedder at %s", state.epoch, run_dir / "checkpoints" / "last.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
