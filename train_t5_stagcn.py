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
import logging
import sys
import time
from pathlib import Path
from typing import Any

from configs import schema
from core.paths import shown
from dataloaders.build import Data, build_data
from dataloaders.sampler import padding_fraction
from dataloaders.tokenizer import tokenizer_files_of
from models.build import build_model
from training import distributed, freeze, rng, run, scst
from training.evaluate import checkpoint_path, keep_best, log_evaluation, periodic_evaluation, score_split
from training.finetune import choose_init_checkpoint, load_finetune_weights, load_init_source, report_frames
from training.trainer import (Trainer, batch_loader, check_replicas, epoch_batches, n_params, to_device,
                              validation_has_stalled)

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


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg, dist, run_dir = open_run(args, argv)

    # 1. what to start from: a checkpoint of this run, a pretrained one to finetune, or nothing
    resume = None if args.eval_only else run.find_resume_checkpoint(run_dir / "checkpoints")
    init = None if resume or args.eval_only else choose_init_checkpoint(cfg.train.init_from, run_dir)
    init_payload = load_init_source(init[0]) if init else None
    if init:
        log.info("finetuning source: %s (%s)", init[0], init[1])
        report_frames(init_payload, cfg.data.frame, init[0])

    # 2. data, tokenizer and model, built alike on every rank
    data = build_data(cfg, run_dir, main=dist.main, barrier=dist.barrier,
                      stored_tokenizer=init_payload.get("tokenizer") if init_payload else None)
    model = build_model(cfg, data.tokenizer).to(dist.device)
    model.retriever, model.label_smoothing = data.retriever, cfg.train.label_smoothing
    log.info("model: %.2fM parameters (encoder %.2fM, T5 %.2fM)", n_params(model) / 1e6,
             n_params(model.encoder) / 1e6, n_params(model.t5) / 1e6)
    if args.eval_only:
        return evaluate_only(model, data, cfg, dist, run_dir, args)
    freeze.apply_freeze(model, cfg.train.freeze)
    log.info(freeze.describe(model, cfg.train.freeze))

    # 3. the trainer, resumed or initialised (then each rank its own dropout stream)
    trainer = Trainer(model, cfg, dist, len(epoch_batches(data, cfg, dist, 0)) * cfg.train.epochs)
    if data.retriever is not None:
        trainer.extras["retrieval"] = data.retriever.state_dict()
    log.info("batches: %s, %.1f%% of the padded frames are padding", "grouped by length"
             if cfg.train.group_by_length else "shuffled", 100 * padding_fraction(
                 epoch_batches(data, cfg, dist, 0), data.train.sample_lengths()))
    resumed = resume is not None
    if resumed:
        resume_trainer(trainer, *resume)
    else:
        if init_payload is not None:
            load_finetune_weights(model, init_payload["model"], init[0])
        rng.seed_rank_stream(cfg.seed, dist.rank)
    del init_payload, resume  # the checkpoints' tensors are in the model and optimizer now
    p = trainer.progress
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
                scst.begin_scst(trainer, run_dir, data)
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

    # 5. the test split, once, on the checkpoint chosen on validation (the last one without validation)
    return score_split(model, data, cfg, dist, run_dir, "best" if data.val is not None else "last", "test")


def open_run(args: argparse.Namespace, argv: list[str] | None) -> tuple[schema.Config, distributed.Dist, Path]:
    """The config, the process world and the run folder (made or checked, the command recorded),
    with logging set up and every random generator seeded."""
    cfg_path = Path(args.cfg_file)
    cfg = schema.load_config(cfg_path, args.overrides)
    dist = distributed.setup(cfg.device, cfg.train.dist_timeout_s, args.local_rank)
    run_dir = run.resolve_run_dir(REPO_ROOT / cfg.results_dir, cfg_path, cfg.experiment)
    if args.eval_only and not checkpoint_path(run_dir, args.ckpt).is_file():  # one line, before any folder is made
        print(f"train_t5_stagcn.py: error: --eval_only: {shown(checkpoint_path(run_dir, args.ckpt))}: no such "
              "checkpoint (train the run first, or pass --ckpt)", file=sys.stderr)
        raise SystemExit(2)
    if dist.main:
        run.prepare_run_dir(run_dir, cfg_path, schema.to_dict(cfg), resumable=RESUMABLE_CHANGES,
                            allow_change=args.allow_config_change, subfolders=("checkpoints", "predictions", "tb"),
                            defaults=schema.saved_defaults(), retired=schema.RETIRED)
        run.record_command(run_dir, sys.argv[1:] if argv is None else argv, "train_t5_stagcn.py", dist.world)
    dist.barrier()
    run.setup_logging(run_dir, dist.rank, dist.main)
    rng.seed_everything(cfg.seed, cfg.train.deterministic)
    log.info("run folder %s, world %d, device %s", run_dir, dist.world, dist.device)
    return cfg, dist, run_dir


def evaluate_only(model, data: Data, cfg: schema.Config, dist: distributed.Dist, run_dir: Path,
                  args: argparse.Namespace) -> dict:
    """``--eval_only``: caption and score ``--eval_splits`` with ``--ckpt``; the test split's metrics."""
    if "val" in args.eval_splits and data.val is None:
        raise SystemExit("error: --eval_splits val: this config has no validation split (data.val or "
                         "data.val_split.fraction)")
    scored = {split: score_split(model, data, cfg, dist, run_dir, args.ckpt, split) for split in args.eval_splits}
    return scored.get("test", scored.get("val", {}))


def resume_trainer(trainer: Trainer, path: Path, payload: dict) -> None:
    """Model, optimizer, schedule, scaler, progress and RNG state from a checkpoint of this run."""
    if payload.get("state", {}).get("stage") == "scst":
        trainer.use_scst_optimizer()  # the optimizer the checkpoint's state belongs to
    trainer.load_state_dict(payload)
    log.info("resumed from %s: epoch %d, step %d", path, trainer.progress.epoch, trainer.progress.step)


# ============================================================================ one epoch ======
def train_epoch(trainer: Trainer, data: Data, writer, stop: run.StopRequest, stop_after_step: int,
                scst_df: Any = None) -> bool:
    """This rank's remaining batches of the current epoch; False when a stop was requested. In the
    self-critical stage (``scst_df``: the reward's document frequencies) each batch is a set of
    clips whose captions are sampled and rewarded before the step."""
    from tqdm import tqdm

    p, cfg, dist = trainer.progress, trainer.cfg, trainer.dist
    batches = epoch_batches(data, cfg, dist, p.epoch) if scst_df is None else scst.scst_batches(data, cfg, dist, p.epoch)
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


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:
        distributed.explain_failure(exc)
        raise
    finally:
        distributed.shutdown()
