"""Data-pipeline throughput: clips/s through ``MotionTextDataset.__getitem__`` and the ``Collator``
on one core, and the first-load time of the dataset.

    python -m bench.data [--batch 32] [--epochs 3] [--threads 1] [--data auto|bx|synthetic]
                         [--device cpu|cuda] [--quick] [--out bench/results/data.json]

First load (cold: the first time in this process; the OS file cache is not dropped): reading the
standards and the train / test pickles (``load_standards``, ``load_records``: safe unpickling and
validation) and building the datasets as configs/boxing.yaml does with ``data.segment=aligned
model.reference=subtract data.mirror=0`` (aligned segments, standards resampled to each clip,
paraphrases added), which computes every clip's joint + bone features once. A second, warm
load is timed for comparison, and the tokenizer's training for reference.

Throughput: ``--epochs`` passes over the training samples in shuffled batches of ``--batch``,
each pass timed; the figure is the median pass. Rows: ``__getitem__`` alone, with the Collator
padding frames only, with the Collator tokenising the targets too (what training does per batch;
target >= 5,000 clips/s), the same through a ``DataLoader`` (``num_workers=0``), and with
``--device cuda`` the copy of each batch to the GPU as well. One torch thread by default
(``--threads``), as one data-loader worker has. Falls back to synthetic data, with a note, when BX
is absent. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from bench import common
from dataloaders.collate import Collator

TARGET_CLIPS_PER_S = 5000.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="samples per batch (default 32)")
    parser.add_argument("--epochs", type=int, default=None, help="timed passes per row (default 3; --quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda to add a row with the host-to-GPU copy (default cpu)")
    parser.add_argument("--quick", action="store_true", help="one pass per row")
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="auto",
                        help="auto: BX when present, else synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR / "data.json")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (1 if args.quick else 3)
    if args.batch < 1 or args.epochs < 1 or args.threads < 1:
        parser.error("--batch, --epochs and --threads must be >= 1")
    return args


# ============================================================================ first load =====
def timed_load(kind: str, tmp: Path) -> tuple[common.Source, dict, Any]:
    """Records, standards and both datasets, with the seconds of each step."""
    source = common.load_source(kind, tmp_dir=tmp)
    seconds = dict(source.seconds)
    start = time.perf_counter()
    train = common.train_dataset(source)
    seconds["dataset(train)"] = time.perf_counter() - start
    start = time.perf_counter()
    common.eval_dataset(source.test, source)
    seconds["dataset(test)"] = time.perf_counter() - start
    seconds["total"] = sum(seconds.values())
    return source, seconds, train


# ============================================================================ throughput =====
def epoch_batches(n: int, batch: int, seed: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[k:k + batch] for k in range(0, n, batch)]


def passes(run: Callable[[list[list[int]]], None], n: int, batch: int, epochs: int, seed: int) -> list[float]:
    """Seconds of each of ``epochs`` passes (a fresh shuffle each)."""
    out = []
    for epoch in range(epochs):
        batches = epoch_batches(n, batch, seed + 1 + epoch)
        start = time.perf_counter()
        run(batches)
        out.append(time.perf_counter() - start)
    return out


def pipelines(dataset, tokenizer: Any, device: torch.device) -> dict[str, Callable[[list[list[int]]], None]]:
    """Each row's work for an epoch's batches of indices (each row has a Collator of its own, so
    its first pass starts with an empty token-id cache)."""
    def items_only(batches):
        for b in batches:
            [dataset[i] for i in b]

    def collate_with(collate):
        def run(batches):
            for b in batches:
                collate([dataset[i] for i in b])
        return run

    def data_loader(collate):
        def run(batches):
            for _ in DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=0):
                pass
        return run

    def to_gpu(collate):
        def run(batches):
            for b in batches:
                common.to_device(collate([dataset[i] for i in b]), device)
            torch.cuda.synchronize(device)
        return run

    rows = {"__getitem__ only": items_only,
            "__getitem__ + Collator (frames only)": collate_with(Collator(None)),
            "__getitem__ + Collator (with tokenizer)": collate_with(Collator(tokenizer, max_target_len=64)),
            "DataLoader(num_workers=0) + Collator": data_loader(Collator(tokenizer, max_target_len=64))}
    if device.type == "cuda":
        rows["... + copy to GPU"] = to_gpu(Collator(tokenizer, max_target_len=64))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    torch.set_num_threads(args.threads)
    common.quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="m2t_bench_") as tmp:
        source, cold, dataset = timed_load(args.data, Path(tmp))
        _, warm, _ = timed_load(args.data, Path(tmp))
    start = time.perf_counter()
    tokenizer = common.make_tokenizer(source)
    tokenizer_s = time.perf_counter() - start

    print(f"data: {source.note}; {len(source.train)} train clips -> {len(dataset)} samples, "
          f"{len(source.test)} test clips; threads {torch.get_num_threads()}\n")
    print(f"{'first load step':<24} {'cold s':>8} {'warm s':>8}")
    for step in cold:
        print(f"{step:<24} {cold[step]:>8.3f} {warm[step]:>8.3f}")
    print(f"(tokenizer training, once per run: {tokenizer_s:.2f} s, {len(tokenizer)} tokens)\n")

    rows = []
    for name, run in pipelines(dataset, tokenizer, device).items():
        seconds = passes(run, len(dataset), args.batch, args.epochs, args.seed)
        median = statistics.median(seconds)
        rows.append({"pipeline": name, "batch": args.batch, "samples": len(dataset), "epochs": args.epochs,
                     "epoch_s": median, "epoch_s_all": seconds, "clips_per_s": len(dataset) / median,
                     "first_pass_clips_per_s": len(dataset) / seconds[0],
                     "us_per_clip": 1e6 * median / len(dataset)})
    print(f"{'pipeline (batches of %d)' % args.batch:<40} {'s/epoch':>8} {'clips/s':>9} {'us/clip':>8} "
          f"{'1st pass clips/s':>17}")
    for r in rows:
        print(f"{r['pipeline']:<40} {r['epoch_s']:>8.3f} {r['clips_per_s']:>9.0f} {r['us_per_clip']:>8.1f} "
              f"{r['first_pass_clips_per_s']:>17.0f}")
    print("s/epoch, clips/s, us/clip: median pass; 1st pass: the first epoch, when the Collator "
          "tokenises every text once")
    target = next(r for r in rows if r["pipeline"] == "__getitem__ + Collator (with tokenizer)")
    verdict = "met" if target["clips_per_s"] >= TARGET_CLIPS_PER_S else "NOT met"
    print(f"target >= {TARGET_CLIPS_PER_S:,.0f} clips/s through __getitem__ + Collator with tokenizer: "
          f"{verdict} ({target['clips_per_s']:,.0f}, median of {args.epochs} pass(es))")
    common.write_json(args.out, {
        "data": source.note, "environment": common.environment(device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "first_load_s": {"cold": cold, "warm": warm}, "tokenizer_training_s": tokenizer_s,
        "target_clips_per_s": TARGET_CLIPS_PER_S, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
