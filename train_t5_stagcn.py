"""Train, resume, finetune and evaluate the STA-GCN + T5 motion captioner.

    torchrun --nproc_per_node N train_t5_stagcn.py --cfg_file configs/synthetic.yaml [key=value ...]
    python train_t5_stagcn.py --cfg_file configs/boxing.yaml data.root=../shared/data/BX
    python train_t5_stagcn.py --cfg_file results/boxing/config.yaml --eval_only

Each run lives in ``results/<experiment>/``: config.yaml, train.log, tb/, checkpoints/,
predictions/, metrics.jsonl and tokenizer/. Running the same command again resumes from the
newest good checkpoint; with no checkpoint but a file in ``pretrain_checkpoints/`` (or
``train.init_from``) the weights are loaded for finetuning.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from configs import schema
from training import checkpoint as ckpt
from models.build import build_model, tokenizer_files_of
from models.captioner import Captioner

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "synthetic.yaml"
# Keys that may change between a run and its resumption without making it "another experiment".
RESUMABLE_CHANGES = ("train.epochs", "train.limit_steps", "data.num_workers", "eval.")
log = logging.getLogger("motion2text")


# ============================================================================ command line ====
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
                        help="with --eval_only: best | last | epoch_NNNN | a file path (default best)")
    parser.add_argument("--allow_config_change", action="store_true",
                        help="run in a results folder whose config.yaml differs from this config")
    parser.add_argument("--stop_after_epoch", type=int, default=0,
                        help="exit cleanly after this epoch (the same command resumes later)")
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by torch.distributed.launch
    return parser.parse_args(argv)


# ============================================================================ distributed ====
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


def setup_distributed(cfg: schema.Config, local_rank_arg: int | None) -> Dist:
    """World from torchrun's environment (a world of one without it); NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    if use_cuda:
        torch.cuda.set_device(local_rank)  # by LOCAL rank: correct on every node
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1:
        # A peer that dies closes its sockets and the next collective fails at once; a peer that
        # hangs is caught by this timeout (NCCL aborts the communicator: async error handling).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        tdist.init_process_group("nccl" if use_cuda else "gloo",
                                 timeout=timedelta(seconds=cfg.train.dist_timeout_s))
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def gather_dicts(d: dict, dist: Dist) -> dict:
    """Merge per-rank dicts on every rank."""
    if dist.world == 1:
        return dict(d)
    parts: list[Any] = [None] * dist.world
    tdist.all_gather_object(parts, d)
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged


def broadcast_object(obj: Any, dist: Dist) -> Any:
    if dist.world == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


# ============================================================================ run folder =====
def prepare_run_dir(cfg: schema.Config, cfg_path: Path, run_dir: Path, dist: Dist,
                    allow_change: bool) -> None:
    """Create the folder, refuse one that belongs to another config, save the resolved config."""
    saved = run_dir / "config.yaml"
    is_source = saved.resolve() == cfg_path.resolve()
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        removed = ckpt.remove_temporaries(run_dir)
        if saved.is_file() and not is_source and not allow_change:
            import yaml
            old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            diff = ckpt.config_differences(old, schema.to_dict(cfg), RESUMABLE_CHANGES)
            if diff:
                raise SystemExit(
                    f"error: {run_dir} belongs to a different config ({saved}); differing keys: "
                    + "; ".join(diff[:10]) + ". Use another `experiment` name, or pass "
                    "--allow_config_change to run there anyway.")
        if not is_source:
            ckpt.atomic_write_text(schema.to_yaml(cfg), saved)
        for sub in ("checkpoints", "predictions", "tb"):
            (run_dir / sub).mkdir(exist_ok=True)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted run", file=sys.stderr)
    dist.barrier()


def setup_logging(run_dir: Path, dist: Dist) -> None:
    level = logging.INFO if dist.main else logging.WARNING
    fmt = logging.Formatter(f"%(asctime)s [rank {dist.rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if dist.main:
        file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        file.setFormatter(fmt)
        root.addHandler(file)
    for noisy in ("transformers", "torch", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# ============================================================================ data ===========
@dataclass
class Data:
    train: Any
    test: Any
    tokenizer: Any
    collate: Any
    groups: dict  # video_name -> motion_type, for the per-type breakdown


def data_files(cfg: schema.Config, run_dir: Path, dist: Dist) -> tuple[Path, Path, Path | None]:
    """Paths of the train / test / standard pickles; synthetic data is generated when absent."""
    d = cfg.data
    if d.kind == "synthetic":
        folder = run_dir / "data"
        if dist.main and not (folder / "test.pkl").is_file():
            from dataloaders import synthetic
            log.info("generating synthetic data (%s, seed %d) into %s", d.synthetic.mode, d.synthetic.seed, folder)
            synthetic.write(folder, seed=d.synthetic.seed, mode=d.synthetic.mode,
                            train_per_kind=d.synthetic.train_per_kind, test_per_kind=d.synthetic.test_per_kind)
        dist.barrier()
        return folder / "train.pkl", folder / "test.pkl", folder / "standard.pkl"
    root = Path(d.root) if Path(d.root).is_absolute() else REPO_ROOT / d.root
    standard = root / d.standard if d.standard else None
    return root / d.train, root / d.test, standard


def load_or_train_tokenizer(cfg: schema.Config, run_dir: Path, texts: list[str], dist: Dist,
                            init_state: dict | None) -> Any:
    """The tokenizer: a named one; the run's own; the pretrain checkpoint's; or trained here."""
    from models import text

    if cfg.model.tokenizer.name:
        return text.load_tokenizer(cfg.model.tokenizer.name)
    folder = run_dir / "tokenizer"
    if dist.main and not (folder / "tokenizer.json").is_file():
        if init_state is not None and init_state.get("tokenizer"):
            log.info("using the tokenizer stored in the pretrain checkpoint")
            files = init_state["tokenizer"]
        else:
            log.info("training a tokenizer (vocab <= %d) on %d training texts",
                     cfg.model.tokenizer.vocab_size, len(texts))
            tok = text.train_tokenizer(texts, cfg.model.tokenizer.vocab_size)
            files = tokenizer_files_of(tok)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            ckpt.atomic_write_text(content, folder / name)
    dist.barrier()
    return text.load_tokenizer(str(folder))


def build_data(cfg: schema.Config, run_dir: Path, dist: Dist, init_state: dict | None) -> Data:
    from dataloaders.collate import Collator
    from dataloaders.dataset import MotionTextDataset
    from dataloaders.records import load_records, load_standards

    train_file, test_file, standard_file = data_files(cfg, run_dir, dist)
    reference = cfg.model.reference == "subtract"
    needs_standard = reference or cfg.data.segment != "none"
    standards = None
    if needs_standard and standard_file is not None and standard_file.is_file():
        standards = load_standards(standard_file)
    elif needs_standard and standard_file is not None:
        raise FileNotFoundError(f"data.standard: {standard_file} does not exist")
    read = dict(standards=standards, on_bad=cfg.data.on_bad)
    train_records = load_records(train_file, **read)
    test_records = load_records(test_file, **read)
    common = dict(standards=standards, segment=cfg.data.segment, normalise=cfg.data.normalise,
                  reference=reference and standards is not None, seed=cfg.seed,
                  min_frames=cfg.model.encoder.temporal_kernel, on_bad=cfg.data.on_bad)
    train = MotionTextDataset(train_records, labels=cfg.data.labels, source=str(train_file),
                              augmented_labels=cfg.data.augmented_labels, train=True, **common)
    test = MotionTextDataset(test_records, train=False, source=str(test_file), **common)
    texts = [t for r in train_records for t in r["labels"] + (r.get("augmented_labels") or [])]
    tokenizer = load_or_train_tokenizer(cfg, run_dir, texts, dist, init_state)
    groups = {r["video_name"]: r.get("motion_type") or "all" for r in test_records}
    log.info("data: %d train samples from %d clips (%s), %d test clips (%s)",
             len(train), len(train_records), train_file, len(test), test_file)
    return Data(train, test, tokenizer, Collator(tokenizer, max_target_len=cfg.data.max_target_len), groups)


def epoch_loader(data: Data, cfg: schema.Config, dist: Dist, epoch: int, skip_batches: int) -> DataLoader:
    """This rank's batches for one epoch, in the same order whenever the epoch is replayed."""
    if hasattr(data.train, "set_epoch"):
        data.train.set_epoch(epoch)
    sampler = DistributedSampler(data.train, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=cfg.train.drop_last)
    sampler.set_epoch(epoch)
    batches = list(BatchSampler(list(sampler), cfg.train.batch_size, drop_last=cfg.train.drop_last))
    # Its own generator: starting the iterator would otherwise draw a seed from the global RNG, an
    # extra draw on a mid-epoch resume that shifts every later dropout mask.
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(data.train, batch_sampler=batches[skip_batches:], collate_fn=data.collate,
                      num_workers=cfg.data.num_workers, generator=generator)


def steps_per_epoch(data: Data, cfg: schema.Config, dist: Dist) -> int:
    per_rank = math.ceil(len(data.train) / dist.world) if not cfg.train.drop_last else len(data.train) // dist.world
    steps = per_rank // cfg.train.batch_size if cfg.train.drop_last else math.ceil(per_rank / cfg.train.batch_size)
    if steps == 0:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} with drop_last leaves no batch: "
                         f"{len(data.train)} training samples over {dist.world} process(es)")
    return min(steps, cfg.train.limit_steps) if cfg.train.limit_steps else steps


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ============================================================================ model ==========
def load_finetune_weights(model: Captioner, state: dict, source: Path) -> None:
    """Copy matching tensors; skip those whose shape differs; log missing/unexpected/skipped."""
    own = model.state_dict()
    incoming = state["model"]
    usable = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    skipped = [f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}" for k, v in incoming.items()
               if k in own and own[k].shape != v.shape]
    result = model.load_state_dict(usable, strict=False)
    missing = [k for k in result.missing_keys if k not in {s.split(" ")[0] for s in skipped}]
    unexpected = [k for k in incoming if k not in own]
    log.info("finetuning from %s: %d tensors loaded", source, len(usable))
    log.info("finetune: skipped (shape differs): %s", skipped or "none")
    log.info("finetune: missing (kept at init): %s", missing or "none")
    log.info("finetune: unexpected (ignored): %s", unexpected or "none")


def finetune_source(cfg: schema.Config, run_dir: Path) -> Path | None:
    if cfg.train.init_from:
        path = Path(cfg.train.init_from)
        path = path if path.is_absolute() else REPO_ROOT / path
        if not path.is_file():
            raise FileNotFoundError(f"train.init_from: {path} does not exist")
        return path
    return ckpt.newest_file(run_dir / "pretrain_checkpoints")


# ============================================================================ optimisation ===
@dataclass
class State:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of `epoch` already done (mid-epoch checkpoint)
    best_score: float = -math.inf
    best_epoch: int = -1
    nonfinite_total: int = 0


def build_optimizer(model: torch.nn.Module, cfg: schema.Config, total_steps: int, device: torch.device):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, fused=fused) if fused else \
        torch.optim.AdamW(groups, lr=cfg.train.lr)
    warmup = max(1, int(cfg.train.warmup_ratio * total_steps))

    def lr_factor(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    return optimizer, scheduler


def amp_settings(cfg: schema.Config, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """(autocast dtype or None, GradScaler or None): bf16 where supported, else fp16 + scaler."""
    if not (cfg.train.amp and device.type == "cuda"):
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


# ============================================================================ checkpoints ====
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_checkpoint(model, optimizer, scheduler, scaler, state: State, cfg, tokenizer_files) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "state": vars(state).copy(), "rng": rng_state(), "config": schema.to_dict(cfg),
            "tokenizer": tokenizer_files}


def save_training_checkpoint(run_dir: Path, payload: dict, state: State, keep: int, epoch_file: bool) -> None:
    """Write ``epoch_NNNN.pt`` (at epoch ends) and ``last.pt``; prune old epoch files."""
    folder = run_dir / "checkpoints"
    ckpt.atomic_save(payload, folder / "last.pt")
    if epoch_file:
        ckpt.atomic_save(payload, folder / f"epoch_{state.epoch:04d}.pt")
        epochs = sorted(folder.glob("epoch_*.pt"), key=lambda p: ckpt.natural_key(p.name))
        for old in epochs[:-max(keep, 1)]:
            old.unlink(missing_ok=True)


def restore(model, optimizer, scheduler, scaler, payload: dict) -> State:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])
    return State(**payload["state"])


# ============================================================================ evaluation =====
def evaluate(model: Captioner, data: Data, cfg: schema.Config, dist: Dist) -> tuple[dict, dict]:
    """Every rank captions its share of the test clips; returns (predictions, metrics) on all ranks."""
    from evaluation import evaluate as score_all

    model.eval()
    share = list(range(dist.rank, len(data.test), dist.world))  # no clip dropped, none twice
    lengths = data.test.clip_lengths()
    share.sort(key=lambda i: lengths[i])  # batches of similar lengths: less padding (bench/generate.py)
    loader = DataLoader(data.test, batch_sampler=BatchSampler(share, cfg.eval.batch_size, False),
                        collate_fn=data.collate, num_workers=cfg.data.num_workers)
    mine: dict[str, str] = {}
    for batch in loader:
        batch = to_device(batch, dist.device)
        texts = model.generate(batch, num_beams=cfg.eval.num_beams, max_new_tokens=cfg.eval.max_new_tokens)
        mine.update(zip(batch["video_names"], texts))
    predictions = gather_dicts(mine, dist)
    metrics: dict = {}
    if dist.main:
        refs = data.test.references()
        metrics, by_type = score_all(predictions, refs, data.groups, use_java=cfg.eval.use_java,
                                     allow_empty_predictions=True)  # an untrained model may say nothing
        if len(by_type) > 1:
            metrics["by_motion_type"] = by_type
    model.train()
    return predictions, broadcast_object(metrics, dist)


def trim_metrics(path: Path, last_epoch: int) -> None:
    """Keep the ``metrics.jsonl`` lines of epochs <= ``last_epoch`` (the resumed checkpoint's; -1
    on a fresh start). A run killed after an evaluation but before that epoch's checkpoint
    evaluates the epoch again on resume; without this its line would appear twice (or half-written).
    """
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and entry["epoch"] <= last_epoch:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        log.info("metrics.jsonl: dropped %d line(s) written after the checkpoint being resumed", dropped)
        ckpt.atomic_write_text("".join(k + "\n" for k in kept), path)


def log_evaluation(run_dir: Path, writer, epoch: int, state: State, predictions: dict, metrics: dict,
                   data: Data, cfg: schema.Config, model: Captioner | None = None) -> None:
    ckpt.atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1),
                           run_dir / "predictions" / f"epoch_{epoch:04d}.json")
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": epoch, "step": state.step, **metrics}) + "\n")
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    log.info("epoch %d metrics: %s", epoch, "  ".join(f"{k} {v:.4f}" for k, v in flat.items()))
    refs = data.test.references()
    samples = sorted(predictions)[: cfg.eval.num_logged_samples]
    lines = [f"**{vid}**  \npred: {predictions[vid]}  \nref: {refs[vid][0]}" for vid in samples]
    for vid in samples:
        log.info("  %s | pred: %s | ref: %s", vid, predictions[vid], refs[vid][0])
    if writer is not None:
        for k, v in flat.items():
            writer.add_scalar(f"eval/{k}", v, state.step)
        writer.add_text("eval/samples", "\n\n".join(lines), state.step)
        if model is not None and cfg.eval.num_logged_pictures > 0:
            log_attention_pictures(writer, model, data, cfg, samples, state.step)
        writer.flush()


_picture_warnings: set[str] = set()


def log_attention_pictures(writer, model: Captioner, data: Data, cfg: schema.Config, video_names: list[str],
                           step: int) -> None:
    """Node- and cross-attention heat maps of the first logged test clips (skipped without matplotlib)."""
    try:
        from evaluation import pictures
        pictures.require_matplotlib()
    except ImportError as exc:
        if "matplotlib" not in _picture_warnings:
            _picture_warnings.add("matplotlib")
            log.warning("attention pictures are not logged: %s", exc)
        return
    index = {vid: i for i, vid in enumerate(data.test.clip_ids())}
    names = [vid for vid in video_names if vid in index][:cfg.eval.num_logged_pictures]
    if not names:
        return
    batch = to_device(data.collate([data.test[index[vid]] for vid in names]), next(model.parameters()).device)
    with torch.random.fork_rng(devices=[]):  # leave the training RNG stream untouched
        attentions = pictures.clip_attention(model, batch, num_beams=cfg.eval.num_beams,
                                             max_new_tokens=cfg.eval.max_new_tokens)
    for attn in attentions:
        matrix, columns = pictures.attention_for_display(attn)
        writer.add_figure(f"attention/node/{attn.video_name}", pictures.node_attention_figure(
            attn.node, frame_stride=attn.frame_stride, title=f"{attn.video_name}: node attention"), step)
        writer.add_figure(f"attention/cross/{attn.video_name}", pictures.cross_attention_figure(
            matrix, attn.words, columns, title=f"{attn.video_name}: {attn.text}"), step)


# ============================================================================ training =======
class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary and exits 0."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def restore(self) -> None:
        """Put back the handlers that were there before (matters when main() runs in-process)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d received: saving a checkpoint at the next step boundary", signum)


def train_one_epoch(ddp_model, model, data, cfg, dist, optimizer, scheduler, scaler, amp_dtype,
                    state: State, writer, stop: StopRequest, on_step_checkpoint) -> bool:
    """One pass over this rank's batches; returns False when a stop was requested mid-epoch."""
    from tqdm import tqdm

    n_steps = steps_per_epoch(data, cfg, dist)
    loader = epoch_loader(data, cfg, dist, state.epoch, state.batch_in_epoch)
    bar = tqdm(total=n_steps, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}",
               disable=not dist.main, dynamic_ncols=True, leave=False,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)  # quiet in log files
    nonfinite_in_row, t0, seen, loss_sum = 0, time.perf_counter(), 0, 0.0
    for batch in loader:
        if state.batch_in_epoch >= n_steps:
            break
        batch = to_device(batch, dist.device)
        with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = ddp_model(batch)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
        # one host sync per step, needed to skip non-finite steps identically on every rank
        loss_value, norm_value = torch.stack([loss.detach().float(), grad_norm.float()]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            nonfinite_in_row, state.nonfinite_total = nonfinite_in_row + 1, state.nonfinite_total + 1
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.update()
            log.warning("non-finite loss/gradient at step %d (clips %s): step skipped",
                        state.step, ", ".join(batch["video_names"][:8]))
            if writer is not None:
                writer.add_scalar("train/nonfinite_steps", state.nonfinite_total, state.step)
            if nonfinite_in_row >= cfg.train.max_nonfinite:
                raise FloatingPointError(
                    f"{nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                    f"{cfg.train.max_nonfinite}); last batch's clips: {', '.join(batch['video_names'])}")
        else:
            nonfinite_in_row = 0
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            loss_sum += loss_value
        state.batch_in_epoch += 1
        seen += batch["x"].shape[0] * dist.world
        lr = scheduler.get_last_lr()[0]
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                        samples_s=f"{seen / (time.perf_counter() - t0):.1f}")
        bar.update(1)
        if writer is not None and state.step % cfg.train.log_every == 0:
            writer.add_scalar("train/loss", loss_value, state.step)
            writer.add_scalar("train/lr", lr, state.step)
            writer.add_scalar("train/grad_norm", norm_value, state.step)
        if stop_requested(stop, dist):
            on_step_checkpoint()
            bar.close()
            return False
    bar.close()
    log.info("epoch %d done: mean loss %.4f, %d steps, %.1f samples/s", state.epoch + 1,
             loss_sum / max(1, n_steps), state.step, seen / max(1e-9, time.perf_counter() - t0))
    return True


def stop_requested(stop: StopRequest, dist: Dist) -> bool:
    """True on every rank when any rank got a stop signal."""
    if dist.world == 1:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=dist.device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    return bool(flag.item())


def is_eval_epoch(epoch: int, cfg: schema.Config) -> bool:
    return epoch % cfg.eval.every == 0 or epoch == cfg.train.epochs


def run_eval_only(model, data, cfg, dist, run_dir: Path, which: str) -> dict:
    path = Path(which)
    if not path.is_file():
        path = run_dir / "checkpoints" / (which if which.endswith(".pt") else f"{which}.pt")
    payload = ckpt.load_checkpoint(path)
    model.load_state_dict(payload["model"])
    predictions, metrics = evaluate(model, data, cfg, dist)
    if dist.main:
        out = run_dir / "predictions" / f"eval_{path.stem}.json"
        ckpt.atomic_write_text(json.dumps(dict(sorted(predictions.items())), indent=1), out)
        ckpt.atomic_write_text(json.dumps(metrics, indent=1), run_dir / f"eval_{path.stem}_metrics.json")
        log.info("eval of %s: %s", path, json.dumps({k: v for k, v in metrics.items() if k != "by_motion_type"}))
    return metrics


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg_path = Path(args.cfg_file)
    cfg = schema.load_config(cfg_path, args.overrides)
    dist = setup_distributed(cfg, args.local_rank)
    run_dir = ckpt.resolve_run_dir(REPO_ROOT / cfg.results_dir, cfg_path, cfg.experiment)
    prepare_run_dir(cfg, cfg_path, run_dir, dist, args.allow_config_change)
    setup_logging(run_dir, dist)
    seed_everything(cfg.seed, cfg.train.deterministic)
    log.info("run folder %s, world %d, device %s", run_dir, dist.world, dist.device)

    resume = None if args.eval_only else ckpt.load_first_good(ckpt.resume_candidates(run_dir / "checkpoints"))
    init_path = None if resume or args.eval_only else finetune_source(cfg, run_dir)
    init_state = ckpt.load_checkpoint(init_path) if init_path else None
    data = build_data(cfg, run_dir, dist, init_state)
    model = build_model(cfg, data.tokenizer).to(dist.device)
    log.info("model: %.2fM parameters (encoder %.2fM, T5 %.2fM)", n_params(model) / 1e6,
             n_params(model.encoder) / 1e6, n_params(model.t5) / 1e6)
    if args.eval_only:
        return run_eval_only(model, data, cfg, dist, run_dir, args.ckpt)

    total_steps = steps_per_epoch(data, cfg, dist) * cfg.train.epochs
    optimizer, scheduler = build_optimizer(model, cfg, total_steps, dist.device)
    amp_dtype, scaler = amp_settings(cfg, dist.device)
    state = State()
    if resume:
        state = restore(model, optimizer, scheduler, scaler, resume[1])
        log.info("resumed from %s: epoch %d, step %d", resume[0], state.epoch, state.step)
    elif init_state is not None:
        load_finetune_weights(model, init_state, init_path)
    del init_state
    if dist.main:
        trim_metrics(run_dir / "metrics.jsonl", state.epoch if resume else -1)

    ddp_model = DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None) \
        if dist.world > 1 else model
    writer = make_writer(run_dir, dist)
    tok_files = tokenizer_files_of(data.tokenizer)
    stop = StopRequest()

    def save(epoch_end: bool) -> None:
        if dist.main:
            payload = training_checkpoint(model, optimizer, scheduler, scaler, state, cfg, tok_files)
            save_training_checkpoint(run_dir, payload, state, cfg.train.keep_epoch_checkpoints, epoch_end)
        dist.barrier()

    try:
        metrics: dict = {}
        if cfg.eval.at_start and state.step == 0 and state.epoch == 0 and not resume:
            predictions, metrics = evaluate(model, data, cfg, dist)
            if dist.main:
                log_evaluation(run_dir, writer, 0, state, predictions, metrics, data, cfg, model)
        model.train()
        while state.epoch < cfg.train.epochs:
            if not train_one_epoch(ddp_model, model, data, cfg, dist, optimizer, scheduler, scaler, amp_dtype,
                                   state, writer, stop, lambda: save(False)):
                log.info("stopped on request at epoch %d, step %d; run the same command to resume",
                         state.epoch + 1, state.step)
                return metrics
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if is_eval_epoch(state.epoch, cfg):
                predictions, metrics = evaluate(model, data, cfg, dist)
                if dist.main:
                    log_evaluation(run_dir, writer, state.epoch, state, predictions, metrics, data, cfg, model)
                    keep_best(run_dir, model, metrics, state, cfg, tok_files)
                state.best_score = broadcast_object(state.best_score, dist)
            if state.epoch % cfg.train.save_every_epochs == 0 or state.epoch == cfg.train.epochs:
                save(True)
            if args.stop_after_epoch and state.epoch >= args.stop_after_epoch:
                log.info("stopping after epoch %d as asked (--stop_after_epoch)", state.epoch)
                break
        check_replicas(model, dist)
        if writer is not None:
            writer.close()
        log.info("done: best %s %.4f at epoch %d", cfg.eval.metric, state.best_score, state.best_epoch)
        return metrics
    finally:
        stop.restore()


def check_replicas(model: torch.nn.Module, dist: Dist) -> None:
    """Compare every parameter with rank 0's copy; a difference means the ranks drifted apart."""
    if dist.world == 1:
        return
    worst = torch.zeros((), device=dist.device)
    for p in model.parameters():
        ref = p.detach().clone()
        tdist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max())
    tdist.all_reduce(worst, op=tdist.ReduceOp.MAX)
    if worst.item() != 0.0:
        raise RuntimeError(f"model replicas differ across ranks (max abs difference {worst.item():.3g})")
    log.info("replicas identical on %d ranks (max abs difference 0)", dist.world)


def keep_best(run_dir: Path, model, metrics: dict, state: State, cfg: schema.Config, tok_files) -> None:
    score = metrics.get(cfg.eval.metric)
    if score is None:
        log.warning("eval.metric %s was not computed (have: %s); best.pt not updated",
                    cfg.eval.metric, ", ".join(k for k in metrics if k != "by_motion_type"))
        return
    if score > state.best_score:
        state.best_score, state.best_epoch = float(score), state.epoch
        ckpt.atomic_save({"model": model.state_dict(), "config": schema.to_dict(cfg),
                          "tokenizer": tok_files, "state": vars(state).copy(), "metrics": metrics},
                         run_dir / "checkpoints" / "best.pt")
        log.info("new best %s %.4f at epoch %d -> checkpoints/best.pt", cfg.eval.metric, score, state.epoch)


def make_writer(run_dir: Path, dist: Dist):
    if not dist.main:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(run_dir / "tb"))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def explain_distributed_failure(exc: BaseException) -> None:
    """One clear line after a failed collective: which rank, why it is most likely, what to do."""
    if not (tdist.is_available() and tdist.is_initialized() and isinstance(exc, RuntimeError)):
        return
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.error("rank %d of %d: a collective operation failed (%s). Another process has most likely "
              "died or hung (see its log; a silent peer is given up after train.dist_timeout_s). "
              "Run the same command to resume from the last checkpoint.",
              tdist.get_rank(), tdist.get_world_size(), first_line[:300])


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:
        explain_distributed_failure(exc)
        raise
    finally:
        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
