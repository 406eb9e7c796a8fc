"""The benchmarks in bench/ run end to end in their tiniest mode and write the JSON they promise.

No timing is asserted: only that every row is there and every figure is a finite positive number,
plus the few things a benchmark computes that can be checked by hand (padded-frame fractions, the
padding helper), the DTW costs of every implementation against ours, and the Collator's token-id
cache against the tokenizer called directly. The benchmarks run as modules from the repository
root (``python -m bench.NAME``); one test does exactly that in a child process.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import common, data, dtw, generate, lora, profile_step, train_step
from dataloaders.collate import IGNORE_INDEX, Collator

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_global_state():
    """The benchmarks set torch's thread count and quieten transformers: undo both afterwards."""
    from transformers.utils import logging as hf_logging

    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    yield
    torch.set_num_threads(threads)
    hf_logging.set_verbosity(verbosity)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def run(main, tmp_path, *argv: str) -> dict:
    out = tmp_path / "out.json"
    assert main([*argv, "--out", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


# ============================================================================ train_step =====
def test_train_step_writes_plain_and_reference_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(train_step, "RATIO_BX_BATCH", 4)  # the reference-cost row's batch (16) made small
    result = run(train_step.main, tmp_path, "--quick", "--steps", "1", "--warmup", "0", "--configs", "tiny",
                 "--policies", "time_pool", "--batches", "2", "--padding-batch", "2", "--padding-steps", "1",
                 "--threads", "1")
    rows = result["rows"]
    assert [(r["config"], r["policy"], r["batch"], r["reference"]) for r in rows] == [
        ("tiny", "time_pool", 2, "none"), ("tiny", "time_pool", 2, "subtract")]
    for r in rows:
        for key in ("params_M", "step_s", "samples_per_s", "peak_MiB", "step_peak_MiB"):
            assert positive(r[key]), (key, r[key])
        assert r["peak_MiB"] > r["step_peak_MiB"]  # weights and optimizer state come on top
        assert r["samples_per_s"] == pytest.approx(2 / r["step_s"])
    assert positive(rows[1]["ref_over_plain"])
    assert rows[1]["ref_over_plain"] == pytest.approx(rows[1]["step_s"] / rows[0]["step_s"])
    padding = result["padding"]
    if common.bx_present():
        assert [r["order"] for r in padding["rows"]] == ["grouped", "shuffled"]
        for r in padding["rows"]:
            assert 0 <= r["padded_per_batch"] <= r["padded_to_longest"] < 1
            assert positive(r["time_ratio"]) and positive(r["step_s_per_batch"])
    else:
        assert "BX" in padding["skipped"]
    ratio = json.loads((tmp_path / "out_reference.json").read_text(encoding="utf-8"))
    assert [r["size"] for r in ratio["rows"]] == ["bx"]  # the default; --ratio-sizes bx,base adds t5-base's
    (row,) = ratio["rows"]
    for key in ("plain_step_s", "reference_step_s", "plain_encode_s", "reference_encode_s"):
        assert positive(row[key]), (key, row[key])
    assert row["batch"] == train_step.RATIO_BX_BATCH
    assert row["ref_over_plain"] == pytest.approx(row["reference_step_s"] / row["plain_step_s"])
    assert ratio["target_ref_over_plain"] == train_step.TARGET_RATIO == 1.3


def test_padded_fractions_by_hand():
    lengths = [2, 4, 6, 8]
    got = train_step.padded_fractions([[0, 1], [2, 3]], lengths)
    # per batch: slots 2*4 + 2*8 = 24 for 20 real frames; to the longest: 4*8 = 32 slots
    assert got["padded_per_batch"] == pytest.approx(4 / 24)
    assert got["padded_to_longest"] == pytest.approx(12 / 32)
    assert got["frames_per_batch"] == pytest.approx(6.0)


def test_epoch_orders_are_trainings_and_grouped_batches_are_tight():
    from dataloaders.sampler import length_grouped_batches

    lengths = [5, 1, 9, 3, 7, 2, 8]
    orders = train_step.epoch_orders(lengths, batch=3, seed=0)
    assert list(orders) == ["grouped", "shuffled"]
    for batches in orders.values():
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert orders["grouped"] == length_grouped_batches(lengths, 3, seed=0)  # train.group_by_length: true
    spans = sorted(sorted(lengths[i] for i in b) for b in orders["grouped"])
    assert spans == [[1, 2], [3, 5], [7, 8, 9]]


def test_train_step_default_grid_is_the_short_one_and_full_the_long_one():
    default = train_step.parse_args([])
    assert (default.configs, default.batches, default.steps, default.padding_steps) == (["tiny"], [8], 2, 2)
    assert vars(train_step.parse_args(["--quick"])) == {**vars(default), "quick": True}
    full = train_step.parse_args(["--full"])
    assert (full.configs, full.batches, full.steps, full.padding_steps) == (["tiny", "small"], [8, 32], 4, 6)
    cells, notes = train_step.plan_grid(full, torch.device("cpu"))
    assert ("small", "origin", 32) in cells and not notes
    assert "minute" in train_step.__doc__ and "--full" in train_step.__doc__


def test_pad_time_keeps_the_clip_and_masks_the_rest():
    x = torch.randn(2, 6, 3, 22)
    batch = {"x": x, "std_x": x + 1, "mask": torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)}
    grown = train_step.pad_time(batch, 5)
    assert grown["x"].shape == grown["std_x"].shape == (2, 6, 5, 22)
    assert torch.equal(grown["x"][:, :, :3], x) and torch.equal(grown["std_x"][:, :, :3], x + 1)
    assert grown["x"][:, :, 3:].abs().sum() == 0
    assert grown["mask"].tolist() == [[True, True, False, False, False], [True, True, True, False, False]]


def test_cuda_only_options_fail_clearly_on_cpu():
    with pytest.raises(SystemExit, match="--amp bf16 needs --device cuda"):
        train_step.main(["--device", "cpu", "--amp", "bf16"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="sees no CUDA device"):
            train_step.main(["--device", "cuda"])


# ============================================================================ generate =======
def test_generate_writes_a_row_per_decoding_and_batch(tmp_path, monkeypatch):
    monkeypatch.setitem(generate.RATIO_BATCH, "bx", 4)  # the reference-cost row's batch (64) made small
    result = run(generate.main, tmp_path, "--quick", "--clips", "4", "--batches", "1,2", "--new-tokens", "2",
                 "--threads", "1", "--ratio-runs", "1")
    keys = [(r["decoding"], r["batch"], r["order"]) for r in result["rows"]]
    assert keys == [("greedy", 1, "random"), ("greedy", 2, "random"), ("greedy", 2, "length-sorted"),
                    ("beam 3", 1, "random"), ("beam 3", 2, "random"), ("beam 3", 2, "length-sorted")]
    for r in result["rows"]:
        for key in ("seconds", "captions_per_s", "tokens_per_s", "encode_seconds", "speedup_vs_smallest_batch"):
            assert positive(r[key]), (key, r[key])
        assert r["tokens_per_s"] == pytest.approx(2 * r["captions_per_s"])
    assert set(result["captions_agree"]) == {"greedy, batch 2", "greedy, batch 2 length-sorted",
                                             "beam 3, batch 2", "beam 3, batch 2 length-sorted"}
    assert all(0 <= v <= 4 for v in result["captions_agree"].values())
    ratio = json.loads((tmp_path / "out_reference.json").read_text(encoding="utf-8"))
    (row,) = ratio["rows"]  # bx, the default
    assert (row["size"], row["clips"], row["new_tokens"]) == ("bx", 4, generate.RATIO_TOKENS)
    for key in ("plain_s", "reference_s", "plain_encode_s", "reference_encode_s"):
        assert positive(row[key]), (key, row[key])
    assert row["ref_over_plain"] == pytest.approx(row["reference_s"] / row["plain_s"])


def test_fixed_batch_is_the_t5_base_sizes_batch():
    batch = common.fixed_batch(vocab=50)
    assert batch["x"].shape == batch["std_x"].shape == (8, 6, 100, 22) and batch["mask"].all()
    assert batch["labels"].shape == (8, 32) and 3 <= int(batch["labels"].min()) and int(batch["labels"].max()) < 50
    assert torch.equal(common.fixed_batch(vocab=50)["x"], batch["x"])  # the same batch every time


# ============================================================================ lora ===========
def test_lora_rows_count_exactly_the_parameters_left_to_train(tmp_path):
    result = run(lora.main, tmp_path, "--config", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0",
                 "--inline", "--variants", "full,lora_r8,freeze_encoder")
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["full", "lora_r8", "freeze_encoder"]
    full, adapters, frozen = rows["full"], rows["lora_r8"], rows["freeze_encoder"]
    assert full["trainable"] == full["total"] == frozen["total"]
    model = lora.build("tiny", "full", common.make_tokenizer(
        common.load_source("synthetic", per_kind=8, tmp_dir=tmp_path / "data")), 0)
    encoder, projection = (sum(p.numel() for p in m.parameters()) for m in (model.encoder, model.projection))
    assert frozen["trainable"] == full["total"] - encoder
    # LoRA: T5's own weights stop training; its adapters (the parameters LoRA adds) train
    added = adapters["total"] - full["total"]
    assert added > 0 and adapters["trainable"] == encoder + projection + added
    for r in rows.values():
        assert positive(r["step_s"]) and positive(r["grad_adam_MiB"]) and r["peak_rss_MiB"] is None
    assert result["settings"]["frames"] and result["settings"]["label_tokens"]


# ============================================================================ data ===========
def test_data_writes_throughput_rows_and_load_times(tmp_path):
    result = run(data.main, tmp_path, "--quick", "--batch", "64")
    names = [r["pipeline"] for r in result["rows"]]
    assert names == ["__getitem__ only", "__getitem__ + Collator (frames only)",
                     "__getitem__ + Collator (with tokenizer)", "DataLoader(num_workers=0) + Collator"]
    for r in result["rows"]:
        assert positive(r["clips_per_s"]) and positive(r["first_pass_clips_per_s"]) and positive(r["us_per_clip"])
    for when in ("cold", "warm"):
        steps = result["first_load_s"][when]
        assert all(positive(v) for v in steps.values())
        assert steps["total"] == pytest.approx(sum(v for k, v in steps.items() if k != "total"))


# ============================================================================ profile_step ===
def test_profile_step_writes_phases_and_top_ops(tmp_path):
    result = run(profile_step.main, tmp_path, "--steps", "1", "--warmup", "0", "--batch", "2", "--top", "5",
                 "--threads", "1")
    phases = result["phases_ms_per_step"]
    assert positive(result["step_ms"])
    assert result["step_ms"] == pytest.approx(phases["forward"] + phases["backward"] + phases["optimizer"])
    for part in ("forward/encoder", "forward/projection", "forward/t5"):
        assert 0 < phases[part] < phases["forward"], part
    # a separate no-grad encoder call for the standard is listed only where the model makes one
    reference = phases.get("forward/encoder (reference, no grad)")
    assert reference is None or 0 < reference < phases["forward"]
    assert set(phases) <= set(profile_step.PHASES)
    assert len(result["top_ops"]) == 5
    assert all(0 < op["self_cpu_share"] <= 1 and op["calls_per_step"] >= 1 for op in result["top_ops"])


# ============================================================================ dtw ============
def check_dtw_rows(rows: list[dict]) -> None:
    """Every row: positive times, costs equal to ours, ratio 1 for ours' own first row of a kind."""
    for r in rows:
        assert positive(r["best_s"]) and positive(r["median_s"]) and r["best_s"] <= r["median_s"], r
        assert positive(r["ns_per_cell"]) and positive(r["ratio_vs_ours"]) and r["best_cpu_s"] >= 0, r
        assert r["ns_per_cell"] == pytest.approx(1e9 * r["best_s"] / r["cells"])
        assert r["max_rel_err_vs_ours"] < 1e-9, r
        assert r.get("same_path", True) is True, r
    firsts = {}
    for r in rows:
        firsts.setdefault((r["case"], r["kind"]), r)
    assert all(r["impl"].startswith("ours") and r["ratio_vs_ours"] == 1.0 for r in firsts.values())


def test_dtw_quick_rows_agree_with_ours(tmp_path):
    result = run(dtw.main, tmp_path, "--quick", "--repeats", "1", "--peers", "none")
    rows = result["rows"]
    assert list(dict.fromkeys(r["case"] for r in rows)) == [
        "single 20x20", "single 50x60", "pairs 16 x 20-30", "cross 4x4 x 20-30"]
    assert [r["impl"] for r in rows if r["case"] == "pairs 16 x 20-30"] == [
        "ours dtw_batch", "ours dtw, pair loop", "naive Python (4 pairs, scaled)"]
    assert {r["pairs"] for r in rows if r["case"] == "cross 4x4 x 20-30"} == {16}
    check_dtw_rows(rows)
    assert result["meta"]["peers"] == []


@pytest.mark.skipif(importlib.util.find_spec("dtaidistance") is None, reason="dtaidistance not installed")
def test_dtw_dtaidistance_computes_the_same_pairs(tmp_path):
    rows = run(dtw.main, tmp_path, "--quick", "--repeats", "1", "--peers", "dtaidistance")["rows"]
    names = {(r["case"], r["impl"]) for r in rows}
    assert ("pairs 16 x 20-30", "dtaidistance distance_matrix_fast, 1x1 block per pair") in names
    assert ("cross 4x4 x 20-30", "dtaidistance distance_matrix_fast, parallel") in names
    assert ("single 50x60", "dtaidistance warping_path_fast (cost+path)") in names
    check_dtw_rows(rows)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tslearn") is None, reason="tslearn not installed")
def test_dtw_tslearn_rows_come_back_from_the_child_process(tmp_path):
    rows = run(dtw.main, tmp_path, "--quick", "--repeats", "1", "--peers", "tslearn")["rows"]
    assert ("cross 4x4 x 20-30", "tslearn cdist_dtw, n_jobs=-1") in {(r["case"], r["impl"]) for r in rows}
    check_dtw_rows(rows)


def test_benchmarks_run_as_modules_without_path_edits(tmp_path):
    for path in sorted((REPO_ROOT / "bench").glob("*.py")):
        assert "sys.path" not in path.read_text(encoding="utf-8"), path.name
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "dtw.json"
    done = subprocess.run([sys.executable, "-m", "bench.dtw", "--quick", "--repeats", "1", "--peers", "none",
                           "--out", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text(encoding="utf-8"))["rows"]


# ============================================================================ Collator cache ==
def test_cached_token_ids_equal_the_tokenizer_called_directly():
    """The Collator pads cached ids itself; its labels must equal the padded tokenizer call."""
    from dataloaders.tokenizer import train_tokenizer

    texts = ["keep your guard up", "the jab does not fully extend, step in as you punch",
             "rotate the hips", "a", "keep your guard up", "bend the knees more before the jump"]
    tok = train_tokenizer(texts * 3, vocab_size=80)
    for max_len in (64, 5):
        collate = Collator(tok, max_target_len=max_len)
        for batch_texts in (texts[:3], texts, texts[::-1], texts[2:5]):  # repeats: cache hits and misses
            enc = tok(batch_texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
            expected = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE_INDEX)
            assert torch.equal(collate._labels(batch_texts), expected), (max_len, batch_texts)
    small = Collator(tok, cache_limit=2)
    assert torch.equal(small._labels(texts), Collator(tok)._labels(texts)) and len(small._ids) == 2
