"""Full finetuning against LoRA and frozen parts: trainable parameters, peak memory and step time.

    python -m bench.lora [--config small|tiny] [--batch 8] [--steps 4] [--warmup 1] [--threads 1]
                         [--variants full,lora_r8,...] [--inline] [--out bench/results/lora.json]

The model is ``bench.common``'s ``small`` captioner (T5-small's shape: d_model 512, d_ff 2048,
6 + 6 layers, 8 heads, vocabulary padded to 32128 rows, random weights; the 8-block STA-GCN of
configs/pretrain_humanml3d.yaml; ``time_pool``, so 22 motion tokens; no reference branch), built
with ``models.build.build_model``; LoRA and ``train.freeze`` are applied as training applies them
(``models.lora.wrap`` after the vocabulary is padded, then ``training.freeze.apply_freeze``), and the
optimizer is training's AdamW over what still requires a gradient. A step is the training loop's:
forward (teacher-forced loss), backward, clipping to norm 1, AdamW step, ``zero_grad``.

Each variant runs in its own child process (``python -m bench.lora --child VARIANT``) on the same
batches (synthetic coach-mode clips, drawn with one seed; the table states the padded clip length
and the label length), so memory figures do not mix:

* ``peak RSS``: the child's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
  at the end, libraries and Python included;
* ``RSS delta``: that peak minus the peak just before the first step (model, batches and an empty
  optimizer already there): what training steps add (activations, gradients, AdamW state);
* ``grad+Adam MiB``: the gradient and AdamW-state tensors after the last step, summed.

``--inline`` runs the variants in this process instead (quick; no memory figures). Timings on a
shared CPU are noisy; read the ratios between rows, measured in one run.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import common

MIB = 2 ** 20
# name -> (LoRA settings or None, train.freeze parts)
VARIANTS: dict[str, tuple[dict | None, list[str]]] = {
    "full": (None, []),
    "lora_r8": ({"r": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": ["q", "v"]}, []),
    "lora_r16": ({"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["q", "v"]}, []),
    "freeze_encoder": (None, ["encoder"]),
    "freeze_t5_encoder": (None, ["t5_encoder", "embeddings"]),
    "lora_r8_freeze_encoder": ({"r": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": ["q", "v"]}, ["encoder"]),
}
DESCRIPTIONS = {
    "full": "everything trains",
    "lora_r8": "LoRA r=8 (alpha 16) on q, v; T5 frozen",
    "lora_r16": "LoRA r=16 (alpha 32) on q, v; T5 frozen",
    "freeze_encoder": "STA-GCN encoder frozen",
    "freeze_t5_encoder": "T5 encoder and embeddings frozen",
    "lora_r8_freeze_encoder": "LoRA r=8 and STA-GCN frozen",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.lora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=tuple(common.MODEL_CONFIGS), default="small", help="model size (default small)")
    p.add_argument("--variants", type=common.choice_list(tuple(VARIANTS)), default=list(VARIANTS),
                   help="comma-separated, out of " + ", ".join(VARIANTS))
    p.add_argument("--batch", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inline", action="store_true", help="run the variants in this process (no memory figures)")
    p.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR / "lora.json")
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--batch, --steps and --threads must be >= 1, --warmup >= 0")
    return args


# ============================================================================ one variant ====
def build(config: str, variant: str, tokenizer: Any, seed: int) -> torch.nn.Module:
    """The captioner of ``config`` with the variant's LoRA and frozen parts, as training sets them."""
    from models import lora
    from models.build import build_model
    from training.freeze import apply_freeze

    settings, parts = VARIANTS[variant]
    torch.manual_seed(seed)
    model = build_model(common.model_config(config, "time_pool", "none"), tokenizer)
    rows = common.VOCAB_ROWS[config]
    if rows > model.t5.get_input_embeddings().num_embeddings:
        model.t5.resize_token_embeddings(rows, mean_resizing=False)  # T5-small's vocabulary, before LoRA
    model.t5 = lora.wrap(model.t5, settings)
    apply_freeze(model, parts)
    return model.train()


def batches_for(args: argparse.Namespace, tokenizer: Any, source: common.Source) -> list[dict]:
    from dataloaders.collate import Collator

    dataset = common.train_dataset(source, reference=False)
    collate = Collator(tokenizer, max_target_len=32)
    keys = ("x", "mask", "labels")
    return [{k: b[k] for k in keys} for b in common.random_batches(dataset, collate, args.batch,
                                                                  args.warmup + args.steps, args.seed)]


def run_variant(args: argparse.Namespace, variant: str, tokenizer: Any, batches: list[dict]) -> dict:
    from models.build import parameter_counts
    from training.optim import adamw

    model = build(args.config, variant, tokenizer, args.seed)
    optimizer = adamw(model, 1e-4, 0.01, torch.device("cpu"))
    trainable, total = parameter_counts(model)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        loss = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{variant}: non-finite loss at step {k}")
        if k >= args.warmup:
            times.append(time.perf_counter() - start)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    adam = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    return {"variant": variant, "description": DESCRIPTIONS[variant], "trainable": trainable, "total": total,
            "step_s": statistics.median(times), "step_s_all": times, "peak_rss_MiB": rss_peak / MIB,
            "rss_delta_MiB": (rss_peak - rss_before) / MIB, "grad_adam_MiB": (grads + adam) / MIB}


def shapes(batches: list[dict]) -> dict:
    return {"frames": [int(b["x"].shape[2]) for b in batches],
            "label_tokens": [int(b["labels"].shape[1]) for b in batches]}


def setup(args: argparse.Namespace, tmp: Path) -> tuple[Any, list[dict], str]:
    torch.set_num_threads(args.threads)
    common.quiet_libraries()
    source = common.load_source("synthetic", per_kind=8, tmp_dir=tmp)
    tokenizer = common.make_tokenizer(source)
    return tokenizer, batches_for(args, tokenizer, source), source.note


def child(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="m2t_bench_lora_") as tmp:
        tokenizer, batches, _ = setup(args, Path(tmp))
        row = run_variant(args, args.child, tokenizer, batches)
    print(json.dumps(row))
    return 0


def in_child(args: argparse.Namespace, variant: str) -> dict:
    command = [sys.executable, "-m", "bench.lora", "--child", variant, "--config", args.config,
               "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--seed", str(args.seed)]
    done = subprocess.run(command, cwd=common.REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ============================================================================ main ===========
def print_table(rows: list[dict], info: dict) -> None:
    print(f"{'variant':<23} {'trainable':>12} {'total':>12} {'share':>7} {'peak RSS MiB':>12} {'RSS delta MiB':>13} "
          f"{'grad+Adam MiB':>13} {'s/step':>7}")
    for r in rows:
        peak = "n/a" if r.get("peak_rss_MiB") is None else f"{r['peak_rss_MiB']:.0f}"
        delta = "n/a" if r.get("rss_delta_MiB") is None else f"{r['rss_delta_MiB']:.0f}"
        print(f"{r['variant']:<23} {r['trainable']:>12,} {r['total']:>12,} {100 * r['trainable'] / r['total']:>6.2f}% "
              f"{peak:>12} {delta:>13} {r['grad_adam_MiB']:>13.1f} {r['step_s']:>7.2f}")
    print(f"config {info['config']}, batch {info['batch']} clips, padded lengths {info['frames']} frames, "
          f"labels {info['label_tokens']} tokens, 22 motion tokens (time_pool); {info['threads']} thread(s); "
          f"s/step: median of {info['steps']} steps after {info['warmup']} warm-up.")
    print("peak RSS: ru_maxrss of the variant's own process; RSS delta: that peak minus the peak just before the "
          "first step; grad+Adam: gradient and AdamW-state tensors after the last step.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="m2t_bench_lora_") as tmp:
        tokenizer, batches, note = setup(args, Path(tmp))
        info = {"config": args.config, "batch": args.batch, "threads": args.threads, "steps": args.steps,
                "warmup": args.warmup, "data": note, **shapes(batches)}
        rows = []
        for variant in args.variants:
            if args.inline:
                row = run_variant(args, variant, tokenizer, batches)
                row.update(peak_rss_MiB=None, rss_delta_MiB=None)
            else:
                row = in_child(args, variant)
            rows.append(row)
            print(f"{variant}: {row['step_s']:.2f} s/step", file=sys.stderr, flush=True)
    print_table(rows, info)
    common.write_json(args.out, {"environment": common.environment(torch.device("cpu")), "settings": info,
                                 "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
