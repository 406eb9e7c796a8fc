"""The trainer of ``train_t5_stagcn.py``: the model with its DDP wrapper, optimizer, schedule,
gradient scaler and progress, one training step, checkpoints of the whole state, and each epoch's
batches (the same whenever an epoch is replayed, so a resumed run continues exactly).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from configs import schema
from dataloaders.build import Data
from dataloaders.sampler import length_grouped_batches
from models import lora
from training import distributed, rng, run
from training.optim import adamw, amp_settings, linear_warmup_decay

log = logging.getLogger("motion2text")


def epoch_batches(data: Data, cfg: schema.Config, dist: distributed.Dist, epoch: int) -> list[list[int]]:
    """This rank's batches of one epoch: the same whenever the epoch is replayed."""
    data.train.set_epoch(epoch)
    if cfg.train.group_by_length:
        batches = length_grouped_batches(data.train.sample_lengths(), cfg.train.batch_size, world=dist.world,
                                         rank=dist.rank, seed=cfg.seed, epoch=epoch, drop_last=cfg.train.drop_last)
    else:
        sampler = DistributedSampler(data.train, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=cfg.train.drop_last)
        sampler.set_epoch(epoch)
        batches = list(BatchSampler(list(sampler), cfg.train.batch_size, drop_last=cfg.train.drop_last))
    if not batches:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} with drop_last leaves no batch: "
                         f"{len(data.train)} training samples over {dist.world} process(es)")
    return batches[:cfg.train.limit_steps] if cfg.train.limit_steps else batches


def batch_loader(dataset, batches: list[list[int]], data: Data, cfg: schema.Config, seed: int) -> DataLoader:
    # Its own generator: starting the iterator would otherwise draw a seed from the global RNG, an
    # extra draw on a mid-epoch resume that shifts every later dropout mask.
    return DataLoader(dataset, batch_sampler=batches, collate_fn=data.collate,
                      num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(seed))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of `epoch` already done (mid-epoch checkpoint)
    epoch_loss_sum: float = 0.0  # this rank's summed loss over the batches of `epoch` done so far
    epoch_loss_count: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    stopped_early: bool = False  # train.early_stop ended training (a rerun does not train on)
    stage: str = "ce"  # ce (cross-entropy) | scst (self-critical, after ce; train.scst)
    scst_start: int = -1  # the epoch at which the self-critical stage began


class Trainer:
    """Owns the model (and its DDP wrapper), optimizer, scheduler, gradient scaler and progress."""

    def __init__(self, model: torch.nn.Module, cfg: schema.Config, dist: distributed.Dist, total_steps: int):
        self.model, self.cfg, self.dist = model, cfg, dist
        self.ddp = DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.type == "cuda"
                                           else None) if dist.world > 1 else model
        self.optimizer = adamw(model, cfg.train.lr, cfg.train.weight_decay, dist.device)
        self.scheduler = linear_warmup_decay(self.optimizer, cfg.train.warmup_ratio, total_steps)
        self.amp_dtype, self.scaler = amp_settings(cfg.train.amp, dist.device)
        self.progress = Progress()
        # more entries of every checkpoint: T5's architecture and LoRA settings (and the retrieval state)
        self.extras: dict[str, Any] = {"t5": lora.t5_record(model)}

    def use_scst_optimizer(self) -> None:
        """The self-critical stage's optimizer: fresh AdamW at the constant ``train.scst.lr``."""
        self.optimizer = adamw(self.model, self.cfg.train.scst.lr, self.cfg.train.weight_decay, self.dist.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)

    def train_step(self, batch: dict) -> tuple[float, float]:
        """Forward, backward, clip, step; returns (loss, gradient norm) of this rank.

        A non-finite loss skips the step and counts; so does a non-finite gradient without a
        scaler. With fp16's scaler, overflowing gradients are normal: the scaler skips that step
        and lowers its scale. One host sync per step, so every rank skips alike.
        """
        p, cfg = self.progress, self.cfg
        with torch.autocast(self.dist.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.ddp(batch)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip or float("inf"))
        loss_value, norm_value = torch.stack([loss.detach().float(), grad_norm.float()]).tolist()
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(norm_value)):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
            self._count_nonfinite(batch)
        else:
            p.nonfinite_in_row = 0
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            p.step += 1
            p.epoch_loss_sum, p.epoch_loss_count = p.epoch_loss_sum + loss_value, p.epoch_loss_count + 1
        p.batch_in_epoch += 1
        return loss_value, norm_value

    def _count_nonfinite(self, batch: dict) -> None:
        p, limit = self.progress, self.cfg.train.max_nonfinite
        p.nonfinite_in_row, p.nonfinite_total = p.nonfinite_in_row + 1, p.nonfinite_total + 1
        log.warning("non-finite loss/gradient at step %d (clips %s): step skipped",
                    p.step, ", ".join(batch["video_names"][:8]))
        if p.nonfinite_in_row >= limit:
            raise FloatingPointError(f"{p.nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                                     f"{limit}); last batch's clips: {', '.join(batch['video_names'])}")

    def epoch_mean_loss(self) -> float:
        """Mean training loss of the epoch over every rank (resumed epochs included)."""
        p = self.progress
        totals = torch.tensor([p.epoch_loss_sum, float(p.epoch_loss_count)], dtype=torch.float64)
        if self.dist.world > 1:
            totals = totals.to(self.dist.device)
            torch.distributed.all_reduce(totals)
        return float(totals[0] / max(totals[1].item(), 1.0))

    def state_dict(self, tokenizer_files: dict) -> dict:
        """A checkpoint; every rank must call it (it gathers each rank's RNG state)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "state": asdict(self.progress), "rng": distributed.gather_dicts(rng.rng_state(), self.dist),
                "config": schema.to_dict(self.cfg), "tokenizer": tokenizer_files, **self.extras}

    def load_state_dict(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.progress = Progress(**payload["state"])
        states = payload["rng"] if isinstance(payload["rng"], list) else [payload["rng"]]
        if len(states) == self.dist.world:
            rng.set_rng_state(states[self.dist.rank])
        else:  # another world size: a fresh stream per rank, still reproducible
            log.warning("resuming %d rank(s) from a checkpoint of %d: RNG streams reseeded", self.dist.world, len(states))
            rng.seed_rank_stream(self.cfg.seed + self.progress.step, self.dist.rank)

    def save(self, run_dir: Path, tokenizer_files: dict, epoch_file: bool) -> None:
        payload = self.state_dict(tokenizer_files)
        if self.dist.main:
            run.save_checkpoint(run_dir / "checkpoints", payload, self.progress.epoch,
                                self.cfg.train.keep_epoch_checkpoints, epoch_file)
        self.dist.barrier()


def validation_has_stalled(p: Progress, cfg: schema.Config, data: Data) -> bool:
    """``train.early_stop`` evaluations have passed without a better validation score."""
    if not cfg.train.early_stop or data.val is None or p.best_epoch < 0:
        return False
    stale = (p.epoch - p.best_epoch) // cfg.eval.every
    if stale >= cfg.train.early_stop:
        log.info("early stop at epoch %d: validation %s has not improved for %d evaluations (best %.4f at "
                 "epoch %d)", p.epoch, cfg.eval.metric, stale, p.best_score, p.best_epoch)
        return True
    return False


def check_replicas(model: torch.nn.Module, dist: distributed.Dist) -> None:
    """Every parameter and buffer must equal rank 0's; a difference means the ranks drifted apart."""
    if dist.world == 1:
        return
    worst = distributed.max_replica_difference(model, dist)
    if worst != 0.0:
        raise RuntimeError(f"model replicas differ across ranks (max abs difference {worst:.3g})")
    log.info("replicas identical on %d ranks, parameters and buffers (max abs difference 0)", dist.world)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
