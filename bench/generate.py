"""Caption throughput: greedy and beam search, one clip at a time against batches of 32.

    python -m bench.generate [--device cpu|cuda] [--clips 64] [--batches 1,32] [--beams 3]
                             [--new-tokens 24] [--quick] [--data auto|bx|synthetic]
                             [--out bench/results/generate.json]

The model is configs/synthetic.yaml's (``tiny``: STA-GCN + T5 d_model 128, reference branch
``subtract``) with random weights, in eval mode. Every caption is forced to exactly
``--new-tokens`` tokens (``min_new_tokens = max_new_tokens``: end-of-sequence is suppressed until
then), so batch 1 and batch 32 do the same work and the only difference is how it is batched.
The same ``--clips`` clips (BX training clips in eval form, or synthetic ones) are captioned at
every batch size through ``Captioner.generate`` (encoder, reference branch, ``T5.generate``,
decoding to text); collation is done beforehand and not timed. One untimed batch first warms each
setting up.

Prints captions/s per decoding and batch size and the speed-up of each batch size over batch 1
(target on CPU: batch 32 >= 8x batch 1), and whether greedy captions agree across batch sizes
(padding must not change a clip's caption). Evaluation during training batches the same way: it
calls ``generate`` on batches of ``eval.batch_size`` clips. Timings on a shared machine are
noisy; the speed-up is what counts. Nothing here is a test.

Reference branch cost: the plain model (``reference: none``) against the reference model
(``subtract``), same seed, in eval mode, greedy captions of exactly 32 tokens, runs alternated
(median of ``--ratio-runs`` after one warm-up each): at the repository's BX sizes (``bx``:
configs/boxing.yaml's model on a batch of 64 clips, its eval.batch_size) and, with
``--ratio-sizes bx,base``, at t5-base's sizes (``base``: T5 d_model 768, 12 + 12 layers, random
weights, one fixed batch of 8 random clips x 100 frames x 22 joints). ``encode`` is
``Captioner.encode`` alone (STA-GCN, reference branch, projection); the rest is T5's decoding.
Written to ``<out>_reference.json`` beside ``--out`` (target: reference <= 1.15x plain).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench import common
from dataloaders.collate import Collator

TARGET_SPEEDUP = 8.0
TARGET_RATIO = 1.15  # generation with the reference branch over generation without
RATIO_SIZES = ("bx", "base")
RATIO_BATCH = {"bx": 64, "base": 8}  # configs/boxing.yaml's eval.batch_size; the fixed t5-base batch
RATIO_TOKENS = 32


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--clips", type=int, default=None, help="clips captioned per setting (default 64; --quick 16)")
    parser.add_argument("--batches", type=common.int_list, default=None,
                        help="batch sizes (default 1,32; --quick 1,16)")
    parser.add_argument("--beams", type=int, default=3, help="beams of the beam-search rows (default 3)")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens generated per caption, fixed (default 24; --quick 8)")
    parser.add_argument("--quick", action="store_true", help="16 clips, batches 1 and 16, 8 tokens")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="auto",
                        help="auto: BX when present, else synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio-sizes", type=common.choice_list(RATIO_SIZES), default=["bx"],
                        help="model sizes of the reference-branch cost rows (default bx; bx,base adds "
                             "t5-base's sizes, about a minute in all on a CPU core)")
    parser.add_argument("--ratio-runs", type=int, default=3, help="timed runs per model of those rows (default 3)")
    parser.add_argument("--skip-ratio", action="store_true", help="leave out the reference-branch cost rows")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR / "generate.json")
    args = parser.parse_args(argv)
    args.clips = args.clips or (16 if args.quick else 64)
    args.batches = args.batches or ([1, 16] if args.quick else [1, 32])
    args.new_tokens = args.new_tokens or (8 if args.quick else 24)
    if args.clips < 1 or args.beams < 1 or args.new_tokens < 1 or args.threads < 0 or args.ratio_runs < 1:
        parser.error("--clips, --beams, --new-tokens and --ratio-runs must be >= 1, --threads >= 0")
    if max(args.batches) > args.clips:
        parser.error(f"--batches {max(args.batches)} is more than --clips {args.clips}")
    return args


def clip_batches(items: list[dict], collate: Collator, size: int, device: torch.device,
                 by_length: bool = False) -> list[dict]:
    """The clips collated in batches of ``size`` (the last one may be smaller), in the given order
    or grouped by length (fewer padded frames per batch)."""
    if by_length:
        items = sorted(items, key=lambda item: int(item["features"].shape[1]))
    return [common.to_device(collate(items[k:k + size]), device) for k in range(0, len(items), size)]


def check_fixed_length(model, batch: dict, settings: dict) -> None:
    """Every sequence must come out exactly ``max_new_tokens`` long (plus the start token)."""
    with torch.no_grad():
        embeds, attn = model.encode(batch)
        ids = model.t5.generate(inputs_embeds=embeds, attention_mask=attn, **settings)
    if ids.shape[1] != settings["max_new_tokens"] + 1:
        raise RuntimeError(f"generation length {ids.shape[1] - 1} != {settings['max_new_tokens']}: "
                           f"the fixed-length setting did not hold")


def caption_all(model, batches: list[dict], settings: dict, device: torch.device) -> tuple[float, dict]:
    """Seconds to caption every batch (after one untimed warm-up batch), and {video_name: caption}."""
    model.generate(batches[0], **settings)
    captions: dict[str, str] = {}

    def run() -> None:
        for batch in batches:
            captions.update(zip(batch["video_names"], model.generate(batch, **settings)))

    seconds, _ = common.timed(run, device)
    return seconds, captions


def encode_seconds(model, batches: list[dict], device: torch.device) -> float:
    """Seconds of ``Captioner.encode`` alone over the batches (STA-GCN, reference pass, projection)."""
    def run() -> None:
        with torch.no_grad():
            for batch in batches:
                model.encode(batch)

    return common.timed(run, device)[0]


def settings_grid(args: argparse.Namespace) -> list[tuple[str, int, bool]]:
    """(decoding, batch size, length-sorted) per row: every size in the given order, the largest
    also grouped by length."""
    rows = []
    for decoding in ("greedy", f"beam {args.beams}"):
        rows += [(decoding, size, False) for size in args.batches]
        if max(args.batches) > 1:
            rows.append((decoding, max(args.batches), True))
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"{'decoding':<9} {'batch':>5} {'order':<13} {'seconds':>8} {'captions/s':>11} {'tokens/s':>9} "
          f"{'encode %':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['decoding']:<9} {r['batch']:>5} {r['order']:<13} {r['seconds']:>8.2f} "
              f"{r['captions_per_s']:>11.1f} {r['tokens_per_s']:>9.0f} {100 * r['encode_share']:>9.0f} "
              f"{r['speedup_vs_smallest_batch']:>8.1f}x")
    print(f"speed-up: captions/s over batch {min(args.batches)}'s (same decoding); target on CPU: batch 32 >= "
          f"{TARGET_SPEEDUP:.0f}x batch 1.\nencode %: Captioner.encode's time (timed on its own) over the "
          f"row's time; the rest is T5 decoding.\norder: the clips' (random) order, or grouped by length.")


def generate_ids(model, batch: dict, settings: dict) -> torch.Tensor:
    """``Captioner.generate`` up to the token ids (random weights may write ids the tokenizer lacks)."""
    with torch.no_grad():
        embeds, attn = model.encode(batch)
        return model.t5.generate(inputs_embeds=embeds, attention_mask=attn, **settings)


def run_ratio(size: str, clips, collate: Collator, tokenizer, args: argparse.Namespace,
              device: torch.device) -> dict:
    """Plain and reference models of ``size`` captioning the same batch, runs alternated: median
    seconds of generation and of ``Captioner.encode`` alone for each."""
    if size == "base":
        batch = common.to_device(common.fixed_batch(clips=RATIO_BATCH[size], vocab=len(tokenizer), seed=args.seed),
                                 device)
    else:
        count = min(RATIO_BATCH[size], len(clips))
        batch = common.to_device(collate([clips[i] for i in range(count)]), device)
    settings = dict(do_sample=False, num_beams=1, max_new_tokens=RATIO_TOKENS, min_new_tokens=RATIO_TOKENS)
    models = {r: common.make_model(size, "time_pool", r, tokenizer, device, args.seed).eval()
              for r in common.REFERENCES}
    times: dict[tuple[str, str], list[float]] = {(r, part): [] for r in models for part in ("generate", "encode")}
    for k in range(1 + args.ratio_runs):
        for reference in (list(models) if k % 2 == 0 else list(models)[::-1]):
            model = models[reference]
            seconds, ids = common.timed(lambda: generate_ids(model, batch, settings), device)
            if ids.shape[1] != RATIO_TOKENS + 1:
                raise RuntimeError(f"generation length {ids.shape[1] - 1} != {RATIO_TOKENS}")
            encode = encode_seconds(model, [batch], device)
            if k > 0:
                times[(reference, "generate")].append(seconds)
                times[(reference, "encode")].append(encode)
    med = {key: statistics.median(v) for key, v in times.items()}
    return {"size": size, "clips": int(batch["x"].shape[0]), "frames": int(batch["x"].shape[2]),
            "new_tokens": RATIO_TOKENS, "plain_s": med[("none", "generate")],
            "reference_s": med[("subtract", "generate")],
            "ref_over_plain": med[("subtract", "generate")] / med[("none", "generate")],
            "plain_encode_s": med[("none", "encode")], "reference_encode_s": med[("subtract", "encode")],
            "runs": {f"{r}_{part}": v for (r, part), v in times.items()}}


def print_ratios(rows: list[dict]) -> None:
    print(f"\nreference branch cost (greedy generation, reference: subtract over none; target <= {TARGET_RATIO}x)")
    print(f"{'size':<5} {'clips':>5} {'frames':>6} {'tokens':>6} {'plain s':>8} {'ref s':>8} {'ref/plain':>9} "
          f"{'encode plain s':>14} {'encode ref s':>12}")
    for r in rows:
        mark = "" if r["ref_over_plain"] <= TARGET_RATIO else " OVER"
        print(f"{r['size']:<5} {r['clips']:>5} {r['frames']:>6} {r['new_tokens']:>6} {r['plain_s']:>8.3f} "
              f"{r['reference_s']:>8.3f} {r['ref_over_plain']:>8.2f}x {r['plain_encode_s']:>14.3f} "
              f"{r['reference_encode_s']:>12.3f}{mark}")
    print("encode: Captioner.encode alone (STA-GCN, reference branch, projection); the rest is T5's decoding. "
          "Medians.")


def ratio_out(out: Path) -> Path:
    """Where the reference-branch cost rows go: ``<out>_reference.json``."""
    return out.with_name(f"{out.stem}_reference{out.suffix}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="m2t_bench_") as tmp:
        source = common.load_source(args.data, tmp_dir=Path(tmp))
    tokenizer = common.make_tokenizer(source)
    clips = common.eval_dataset(source.train, source)
    if len(clips) < args.clips:
        raise SystemExit(f"error: --clips {args.clips}: the data has only {len(clips)} clips")
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(args.seed))[:args.clips]
    items = [clips[i] for i in order.tolist()]
    collate = Collator(tokenizer)
    model = common.make_model("tiny", "time_pool", "subtract", tokenizer, device, args.seed).eval()
    print(f"data: {source.note}; {args.clips} clips; model tiny (random weights, reference subtract); "
          f"{args.new_tokens} tokens per caption; device {device}; threads {torch.get_num_threads()}\n")

    rows, captions = [], {}
    for decoding, size, by_length in settings_grid(args):
        beams = 1 if decoding == "greedy" else args.beams
        settings = dict(do_sample=False, num_beams=beams, max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens)
        batches = clip_batches(items, collate, size, device, by_length)
        check_fixed_length(model, batches[0], settings)
        seconds, captions[(decoding, size, by_length)] = caption_all(model, batches, settings, device)
        encode = encode_seconds(model, batches, device)
        rows.append({"decoding": decoding, "batch": size, "order": "length-sorted" if by_length else "random",
                     "clips": args.clips, "seconds": seconds, "encode_seconds": encode,
                     "encode_share": min(encode / seconds, 1.0), "captions_per_s": args.clips / seconds,
                     "tokens_per_s": args.clips * args.new_tokens / seconds})
    for row in rows:
        base = next(r for r in rows if r["decoding"] == row["decoding"] and r["batch"] == min(args.batches))
        row["speedup_vs_smallest_batch"] = row["captions_per_s"] / base["captions_per_s"]
    print_table(rows, args)

    agree = {}
    for (decoding, size, by_length), texts in captions.items():
        ref = captions[(decoding, min(args.batches), False)]
        if (size, by_length) != (min(args.batches), False):
            label = f"{decoding}, batch {size}{' length-sorted' if by_length else ''}"
            agree[label] = sum(texts[k] == ref[k] for k in ref)
            print(f"{label}: captions equal to batch {min(args.batches)}'s for {agree[label]} of {len(ref)} clips")
    common.write_json(args.out, {
        "data": source.note, "environment": common.environment(device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "target_speedup": TARGET_SPEEDUP, "rows": rows, "captions_agree": agree})
    if not args.skip_ratio:
        ratios = [run_ratio(size, clips, collate, tokenizer, args, device) for size in args.ratio_sizes]
        print_ratios(ratios)
        common.write_json(ratio_out(args.out), {
            "data": source.note, "environment": common.environment(device), "ratio_sizes": args.ratio_sizes,
            "runs": args.ratio_runs, "target_ref_over_plain": TARGET_RATIO, "rows": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
