"""Training-step throughput and peak memory, with and without the reference branch, and the cost
of padding every clip to the dataset's longest.

    python -m bench.train_step [--full] [--device cpu|cuda] [--configs tiny,small] [--batches 8,32]
                               [--policies time_pool,skeleton_pool,origin] [--steps 2] [--warmup 1]
                               [--amp bf16] [--fused-adamw] [--compile]
                               [--data auto|bx|synthetic] [--out bench/results/train_step.json]

Two grids:

* the default: the ``tiny`` model, its three projection policies, batch 8, 1 warm-up + 2 timed
  steps, and the padding part with 2 timed steps per variant. About a minute on 2 CPU cores
  (OMP_NUM_THREADS=1 on BX: 40 s of CPU time; 90 s of wall time on a machine busy with other work).
* ``--full``: ``tiny`` and ``small``, three policies, batches 8 and 32, 4 timed steps, 6 padding
  steps. Tens of minutes on 2 CPU cores (``small`` takes about 10-15 s a step at batch 8 there);
  a few minutes on one GPU.

``--configs``, ``--batches``, ``--policies``, ``--steps`` and ``--padding-steps`` override either
grid; without ``--full``, ``small`` runs only ``time_pool`` unless ``--policies`` is given, and on
a CPU only at the smallest batch size.

A step is what the training loop does per batch: forward (teacher-forced loss), backward, gradient
clipping to norm 1, AdamW step, ``zero_grad(set_to_none=True)``. Models come from
``models.build.build_model`` on configs/synthetic.yaml:

* ``tiny``: that config's model (STA-GCN [32, 64, 64], T5 d_model 128, 2 + 2 layers);
* ``small``: T5-small's shape (d_model 512, d_ff 2048, 6 + 6 layers, 8 heads, vocabulary padded to
  32128 rows) with configs/pretrain_humanml3d.yaml's encoder (8 blocks, 64..256 channels).

Every (config, projection policy, batch size) cell builds the plain model (``reference: none``)
and the reference model (``reference: subtract``) from the same seed and times them on the same
batches, alternating plain and reference steps so that a change in machine load hits both; the
figure is the median step. ``ref/plain`` is the reference model's median step over the plain
one's (target <= 1.3x).

Peak memory counts what one step needs: the model's weights, buffers and AdamW state and the
batch (summed from the tensors) plus the step's own peak allocation above what was alive before
it (CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the step; CPU:
the largest running total of allocations minus frees in a ``torch.profiler`` trace of one extra,
untimed step). It is tensor memory, not the process's RSS (no allocator caches, no libraries).

Reference branch cost: the training step with ``reference: subtract`` over the plain one at the
repository's BX sizes (``bx``: configs/boxing.yaml's model, BX training batches of 16 clips) and,
with ``--ratio-sizes bx,base``, at t5-base's sizes (``base``: T5 d_model 768, 12 + 12 layers,
random weights, one fixed batch of 8 random clips x 100 frames x 22 joints with 32-token
targets; about 10 s a step at 1 thread on 2 CPU cores, a few minutes for the rows). Where the time goes: ``Captioner.encode`` (STA-GCN, the
reference branch, the projection) forward and backward timed alone for each model; a plain step
minus its encode is T5, the loss and AdamW. Written to ``<out>_reference.json`` beside ``--out``
(target: reference step <= 1.3x the plain step).

Padding: on BX (skipped, with a message, when BX is absent) the padded frames of an epoch of
batches as the ``Collator`` pads them (to the longest clip of each batch) against padding every
clip to the dataset's longest, for the two batch orders training can draw: grouped by length
(``train.group_by_length: true``, the default: ``dataloaders.sampler.length_grouped_batches``)
and shuffled (``train.group_by_length: false``: a ``DistributedSampler``), and the step time of
both paddings.

Data: BX when present (aligned segments with their standards, paraphrases added), else synthetic.
Timings on a shared machine are noisy: the ratios are what count. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from bench import common
from dataloaders.collate import Collator

TARGET_RATIO = 1.3
MODEL_KEYS = ("x", "mask", "std_x", "labels")  # what Captioner.forward reads from a batch
MIB = 2 ** 20


# ============================================================================ command line ====
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--configs", type=common.choice_list(tuple(common.MODEL_CONFIGS)), default=None,
                        help="model sizes, comma-separated (default tiny; --full tiny,small)")
    parser.add_argument("--batches", type=common.int_list, default=None, help="batch sizes (default 8; --full 8,32)")
    parser.add_argument("--policies", type=common.choice_list(common.POLICIES), default=None,
                        help="projection policies (default: all three)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model (default 2; --full 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1)")
    parser.add_argument("--full", action="store_true",
                        help="the whole grid: tiny and small, every policy, batches 8 and 32, 4 steps (tens of "
                             "minutes on 2 CPU cores; the default grid takes about a minute)")
    parser.add_argument("--quick", action="store_true", help="the default grid (accepted for older command lines)")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="autocast to bfloat16 (CUDA only, as training's AMP)")
    parser.add_argument("--fused-adamw", action="store_true",
                        help="AdamW(fused=True) (CUDA; this torch also has a fused CPU kernel)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (use --warmup >= 3: the first steps compile, and a "
                             "new class of clip length can recompile once)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (default inductor; aot_eager checks tracing without "
                             "generating kernels, which on a CPU takes many minutes)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    parser.add_argument("--padding-batch", type=int, default=16, help="batch size of the padding part")
    parser.add_argument("--padding-steps", type=int, default=None,
                        help="timed batches per padding variant (default 2; --full 6)")
    parser.add_argument("--skip-padding", action="store_true", help="leave out the padding part")
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="auto",
                        help="auto: BX when present, else synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio-sizes", type=common.choice_list(RATIO_SIZES), default=["bx"],
                        help="model sizes of the reference-branch cost rows (default bx; bx,base adds "
                             "t5-base's sizes, about 10 s a step on a CPU core)")
    parser.add_argument("--skip-ratio", action="store_true", help="leave out the reference-branch cost rows")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR / "train_step.json")
    args = parser.parse_args(argv)
    full = args.full
    if full and args.quick:
        parser.error("--quick (the default grid) and --full exclude each other")
    args.policies_given = args.policies is not None
    args.configs = args.configs or (["tiny", "small"] if full else ["tiny"])
    args.batches = args.batches or ([8, 32] if full else [8])
    args.policies = args.policies or list(common.POLICIES)
    args.steps = args.steps if args.steps is not None else (4 if full else 2)
    args.warmup = args.warmup if args.warmup is not None else 1
    args.padding_steps = args.padding_steps if args.padding_steps is not None else (6 if full else 2)
    if args.steps < 1 or args.warmup < 0 or args.padding_steps < 1 or args.padding_batch < 1 or args.threads < 0:
        parser.error("--steps, --padding-steps and --padding-batch must be >= 1, --warmup and --threads >= 0")
    return args


def check_options(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype; clear errors for options this device cannot take."""
    if args.amp == "none":
        return None
    if device.type != "cuda":
        raise SystemExit("error: --amp bf16 needs --device cuda (training uses AMP on CUDA only, "
                         "see amp_settings in train_t5_stagcn.py)")
    if not torch.cuda.is_bf16_supported():
        raise SystemExit(f"error: --amp bf16: {torch.cuda.get_device_name(device)} does not support bfloat16")
    return torch.bfloat16


def compiled(args: argparse.Namespace) -> str | None:
    """The torch.compile backend, or None without --compile."""
    return args.compile_backend if args.compile else None


def plan_grid(args: argparse.Namespace, device: torch.device) -> tuple[list[tuple[str, str, int]], list[str]]:
    """(config, policy, batch) cells to run, and a note for each group left out."""
    cells, notes = [], []
    smallest = min(args.batches)
    for size in args.configs:
        quick_small = not args.full and size == "small" and not args.policies_given
        policies = ["time_pool"] if quick_small else args.policies
        for batch in args.batches:
            if device.type == "cpu" and size == "small" and batch > smallest and not args.full:
                notes.append(f"small at batch {batch} skipped on CPU (slow; --full runs it)")
                continue
            cells += [(size, policy, batch) for policy in policies]
    return cells, notes


# ============================================================================ one step =======
def model_inputs(batch: dict, device: torch.device) -> dict:
    """Only the tensors the model reads (names and texts would make torch.compile recompile)."""
    return {k: batch[k].to(device) if torch.is_tensor(batch[k]) else batch[k] for k in MODEL_KEYS}


def make_optimizer(model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=fused or None)


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, amp: torch.dtype | None,
              device: torch.device, compile_backend: str | None = None) -> Callable[[dict], torch.Tensor]:
    """One training step on a batch, as the training loop takes it (minus logging); the forward
    goes through ``torch.compile`` with ``compile_backend`` when one is given."""
    if compile_backend:
        allow_recompiles()
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model

    def step(batch: dict) -> torch.Tensor:
        if compile_backend:
            mark_lengths_dynamic(batch)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def allow_recompiles(limit: int = 64) -> None:
    """Every model of the grid shares ``Captioner.forward``'s code, and the encoder's strides make
    torch.compile guard on a few classes of clip length: raise dynamo's recompile limit (8) so it
    keeps compiling instead of silently falling back to eager."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))
    if hasattr(config, "accumulated_recompile_limit"):
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 16 * limit)


def mark_lengths_dynamic(batch: dict) -> None:
    """Frames and target length change from batch to batch: tell torch.compile up front, so it
    compiles once for any length instead of once per length."""
    for key, dim in (("x", 2), ("std_x", 2), ("mask", 1), ("labels", 1)):
        if batch.get(key) is not None:
            torch._dynamo.maybe_mark_dynamic(batch[key], dim)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> int:
    """Weights, buffers, AdamW state and the batch: what is alive when a step starts."""
    state = [v for s in optimizer.state.values() for v in s.values()]
    return tensor_bytes([*model.parameters(), *model.buffers(), *state, *batch.values()])


def step_peak_bytes(step: Callable, batch: dict, device: torch.device) -> int | None:
    """The step's peak allocation above what was alive before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return common.cpu_allocation_peak(lambda: step(batch))


# ============================================================================ the grid =======
def run_cell(size: str, policy: str, batches: list[dict], tokenizer: Any, args: argparse.Namespace,
             device: torch.device, amp: torch.dtype | None) -> list[dict]:
    """Plain and reference models on the same batches, steps alternated; one row per model."""
    runs = {}
    for reference in common.REFERENCES:
        model = common.make_model(size, policy, reference, tokenizer, device, args.seed).train()
        optimizer = make_optimizer(model, args.fused_adamw)
        runs[reference] = (model, optimizer, make_step(model, optimizer, amp, device, compiled(args)))
    times: dict[str, list[float]] = {r: [] for r in runs}
    for k, batch in enumerate(batches):
        order = list(runs) if k % 2 == 0 else list(runs)[::-1]  # alternate who goes first
        for reference in order:
            seconds, loss = common.timed(lambda: runs[reference][2](batch), device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{size}/{policy}/{reference}: non-finite loss at step {k}")
            if k >= args.warmup:
                times[reference].append(seconds)
    rows = []
    n = batches[0]["x"].shape[0]
    for reference, (model, optimizer, step) in runs.items():
        median = statistics.median(times[reference])
        row = {"config": size, "policy": policy, "batch": n, "reference": reference,
               "params_M": common.n_params(model) / 1e6, "step_s": median,
               "step_s_all": times[reference], "samples_per_s": n / median}
        if not args.no_memory:
            peak = step_peak_bytes(step, batches[-1], device)
            resident = resident_bytes(model, optimizer, batches[-1])
            row["step_peak_MiB"] = None if peak is None else peak / MIB
            row["peak_MiB"] = None if peak is None else (resident + peak) / MIB
        rows.append(row)
    rows[1]["ref_over_plain"] = rows[1]["step_s"] / rows[0]["step_s"]
    return rows


def run_grid(cells: list[tuple[str, str, int]], dataset, collate, tokenizer, args, device, amp) -> list[dict]:
    from tqdm import tqdm

    count = args.warmup + args.steps
    batches = {b: [model_inputs(x, device) for x in common.random_batches(dataset, collate, b, count, args.seed)]
               for b in sorted({c[2] for c in cells})}
    rows = []
    for size, policy, b in tqdm(cells, desc="cells", leave=False, disable=not sys.stderr.isatty()):
        rows += run_cell(size, policy, batches[b], tokenizer, args, device, amp)
    return rows


# ============================================================================ padding ========
def pad_time(batch: dict, frames: int) -> dict:
    """The batch zero-padded (mask False) to ``frames`` frames, as if padded to the dataset's longest."""
    out = dict(batch)
    n, c, t, v = batch["x"].shape
    for key in ("x", "std_x"):
        if batch.get(key) is not None:
            grown = batch[key].new_zeros(n, c, frames, v)  # (N, C, T_data, V)
            grown[:, :, :t] = batch[key]
            out[key] = grown
    mask = batch["mask"].new_zeros(n, frames)  # (N, T_data)
    mask[:, :t] = batch["mask"]
    out["mask"] = mask
    return out


def epoch_orders(lengths: list[int], batch: int, seed: int) -> dict[str, list[list[int]]]:
    """An epoch of batches (sample indices) in the two orders training draws: grouped by length
    (``train.group_by_length: true``, the default) and shuffled (``false``: a DistributedSampler)."""
    from torch.utils.data import BatchSampler, DistributedSampler

    from dataloaders.sampler import length_grouped_batches

    sampler = DistributedSampler(range(len(lengths)), num_replicas=1, rank=0, shuffle=True, seed=seed)
    return {"grouped": length_grouped_batches(lengths, batch, seed=seed),
            "shuffled": [list(b) for b in BatchSampler(list(sampler), batch, drop_last=False)]}


def padded_fractions(batches: list[list[int]], lengths: list[int]) -> dict:
    """Padded share of the frame slots: per-batch padding vs everything padded to the longest."""
    longest = max(lengths)
    real = sum(lengths)
    slots_batch = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return {"frames_per_batch": statistics.mean(max(lengths[i] for i in b) for b in batches),
            "padded_per_batch": 1 - real / slots_batch,
            "padded_to_longest": 1 - real / (len(lengths) * longest)}


def run_padding(source: common.Source, tokenizer: Any, args: argparse.Namespace, device: torch.device,
                amp: torch.dtype | None) -> dict:
    """Padded frames and step time: the Collator's per-batch padding vs the dataset's longest clip."""
    if source.name != "BX":
        return {"skipped": f"padding part measured on BX only; {source.note}"}
    dataset = common.train_dataset(source)
    collate = Collator(tokenizer, max_target_len=64)
    lengths = [int(dataset[i]["features"].shape[1]) for i in range(len(dataset))]
    longest = max(lengths)
    model = common.make_model("tiny", "time_pool", "subtract", tokenizer, device, args.seed).train()
    step = make_step(model, make_optimizer(model, args.fused_adamw), amp, device, compiled(args))
    rows = []
    for name, order in epoch_orders(lengths, args.padding_batch, args.seed).items():
        row = {"order": name, "batch": args.padding_batch, "samples": len(lengths),
               "longest": longest, **padded_fractions(order, lengths)}
        times: dict[str, list[float]] = {"per_batch": [], "to_longest": []}
        for k, indices in enumerate(order[:args.warmup + args.padding_steps]):
            batch = model_inputs(collate([dataset[i] for i in indices]), device)
            variants = {"per_batch": batch, "to_longest": pad_time(batch, longest)}
            for variant in (list(variants) if k % 2 == 0 else list(variants)[::-1]):
                seconds, _ = common.timed(lambda: step(variants[variant]), device)
                if k >= args.warmup:
                    times[variant].append(seconds)
        row["step_s_per_batch"] = statistics.median(times["per_batch"])
        row["step_s_to_longest"] = statistics.median(times["to_longest"])
        row["time_ratio"] = row["step_s_to_longest"] / row["step_s_per_batch"]
        rows.append(row)
    return {"model": "tiny, time_pool, reference subtract", "rows": rows}


# ============================================================================ reference cost =
RATIO_SIZES = ("bx", "base")
RATIO_BX_BATCH = 16  # configs/boxing.yaml's train.batch_size


def ratio_batches(size: str, dataset, collate, tokenizer: Any, count: int, seed: int,
                  device: torch.device) -> list[dict]:
    """``bx``: ``count`` training batches of 16 clips; ``base``: the fixed batch, ``count`` times."""
    if size == "base":
        return [model_inputs(common.fixed_batch(vocab=len(tokenizer), seed=seed), device)] * count
    return [model_inputs(b, device) for b in common.random_batches(dataset, collate, RATIO_BX_BATCH, count, seed)]


def encode_backward(model: torch.nn.Module, batch: dict, amp: torch.dtype | None, device: torch.device) -> None:
    """``Captioner.encode`` (STA-GCN, the reference branch, the projection) and its backward alone."""
    with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        embeds, _ = model.encode(batch)
    embeds.float().sum().backward()
    model.zero_grad(set_to_none=True)


def run_ratio(size: str, batches: list[dict], tokenizer: Any, args: argparse.Namespace, device: torch.device,
              amp: torch.dtype | None) -> dict:
    """Plain and reference models of ``size`` on the same batches, alternated as in ``run_cell``:
    median training step and median encode forward + backward of each."""
    runs = {}
    for reference in common.REFERENCES:
        model = common.make_model(size, "time_pool", reference, tokenizer, device, args.seed).train()
        runs[reference] = (model, make_step(model, make_optimizer(model, args.fused_adamw), amp, device))
    times: dict[tuple[str, str], list[float]] = {(r, part): [] for r in runs for part in ("step", "encode")}
    for k, batch in enumerate(batches):
        for reference in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            model, step = runs[reference]
            seconds, loss = common.timed(lambda: step(batch), device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{size}/{reference}: non-finite loss at step {k}")
            encode, _ = common.timed(lambda: encode_backward(model, batch, amp, device), device)
            if k >= args.warmup:
                times[(reference, "step")].append(seconds)
                times[(reference, "encode")].append(encode)
    med = {key: statistics.median(v) for key, v in times.items()}
    return {"size": size, "batch": int(batches[0]["x"].shape[0]),
            "frames": statistics.mean(int(b["x"].shape[2]) for b in batches),
            "plain_step_s": med[("none", "step")], "reference_step_s": med[("subtract", "step")],
            "ref_over_plain": med[("subtract", "step")] / med[("none", "step")],
            "plain_encode_s": med[("none", "encode")], "reference_encode_s": med[("subtract", "encode")],
            "plain_rest_s": med[("none", "step")] - med[("none", "encode")],
            "steps": {f"{r}_{part}": v for (r, part), v in times.items()}}


def run_ratios(sizes: list[str], dataset, collate, tokenizer: Any, args: argparse.Namespace,
               device: torch.device, amp: torch.dtype | None) -> list[dict]:
    count = args.warmup + args.steps
    return [run_ratio(size, ratio_batches(size, dataset, collate, tokenizer, count, args.seed, device),
                      tokenizer, args, device, amp) for size in sizes]


def print_ratios(rows: list[dict]) -> None:
    print(f"\nreference branch cost (training step, reference: subtract over none; target <= {TARGET_RATIO}x)")
    print(f"{'size':<5} {'batch':>5} {'frames':>6} {'plain s':>8} {'ref s':>8} {'ref/plain':>9} "
          f"{'encode plain s':>14} {'encode ref s':>12} {'rest of plain s':>15}")
    for r in rows:
        mark = "" if r["ref_over_plain"] <= TARGET_RATIO else " OVER"
        print(f"{r['size']:<5} {r['batch']:>5} {r['frames']:>6.0f} {r['plain_step_s']:>8.3f} "
              f"{r['reference_step_s']:>8.3f} {r['ref_over_plain']:>8.2f}x {r['plain_encode_s']:>14.3f} "
              f"{r['reference_encode_s']:>12.3f} {r['plain_rest_s']:>15.3f}{mark}")
    print("encode: Captioner.encode (STA-GCN, reference branch, projection) forward + backward alone; "
          "rest of plain:\nits step minus its encode (T5, loss, AdamW). Medians of the timed steps.")


def ratio_out(out: Path) -> Path:
    """Where the reference-branch cost rows go: ``<out>_reference.json``."""
    return out.with_name(f"{out.stem}_reference{out.suffix}")


# ============================================================================ tables =========
def print_grid(rows: list[dict], notes: list[str], device: torch.device) -> None:
    how = ("CUDA max_memory_allocated" if device.type == "cuda"
           else "torch.profiler CPU allocations of one step")
    print(f"{'config':<6} {'policy':<13} {'batch':>5} {'reference':<9} {'params M':>8} {'s/step':>8} "
          f"{'samples/s':>10} {'peak MiB':>9} {'step MiB':>9} {'ref/plain':>9}")
    for r in rows:
        ratio = r.get("ref_over_plain")
        mark = "" if ratio is None else f"{ratio:>8.2f}x" + ("" if ratio <= TARGET_RATIO else " OVER")
        peak = "n/a" if r.get("peak_MiB") is None else f"{r['peak_MiB']:.1f}"
        step = "n/a" if r.get("step_peak_MiB") is None else f"{r['step_peak_MiB']:.1f}"
        print(f"{r['config']:<6} {r['policy']:<13} {r['batch']:>5} {r['reference']:<9} {r['params_M']:>8.2f} "
              f"{r['step_s']:>8.3f} {r['samples_per_s']:>10.1f} {peak:>9} {step:>9} {mark}")
    print(f"s/step: median of the timed steps. peak MiB = weights + buffers + AdamW state + batch "
          f"+ step MiB;\nstep MiB = the step's own peak allocation ({how}). "
          f"ref/plain: subtract over none, target <= {TARGET_RATIO}x.")
    for note in notes:
        print(f"note: {note}")


def print_padding(padding: dict) -> None:
    if "skipped" in padding:
        print(f"padding: skipped ({padding['skipped']})")
        return
    first = padding["rows"][0]
    print(f"\npadding: {first['samples']} BX training samples in batches of {first['batch']}, "
          f"longest clip {first['longest']} frames; model {padding['model']}")
    print(f"{'batch order':<14} {'frames/batch':>12} {'padded % (Collator)':>20} "
          f"{'padded % (to longest)':>22} {'s/step Collator':>16} {'s/step longest':>15} {'time ratio':>11}")
    for r in padding["rows"]:
        print(f"{r['order']:<14} {r['frames_per_batch']:>12.1f} {100 * r['padded_per_batch']:>20.1f} "
              f"{100 * r['padded_to_longest']:>22.1f} {r['step_s_per_batch']:>16.3f} "
              f"{r['step_s_to_longest']:>15.3f} {r['time_ratio']:>10.2f}x")
    print("padded %: padded frame slots over all slots of an epoch; time ratio: to-longest s/step over "
          "Collator s/step.\ngrouped: batches of clips of about one length (train.group_by_length: true, the "
          "default); shuffled: a DistributedSampler's order (train.group_by_length: false).")


# ============================================================================ main ===========
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    amp = check_options(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.quiet_libraries()
    cells, notes = plan_grid(args, device)
    with tempfile.TemporaryDirectory(prefix="m2t_bench_") as tmp:
        source = common.load_source(args.data, tmp_dir=Path(tmp))
    tokenizer = common.make_tokenizer(source)
    dataset = common.train_dataset(source)
    collate = Collator(tokenizer, max_target_len=64)
    print(f"data: {source.note}; {len(dataset)} training samples; tokenizer {len(tokenizer)} tokens; "
          f"device {device}; threads {torch.get_num_threads()}; amp {args.amp}; "
          f"fused AdamW {args.fused_adamw}; compile {compiled(args) or 'no'}")
    print(f"{args.warmup} warm-up + {args.steps} timed steps per model\n")

    rows = run_grid(cells, dataset, collate, tokenizer, args, device, amp)
    print_grid(rows, notes, device)
    padding = ({"skipped": "--skip-padding"} if args.skip_padding
               else run_padding(source, tokenizer, args, device, amp))
    print_padding(padding)
    if not args.skip_ratio:
        ratios = run_ratios(args.ratio_sizes, dataset, collate, tokenizer, args, device, amp)
        print_ratios(ratios)
        common.write_json(ratio_out(args.out), {
            "data": source.note, "environment": common.environment(device), "ratio_sizes": args.ratio_sizes,
            "steps": args.steps, "warmup": args.warmup, "target_ref_over_plain": TARGET_RATIO, "rows": ratios})

    over = [r for r in rows if r.get("ref_over_plain", 0) > TARGET_RATIO]
    print(f"\nreference/plain <= {TARGET_RATIO}x in {sum('ref_over_plain' in r for r in rows) - len(over)} "
          f"of {sum('ref_over_plain' in r for r in rows)} cells")
    common.write_json(args.out, {
        "data": source.note, "environment": common.environment(device),
        "settings": {k: (common.shown(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "target_ref_over_plain": TARGET_RATIO, "rows": rows, "notes": notes, "padding": padding})
    return 0


if __name__ == "__main__":
    sys.exit(main())
