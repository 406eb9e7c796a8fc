"""Train, resume, finetune and evaluate the STA-GCN + T5 motion captioner.

    torchrun --nproc_per_node N train_t5_stagcn.py --cfg_file configs/synthetic.yaml [key=value ...]
    python train_t5_stagcn.py --cfg_file configs/boxing.yaml data.root=../shared/data/BX
    python train_t5_stagcn.py --cfg_file results/boxing/config.yaml --eval_only

Each run lives in ``results/<experiment>/``: config.yaml, train.log, tb/, checkpoints/,
predictions/, metrics.jsonl and tokenizer/. Running the same command again resumes from the
newest good checkpoint; with no checkpoint, ``train.init_from`` or a file in
``pretrain_checkpoints/`` is loaded for finetuning.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from configs import schema
from dataloaders.build import Data, build_data
from dataloaders.sampler import length_grouped_batches, padding_fraction
from models import lora
from models.build import build_model, tokenizer_files_of
from training import checkpoint as ckpt
from training import distributed, freeze, rng, run, scst
from training.finetune import choose_init_checkpoint, load_finetune_weights, load_init_source
from training.optim import adamw, amp_settings, linear_warmup_decay

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "synthetic.yaml"
# Keys that may change between a run and its resumption without making it "another experiment".
RESUMABLE_CHANGES = ("train.epochs", "train.limit_steps", "data.num_workers", "eval.")
log = logging.getLogger("motion2text")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override any with dotted.key=value):\n" + schema.describe_keys())
    parser.add_argument("--cfg_file", "--cfg-file", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/synthetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.lr=3e-4")
    parser.add_argument("--eval_only", "--eval-only", action="store_true",
                        help="load a checkpoint (see --ckpt), write predictions and metrics, exit")
    parser.add_argument("--ckpt", default="best",
                        help="with --eval_only: the checkpoint to score on the test split: "
                             "best | last | epoch_NNNN | a file path (default best)")
    parser.add_argument("--eval_splits", "--eval-splits", nargs="+", choices=("val", "test"), default=["test"],
                        help="with --eval_only: the splits to caption and score (default: test; val needs "
                             "a validation split)")
    parser.add_argument("--allow_config_change", action="store_true",
                        help="run in a results folder whose config.yaml differs from this config")
    parser.add_argument("--stop_after_epoch", type=int, default=0,
                        help="checkpoint and exit after this epoch (the same command resumes later)")
    parser.add_argument("--stop_after_step", type=int, default=0,
                        help="checkpoint and exit after this optimizer step (the same command resumes)")
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by torch.distributed.launch
    return parser.parse_args(argv)


# ============================================================================ batches ========
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


# ============================================================================ the trainer ====
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


# ============================================================================ evaluation =====
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
    """One caption per clip: the best beam, or with ``eval.rerank`` the one of that many beam
    candidates (and ``eval.rerank_samples`` sampled ones; each annotator's, with
    ``model.annotators``) with the highest CIDEr-D against the clip's pool of retrieved training
    texts (:func:`evaluation.inference.reranked_captions`)."""
    from evaluation.inference import annotators_to_write, for_annotator, reranked_captions

    annotators = annotators_to_write(model, cfg)
    if not cfg.eval.rerank:  # a model that tells annotators apart writes as the first of eval.annotators
        return model.generate(for_annotator(batch, annotators[0]), num_beams=cfg.eval.num_beams,
                              max_new_tokens=cfg.eval.max_new_tokens)
    return reranked_captions(model, batch, candidates=cfg.eval.rerank, samples=cfg.eval.rerank_samples,
                             temperature=cfg.eval.rerank_temperature, num_beams=cfg.eval.num_beams,
                             max_new_tokens=cfg.eval.max_new_tokens, seed=cfg.seed, annotators=annotators,
                             source=cfg.eval.rerank_candidates, logprob_weight=cfg.eval.rerank_logprob)


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
        ckpt.atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1),
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
    from evaluation import pictures

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
        ckpt.atomic_save({"model": trainer.model.state_dict(), "config": schema.to_dict(trainer.cfg),
                          "tokenizer": tokenizer_files, "state": asdict(p), "metrics": metrics, **trainer.extras},
                         run_dir / "checkpoints" / "best.pt")
        log.info("new best validation %s %.4f at epoch %d -> checkpoints/best.pt", metric, score, p.epoch)


def score_test(model, data: Data, cfg: schema.Config, dist: distributed.Dist, run_dir: Path, which: str) -> dict:
    """Caption the test split with checkpoint ``which`` (best | last | epoch_NNNN | a file) and
    write ``predictions/test_<name>.json`` and ``test_<name>_metrics.json``."""
    return score_split(model, data, cfg, dist, run_dir, which, "test")


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """``--ckpt``: a file, else best | last | epoch_NNNN[.pt] of the run's checkpoints/."""
    path = Path(which)
    return path if path.is_file() else run_dir / "checkpoints" / (which if which.endswith(".pt") else f"{which}.pt")


def relative_path(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run folder (else the repository root), else its name: what a result
    file records, so that it names no machine's folders."""
    for base in (run_dir, REPO_ROOT):
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def score_split(model, data: Data, cfg: schema.Config, dist: distributed.Dist, run_dir: Path, which: str,
                split: str) -> dict:
    """Caption ``split`` (test | val) with checkpoint ``which`` and write
    ``predictions/<split>_<name>.json`` and ``<split>_<name>_metrics.json``."""
    path = checkpoint_path(run_dir, which)
    payload = ckpt.load_checkpoint(path)
    model.load_state_dict(payload["model"])
    predictions, metrics = evaluate_split(model, data.test if split == "test" else data.val, data, cfg, dist)
    if dist.main:
        epoch = payload.get("state", {}).get("epoch")
        ckpt.atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1),
                               run_dir / "predictions" / f"{split}_{path.stem}.json")
        ckpt.atomic_write_text(json.dumps({"split": split, "checkpoint": relative_path(path, run_dir), "epoch": epoch,
                                           **metrics}, indent=1), run_dir / f"{split}_{path.stem}_metrics.json")
        log.info("%s split, %s (epoch %s): %s", split, path.name, epoch,
                 "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))))
    return metrics


# ============================================================================ one epoch ======
def train_epoch(trainer: Trainer, data: Data, writer, stop: run.StopRequest, stop_after_step: int,
                scst_df: Any = None) -> bool:
    """This rank's remaining batches of the current epoch; False when a stop was requested. In the
    self-critical stage (``scst_df``: the reward's document frequencies) each batch is a set of
    clips whose captions are sampled and rewarded before the step."""
    from tqdm import tqdm

    p, cfg, dist = trainer.progress, trainer.cfg, trainer.dist
    batches = epoch_batches(data, cfg, dist, p.epoch) if scst_df is None else scst_batches(data, cfg, dist, p.epoch)
    loader = batch_loader(data.train, batches[p.batch_in_epoch:], data, cfg, cfg.seed * 100_003 + p.epoch)
    what = (f"epoch {p.epoch + 1}/{cfg.train.epochs}" if p.stage == "ce" else
            f"self-critical epoch {p.epoch - p.scst_start + 1}/{cfg.train.scst.epochs}")
    bar = tqdm(total=len(batches), initial=p.batch_in_epoch, desc=what,
               disable=not dist.main, dynamic_ncols=True, leave=False,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # quiet in log files
    t0, seen = time.perf_counter(), 0
    for batch in loader:
        nonfinite_before = p.nonfinite_total
        batch = to_device(batch, dist.device)
        if scst_df is not None:
            reward = scst.sample_batch(trainer.model, batch, cfg.train.scst.samples, cfg.train.scst.max_new_tokens,
                                       scst_df)  # (N, K) CIDEr-D of the sampled captions
            if writer is not None:
                writer.add_scalar("train/scst_reward", float(reward.mean()), p.step)
        loss, grad_norm = trainer.train_step(batch)
        if writer is not None and p.nonfinite_total != nonfinite_before:
            writer.add_scalar("train/nonfinite_steps", p.nonfinite_total, p.step)
        seen += len(batch["video_names"]) * dist.world
        lr = trainer.scheduler.get_last_lr()[0]
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", samples_s=f"{seen / (time.perf_counter() - t0):.1f}")
        bar.update(1)
        if writer is not None and p.step % cfg.train.log_every == 0:
            for key, value in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm)):
                writer.add_scalar(f"train/{key}", value, p.step)
        if distributed.any_rank(stop.requested or 0 < stop_after_step == p.step, dist):
            bar.close()
            return False
    bar.close()
    log.info("epoch %d done: %d steps, %.1f samples/s", p.epoch + 1, p.step, seen / max(1e-9, time.perf_counter() - t0))
    return True


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg_path = Path(args.cfg_file)
    cfg = schema.load_config(cfg_path, args.overrides)
    dist = distributed.setup(cfg.device, cfg.train.dist_timeout_s, args.local_rank)
    run_dir = run.resolve_run_dir(REPO_ROOT / cfg.results_dir, cfg_path, cfg.experiment)
    if args.eval_only and not checkpoint_path(run_dir, args.ckpt).is_file():  # one line, before any folder is made
        missing = checkpoint_path(run_dir, args.ckpt)
        shown = missing.relative_to(REPO_ROOT) if missing.is_relative_to(REPO_ROOT) else missing
        print(f"train_t5_stagcn.py: error: --eval_only: {shown}: no such checkpoint (train the run first, "
              f"or pass --ckpt)", file=sys.stderr)
        raise SystemExit(2)
    if dist.main:
        run.prepare_run_dir(run_dir, cfg_path, schema.to_dict(cfg), resumable=RESUMABLE_CHANGES,
                            allow_change=args.allow_config_change, subfolders=("checkpoints", "predictions", "tb"),
                            defaults=schema.to_dict(schema.Config()))
        run.record_command(run_dir, sys.argv[1:] if argv is None else argv, "train_t5_stagcn.py", dist.world)
    dist.barrier()
    run.setup_logging(run_dir, dist.rank, dist.main)
    rng.seed_everything(cfg.seed, cfg.train.deterministic)
    log.info("run folder %s, world %d, device %s", run_dir, dist.world, dist.device)

    # 1. what to start from: a checkpoint of this run, a pretrained one to finetune, or nothing
    resume = None if args.eval_only else run.find_resume_checkpoint(run_dir / "checkpoints")
    init = None if resume or args.eval_only else choose_init_checkpoint(cfg.train.init_from, run_dir)
    init_payload = load_init_source(init[0]) if init else None
    if init:
        log.info("finetuning source: %s (%s)", init[0], init[1])

    # 2. data, tokenizer and model, built alike on every rank
    data = build_data(cfg, run_dir, main=dist.main, barrier=dist.barrier,
                      stored_tokenizer=init_payload.get("tokenizer") if init_payload else None)
    model = build_model(cfg, data.tokenizer).to(dist.device)
    model.retriever = data.retriever
    model.label_smoothing = cfg.train.label_smoothing
    log.info("model: %.2fM parameters (encoder %.2fM, T5 %.2fM)", n_params(model) / 1e6,
             n_params(model.encoder) / 1e6, n_params(model.t5) / 1e6)
    if args.eval_only:
        if "val" in args.eval_splits and data.val is None:
            raise SystemExit("error: --eval_splits val: this config has no validation split (data.val or "
                             "data.val_split.fraction)")
        scored = {split: score_split(model, data, cfg, dist, run_dir, args.ckpt, split) for split in args.eval_splits}
        return scored.get("test", scored.get("val", {}))  # the test split's metrics, as a training run returns
    freeze.apply_freeze(model, cfg.train.freeze)
    log.info(freeze.describe(model, cfg.train.freeze))

    # 3. the trainer, resumed or initialised; then each rank its own dropout stream
    trainer = Trainer(model, cfg, dist, len(epoch_batches(data, cfg, dist, 0)) * cfg.train.epochs)
    if data.retriever is not None:
        trainer.extras["retrieval"] = data.retriever.state_dict()
    log.info("batches: %s, %.1f%% of the padded frames are padding", "grouped by length"
             if cfg.train.group_by_length else "shuffled", 100 * padding_fraction(
                 epoch_batches(data, cfg, dist, 0), data.train.sample_lengths()))
    p = trainer.progress
    resumed = resume is not None
    if resumed:
        if resume[1].get("state", {}).get("stage") == "scst":
            trainer.use_scst_optimizer()  # the optimizer the checkpoint's state belongs to
        trainer.load_state_dict(resume[1])
        p = trainer.progress
        log.info("resumed from %s: epoch %d, step %d", resume[0], p.epoch, p.step)
    else:
        if init_payload is not None:
            load_finetune_weights(model, init_payload["model"], init[0])
        rng.seed_rank_stream(cfg.seed, dist.rank)
    del init_payload, resume
    if dist.main:
        run.trim_metrics(run_dir / "metrics.jsonl", p.epoch if resumed else -1)
    writer = run.tensorboard_writer(run_dir, dist.main)
    tok_files = tokenizer_files_of(data.tokenizer)

    # 4. the loop: epochs of steps, an evaluation and a checkpoint at the chosen epochs
    with run.StopRequest() as stop:
        if cfg.eval.at_start and not resumed:
            results = periodic_evaluation(model, data, cfg, dist)
            if dist.main:
                log_evaluation(run_dir, writer, trainer, results, data)
        model.train()
        scst_df = None
        while True:
            if p.stage == "ce" and (p.epoch >= cfg.train.epochs or p.stopped_early):
                if not cfg.train.scst.epochs:
                    break
                begin_scst(trainer, run_dir, data)
            if p.stage == "scst":
                if p.epoch >= p.scst_start + cfg.train.scst.epochs:
                    break
                scst_df = scst_df or scst.reward_corpus(list(data.train.references().values()))
            if not train_epoch(trainer, data, writer, stop, args.stop_after_step, scst_df):
                trainer.save(run_dir, tok_files, epoch_file=False)
                log.info("stopped on request at epoch %d, step %d; run the same command to resume",
                         p.epoch + 1, p.step)
                return {}
            if finish_epoch(trainer, data, run_dir, writer, tok_files, args.stop_after_epoch):
                return {}
    check_replicas(model, dist)
    if writer is not None:
        writer.close()
    if data.val is not None:
        log.info("done: best validation %s %.4f at epoch %d", cfg.eval.metric, p.best_score, p.best_epoch)
    # the test split, once, on the checkpoint chosen on validation (the last one without validation)
    return score_test(model, data, cfg, dist, run_dir, "best" if data.val is not None else "last")


def finish_epoch(trainer: Trainer, data: Data, run_dir: Path, writer, tok_files: dict, stop_after_epoch: int) -> bool:
    """Log the epoch's loss; evaluate (validation keeps best.pt), check for an early stop and save
    at the chosen epochs. True when ``--stop_after_epoch`` asks to stop here."""
    p, cfg, dist = trainer.progress, trainer.cfg, trainer.dist
    epoch_loss = trainer.epoch_mean_loss()
    p.epoch, p.batch_in_epoch, p.epoch_loss_sum, p.epoch_loss_count = p.epoch + 1, 0, 0.0, 0
    log.info("epoch %d: mean %s loss %.4f", p.epoch, "training" if p.stage == "ce" else "self-critical", epoch_loss)
    if writer is not None:
        writer.add_scalar("train/epoch_loss", epoch_loss, p.step)
    last = cfg.train.epochs if p.stage == "ce" else p.scst_start + cfg.train.scst.epochs
    if p.epoch % cfg.eval.every == 0 or p.epoch == last:
        results = periodic_evaluation(trainer.model, data, cfg, dist)
        if dist.main:
            log_evaluation(run_dir, writer, trainer, results, data, train_loss=epoch_loss)
            if "val" in results:
                keep_best(run_dir, trainer, results["val"][1], tok_files)
        p.best_score, p.best_epoch = distributed.broadcast_object((p.best_score, p.best_epoch), dist)
        p.stopped_early = p.stage == "ce" and validation_has_stalled(p, cfg, data)
    stopping = bool(stop_after_epoch) and p.epoch >= stop_after_epoch
    if p.epoch % cfg.train.save_every_epochs == 0 or p.epoch == last or stopping or p.stopped_early:
        trainer.save(run_dir, tok_files, epoch_file=True)
    if stopping:
        log.info("stopping after epoch %d as asked (--stop_after_epoch)", p.epoch)
    return stopping


def begin_scst(trainer: Trainer, run_dir: Path, data: Data) -> None:
    """Enter the self-critical stage: from best.pt (the cross-entropy model validation chose) when
    there is one, with a fresh optimizer at ``train.scst.lr``."""
    p = trainer.progress
    best = run_dir / "checkpoints" / "best.pt"
    if data.val is not None and best.is_file():
        trainer.model.load_state_dict(ckpt.load_checkpoint(best)["model"])
        log.info("self-critical stage starts from best.pt (validation %s %.4f at epoch %d)",
                 trainer.cfg.eval.metric, p.best_score, p.best_epoch)
    trainer.use_scst_optimizer()
    p.stage, p.scst_start, p.batch_in_epoch = "scst", p.epoch, 0
    s = trainer.cfg.train.scst
    log.info("self-critical stage: %d epochs, %d samples per clip, lr %g, reward CIDEr-D", s.epochs, s.samples, s.lr)


def scst_batches(data: Data, cfg: schema.Config, dist: distributed.Dist, epoch: int) -> list[list[int]]:
    """This rank's self-critical batches of one epoch: every training clip once (its first sample)."""
    clips = data.train.clip_sample_indices()
    lengths = data.train.sample_lengths()
    local = length_grouped_batches([lengths[i] for i in clips], cfg.train.scst.batch_size, world=dist.world,
                                   rank=dist.rank, seed=cfg.seed, epoch=epoch)
    return [[clips[j] for j in batch] for batch in local]


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


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:
        distributed.explain_failure(exc)
        raise
    finally:
        distributed.shutdown()
