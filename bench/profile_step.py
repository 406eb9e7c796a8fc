"""Profile training steps with torch.profiler: where the time goes, by operator and by model part.

    python -m bench.profile_step [--config tiny|small] [--policy time_pool] [--reference subtract]
                                 [--batch 16] [--steps 3] [--warmup 1] [--top 25]
                                 [--sort self_cpu_time_total] [--device cpu|cuda] [--trace FILE]
                                 [--out bench/results/profile_step_<config>.json]

Builds the model as bench/train_step.py does (``models.build.build_model`` on
configs/synthetic.yaml; ``small`` = T5-small's shape), takes ``--warmup`` untimed steps, then
profiles ``--steps`` steps (forward, backward, gradient clipping, AdamW, zero_grad) on batches of
the data (BX when present, else synthetic). Prints

* the phase split per step: forward (and within it the encoder, the projection and T5),
  backward, optimizer (labelled with ``record_function``), in host time (on CUDA that is launch
  time, not kernel time: read the operator table's device columns). An encoder call made without
  gradient is labelled apart, ``forward/encoder (reference, no grad)``; when the model encodes the
  learner and its standard in one call, the standard's share is inside ``forward/encoder``, and
  only the phases that occurred are listed;
* the top ``--top`` operators by ``--sort`` (``key_averages().table``), times per profiled run.

``--trace FILE`` also writes a Chrome trace (open in chrome://tracing or Perfetto). Nothing here
is a test; a loaded machine makes every figure slower, the shares are what count.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench import common
from bench.train_step import make_optimizer, model_inputs
from dataloaders.collate import Collator

PHASES = ("forward", "forward/encoder", "forward/encoder (reference, no grad)", "forward/projection",
          "forward/t5", "backward", "optimizer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=tuple(common.MODEL_CONFIGS), default="tiny")
    parser.add_argument("--policy", choices=common.POLICIES, default="time_pool")
    parser.add_argument("--reference", choices=common.REFERENCES, default="subtract")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unprofiled steps first (default 1)")
    parser.add_argument("--top", type=int, default=25, help="operators in the table (default 25)")
    parser.add_argument("--sort", default=None,
                        help="key_averages sort key (default self_cpu_time_total; "
                             "self_device_time_total on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="auto")
    parser.add_argument("--trace", type=Path, default=None, help="also write a Chrome trace here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON summary (default bench/results/profile_step_<config>.json)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.top < 1 or args.threads < 0:
        parser.error("--batch, --steps and --top must be >= 1, --warmup and --threads >= 0")
    args.out = args.out or common.RESULTS_DIR / f"profile_step_{args.config}.json"
    return args


def label_parts(model: torch.nn.Module) -> list:
    """Wrap the encoder, projection and T5 forwards in ``record_function`` ranges (hooks)."""
    open_ranges: list = []

    def enter(name: str):
        def hook(module, inputs):
            label = name
            if name == "forward/encoder" and not torch.is_grad_enabled():
                label = "forward/encoder (reference, no grad)"
            open_ranges.append(record_function(label).__enter__())
        return hook

    def leave(module, inputs, output):
        open_ranges.pop().__exit__(None, None, None)

    handles = []
    for name, part in (("forward/encoder", model.encoder), ("forward/projection", model.projection),
                       ("forward/t5", model.t5)):
        handles += [part.register_forward_pre_hook(enter(name)), part.register_forward_hook(leave)]
    return handles


def profiled_step(model, optimizer, batch: dict) -> None:
    with record_function("forward"):
        loss = model(batch)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def phase_times(prof, steps: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per step spent inside each labelled range that occurred (wall time of the range on
    the host), in the order of ``PHASES``; forward, backward and optimizer are always there."""
    totals = {e.key: e.cpu_time_total / 1e3 / steps for e in prof.key_averages() if e.key in PHASES}
    return {name: totals.get(name, 0.0) for name in PHASES
            if name in totals or name in ("forward", "backward", "optimizer")}


def top_ops(prof, sort: str, top: int, steps: int) -> list[dict]:
    events = [e for e in prof.key_averages() if e.key not in PHASES]
    key = {"self_cpu_time_total": lambda e: e.self_cpu_time_total,
           "cpu_time_total": lambda e: e.cpu_time_total,
           "self_device_time_total": lambda e: e.self_device_time_total,
           "count": lambda e: e.count}.get(sort, lambda e: e.self_cpu_time_total)
    total_self = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = []
    for e in sorted(events, key=key, reverse=True)[:top]:
        rows.append({"op": e.key, "calls_per_step": e.count / steps,
                     "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                     "cpu_total_ms_per_step": e.cpu_time_total / 1e3 / steps,
                     "self_cpu_share": e.self_cpu_time_total / total_self,
                     "self_device_ms_per_step": e.self_device_time_total / 1e3 / steps})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sort = args.sort or ("self_device_time_total" if device.type == "cuda" else "self_cpu_time_total")
    common.quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="m2t_bench_") as tmp:
        source = common.load_source(args.data, tmp_dir=Path(tmp))
    tokenizer = common.make_tokenizer(source)
    dataset = common.train_dataset(source)
    collate = Collator(tokenizer, max_target_len=64)
    batches = [model_inputs(b, device) for b in
               common.random_batches(dataset, collate, args.batch, args.warmup + args.steps, args.seed)]
    model = common.make_model(args.config, args.policy, args.reference, tokenizer, device, args.seed).train()
    optimizer = make_optimizer(model, fused=False)
    label_parts(model)
    for batch in batches[:args.warmup]:
        profiled_step(model, optimizer, batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with common.quiet_native_stderr(), profile(activities=activities) as prof:
        for batch in batches[args.warmup:]:
            profiled_step(model, optimizer, batch)
        common.synchronize(device)
    frames = [int(b["x"].shape[2]) for b in batches[args.warmup:]]

    print(f"data: {source.note}; config {args.config} ({common.n_params(model) / 1e6:.2f}M parameters), "
          f"policy {args.policy}, reference {args.reference}, batch {args.batch}, frames/batch {frames}; "
          f"device {device}; threads {torch.get_num_threads()}; {args.steps} profiled steps\n")
    phases = phase_times(prof, args.steps, device)
    print(f"{'phase (host time)':<40} {'ms/step':>9} {'share of step':>14}")
    step_ms = phases["forward"] + phases["backward"] + phases["optimizer"]
    for name, ms in phases.items():
        print(f"{name:<40} {ms:>9.1f} {100 * ms / step_ms:>13.1f}%")
    print(f"{'step (forward + backward + optimizer)':<40} {step_ms:>9.1f}\n")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top))
    ops = top_ops(prof, sort, args.top, args.steps)
    if args.trace:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(args.trace))
        print(f"wrote {args.trace}")
    common.write_json(args.out, {
        "data": source.note, "environment": common.environment(device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "frames_per_batch": frames, "step_ms": step_ms, "phases_ms_per_step": phases, "top_ops": ops})
    return 0


if __name__ == "__main__":
    sys.exit(main())
