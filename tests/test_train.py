"""train_t5_stagcn.py end to end on tiny synthetic data: run folder, resume, finetune, CLI, torchrun."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_t5_stagcn as trainer
from core.io import load_checkpoint

REPO = Path(trainer.__file__).resolve().parent
CONFIG = str(REPO / "configs" / "synthetic.yaml")


def tiny(results: Path, experiment: str, *extra: str) -> list[str]:
    """Overrides that make a run take seconds: 2 clips per kind, a 2-block encoder, a 1-layer T5."""
    return [
        "--cfg_file", CONFIG, f"results_dir={results}", f"experiment={experiment}",
        "data.synthetic.train_per_kind=2", "data.synthetic.test_per_kind=1",
        "model.encoder.channels=[8,16]", "model.encoder.strides=[1,2]",
        "model.encoder.num_attention_graphs=1",
        "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}",
        "model.tokenizer.vocab_size=200", "train.epochs=2", "train.batch_size=8",
        "train.deterministic=true", "eval.use_java=false", "eval.max_new_tokens=6", "eval.at_start=false",
        "eval.every=1", "eval.num_logged_pictures=0", *extra,
    ]


def clip_ids_of(run: Path) -> set[str]:
    from dataloaders.records import load_records
    return {r["video_name"] for r in load_records(run / "data" / "test.pkl")}


def model_state(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_epoch_run_fills_the_run_folder(tmp_path):
    metrics = trainer.main(tiny(tmp_path, "smoke"))
    run = tmp_path / "smoke"
    for rel in ("config.yaml", "train.log", "tokenizer/tokenizer.json", "checkpoints/last.pt",
                "checkpoints/best.pt", "checkpoints/epoch_0001.pt", "checkpoints/epoch_0002.pt",
                "predictions/val_epoch_0001.json", "predictions/val_epoch_0002.json",
                "predictions/test_best.json", "test_best_metrics.json", "data/train.pkl"):
        assert (run / rel).is_file(), rel
    assert not list((run / "predictions").glob("test_epoch_*"))  # test not scored during training
    assert any((run / "tb").iterdir())
    # the validation clips are training clips held out: none is trained on, none is a test clip
    val = set(json.loads((run / "predictions" / "val_epoch_0002.json").read_text()))
    from dataloaders.records import load_records
    train_ids = {r["video_name"] for r in load_records(run / "data" / "train.pkl")}
    assert val and val < train_ids and not val & clip_ids_of(run)
    assert "3 validation clips" in (run / "train.log").read_text()
    predictions = json.loads((run / "predictions" / "test_best.json").read_text())
    assert set(predictions) == clip_ids_of(run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all(set(x) == {"epoch", "step", "train_loss", "val"} for x in lines)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    chosen = max(lines, key=lambda x: x["val"]["CIDEr"])  # the first of equals: best.pt needs a gain
    assert best["state"]["epoch"] == chosen["epoch"] and best["metrics"] == chosen["val"]
    test = json.loads((run / "test_best_metrics.json").read_text())
    assert test["split"] == "test" and test["epoch"] == chosen["epoch"] and test["checkpoint"].endswith("best.pt")
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert 0.0 <= lines[-1]["val"][key] <= 10.0 and metrics[key] == test[key]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["epoch"] == 2 and last["state"]["step"] > 0
    assert last["config"]["experiment"] == "smoke"
    assert "tokenizer.json" in last["tokenizer"]


def test_without_validation_there_is_no_best_and_the_last_checkpoint_is_scored(tmp_path):
    metrics = trainer.main(tiny(tmp_path, "noval", "data.val_split.fraction=0", "train.epochs=1"))
    run = tmp_path / "noval"
    assert not (run / "checkpoints" / "best.pt").exists()
    line = json.loads((run / "metrics.jsonl").read_text())
    assert "val" not in line and "test" in line  # logged, labelled, never used for a choice
    test = json.loads((run / "test_last_metrics.json").read_text())
    assert test["checkpoint"].endswith("last.pt") and test["CIDEr"] == metrics["CIDEr"]


def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path):
    trainer.main(tiny(tmp_path, "straight"))
    trainer.main(tiny(tmp_path, "stopped", ) + ["--stop_after_epoch", "1"])
    stopped = tmp_path / "stopped"
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    trainer.main(tiny(tmp_path, "stopped"))  # the same command again: resumes at epoch 2
    # stopped in the middle of epoch 1 (step 3 of 8), then resumed
    trainer.main(tiny(tmp_path, "mid") + ["--stop_after_step", "3"])
    state = load_checkpoint(tmp_path / "mid" / "checkpoints" / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (0, 3, 3)
    trainer.main(tiny(tmp_path, "mid"))
    straight = tmp_path / "straight"
    for run in (stopped, tmp_path / "mid"):
        assert "resumed from" in (run / "train.log").read_text()
        assert_same_weights(model_state(straight / "checkpoints" / "last.pt"),
                            model_state(run / "checkpoints" / "last.pt"))
        # metrics.jsonl holds each epoch's mean training loss: equal only if the resumed epoch
        # counts the losses of the steps done before the stop
        assert (straight / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    losses = [json.loads(x)["train_loss"] for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)


def test_early_stop_ends_training_and_a_rerun_does_not_train_on(tmp_path):
    # lr ~ 0: the validation captions cannot change, so the first evaluation stays the best
    args = tiny(tmp_path, "early", "train.epochs=6", "train.lr=1e-9", "train.early_stop=2")
    trainer.main(args)
    run = tmp_path / "early"
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # best at 1, then 2 evaluations without a better score
    assert "early stop at epoch 3" in (run / "train.log").read_text()
    assert load_checkpoint(run / "checkpoints" / "best.pt")["state"]["epoch"] == 1
    assert (run / "test_best_metrics.json").is_file()
    before = (run / "metrics.jsonl").read_text()
    trainer.main(args)  # the same command again: nothing more to train
    assert (run / "metrics.jsonl").read_text() == before
    last = load_checkpoint(run / "checkpoints" / "last.pt")["state"]
    assert (last["epoch"], last["stopped_early"]) == (3, True)


def test_stop_after_epoch_writes_a_checkpoint_between_saves(tmp_path):
    trainer.main(tiny(tmp_path, "sparse", "train.epochs=3", "train.save_every_epochs=5") + ["--stop_after_epoch", "1"])
    assert load_checkpoint(tmp_path / "sparse" / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    trainer.main(tiny(tmp_path, "sparse", "train.epochs=3", "train.save_every_epochs=5"))
    assert "resumed from" in (tmp_path / "sparse" / "train.log").read_text()
    assert load_checkpoint(tmp_path / "sparse" / "checkpoints" / "last.pt")["state"]["epoch"] == 3


def test_two_fresh_runs_are_identical_bit_for_bit(tmp_path):
    """train.deterministic: tokenizer files and final weights equal between two fresh runs (the
    tokenizer is trained in each; a trainer whose result varies would shift every token id)."""
    for name in ("first", "second"):
        trainer.main(tiny(tmp_path, name, "train.epochs=1"))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "first" / "tokenizer" / file).read_bytes() == \
            (tmp_path / "second" / "tokenizer" / file).read_bytes(), file
    assert_same_weights(model_state(tmp_path / "first" / "checkpoints" / "last.pt"),
                        model_state(tmp_path / "second" / "checkpoints" / "last.pt"))


def test_tokenizer_training_gives_the_same_vocabulary_every_time():
    from dataloaders.tokenizer import train_tokenizer
    from tests.caption_templates import template_captions

    texts = template_captions(seed=0, n=400)
    first = train_tokenizer(texts, 300).backend_tokenizer.to_str()
    assert all(train_tokenizer(texts, 300).backend_tokenizer.to_str() == first for _ in range(3))


class InfiniteGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (a scaled fp16 gradient that overflowed)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_fp16_gradient_overflow_is_left_to_the_scaler(tmp_path, monkeypatch):
    """Gradients that overflow under a GradScaler (normal early in an fp16 run) make the scaler skip
    those steps and halve its scale; they are not non-finite losses and must not stop the run."""
    import training.trainer
    from models.captioner import Captioner

    scalers, calls, original = [], [], Captioner.forward

    def amp_with_a_scaler(amp, device):
        scalers.append(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=10 ** 6))
        return None, scalers[-1]

    def forward(self, *a, **kw):
        calls.append(1)
        loss = original(self, *a, **kw)
        return InfiniteGradient.apply(loss) if len(calls) <= 3 else loss

    monkeypatch.setattr(training.trainer, "amp_settings", amp_with_a_scaler)
    monkeypatch.setattr(Captioner, "forward", forward)
    trainer.main(tiny(tmp_path, "fp16", "train.max_nonfinite=2", "train.epochs=1"))
    state = load_checkpoint(tmp_path / "fp16" / "checkpoints" / "last.pt")["state"]
    assert state["nonfinite_total"] == 0 and state["batch_in_epoch"] == 0 and state["epoch"] == 1
    assert scalers[-1].get_scale() == 2.0 ** 13  # three overflows seen by the scaler, each halving it
    assert "non-finite" not in (tmp_path / "fp16" / "train.log").read_text()
    weights = model_state(tmp_path / "fp16" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_finetune_loads_the_pretrained_weights_and_logs_what_it_skipped(tmp_path):
    trainer.main(tiny(tmp_path, "pre", "model.reference=none", "train.epochs=1"))
    target = tmp_path / "fine" / "pretrain_checkpoints"
    target.mkdir(parents=True)
    shutil.copy(tmp_path / "pre" / "checkpoints" / "best.pt", target / "pretrain_epoch_1.pt")
    lr = 1e-3
    trainer.main(tiny(tmp_path, "fine", "model.reference=subtract", "train.epochs=1", "train.limit_steps=1",
                      f"train.lr={lr}", "train.warmup_ratio=0"))
    log_text = (tmp_path / "fine" / "train.log").read_text()
    assert f"finetuning source: {target / 'pretrain_epoch_1.pt'} (the only checkpoint in pretrain_checkpoints/)" in log_text
    pre = model_state(tmp_path / "pre" / "checkpoints" / "best.pt")
    fine = model_state(tmp_path / "fine" / "checkpoints" / "last.pt")
    # the reference branch doubles the projection's input width: exactly those tensors are skipped
    widened = sorted(k for k in pre if pre[k].shape != fine[k].shape)
    assert widened and all(k.startswith("projection.") for k in widened)
    lines = {line.split("finetune: ")[1].split(":")[0]: line for line in log_text.splitlines() if "finetune: " in line}
    assert all(f"'{k} {tuple(pre[k].shape)}->{tuple(fine[k].shape)}'" in lines["skipped (shape differs)"] for k in widened)
    assert lines["missing (kept at init)"].endswith("none") and lines["unexpected (ignored)"].endswith("none")
    # after one AdamW step every loaded parameter is within about lr of its pretrained value
    loaded = [k for k in pre if k not in widened and pre[k].is_floating_point() and "running_" not in k]
    assert loaded and max((fine[k] - pre[k]).abs().max().item() for k in loaded) <= 2 * lr
    # the tokenizer of the pretrain run is reused, so the vocabulary and T5 shapes match
    fine_tok = (tmp_path / "fine" / "tokenizer" / "tokenizer.json").read_text()
    assert fine_tok == (tmp_path / "pre" / "tokenizer" / "tokenizer.json").read_text()


def test_finetune_source_is_chosen_explicitly(tmp_path):
    from training.finetune import choose_init_checkpoint

    folder = tmp_path / "run" / "pretrain_checkpoints"
    assert choose_init_checkpoint("", tmp_path / "run") is None
    folder.mkdir(parents=True)
    for name in ("last.pt", "epoch_0010.pt"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(SystemExit, match="2 checkpoints .*epoch_0010.pt, last.pt.* set train.init_from"):
        choose_init_checkpoint("", tmp_path / "run")
    (folder / "best.pt").write_bytes(b"x")  # 'last.pt' sorts after 'best.pt'; best is still chosen
    assert choose_init_checkpoint("", tmp_path / "run") == (
        folder / "best.pt", "best.pt preferred among 3 files in pretrain_checkpoints/")
    assert choose_init_checkpoint(str(folder / "last.pt"), tmp_path / "run") == (folder / "last.pt", "train.init_from")
    with pytest.raises(FileNotFoundError, match="train.init_from"):
        choose_init_checkpoint(str(folder / "nope.pt"), tmp_path / "run")


def test_a_results_folder_of_another_config_is_refused(tmp_path):
    trainer.main(tiny(tmp_path, "mine", "train.epochs=1"))
    with pytest.raises(SystemExit, match="belongs to a different config.*train.lr"):
        trainer.main(tiny(tmp_path, "mine", "train.epochs=1", "train.lr=0.5"))


def run_cli(args: list[str], timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def test_cli_help_and_config_typo():
    helped = run_cli([sys.executable, "train_t5_stagcn.py", "--help"])
    assert helped.returncode == 0
    assert "--cfg_file" in helped.stdout and "model.projection.policy" in helped.stdout
    typo = run_cli([sys.executable, "train_t5_stagcn.py", "--cfg_file", CONFIG, "train.btach_size=4"])
    assert typo.returncode != 0
    assert "unknown config key 'train.btach_size'" in typo.stderr


def test_cli_eval_only(tmp_path):
    trainer.main(tiny(tmp_path, "ev", "train.epochs=1"))
    done = run_cli([sys.executable, "train_t5_stagcn.py", *tiny(tmp_path, "ev", "train.epochs=1"), "--eval_only"])
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "ev" / "test_best_metrics.json").read_text())
    predictions = json.loads((tmp_path / "ev" / "predictions" / "test_best.json").read_text())
    assert set(predictions) == clip_ids_of(tmp_path / "ev") and "CIDEr" in metrics


def test_torchrun_two_processes_on_gloo(tmp_path):
    done = run_cli([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", "train_t5_stagcn.py", *tiny(tmp_path, "ddp")], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    log_text = (run / "train.log").read_text()
    assert "world 2" in log_text
    assert "replicas identical on 2 ranks, parameters and buffers" in log_text
    predictions = json.loads((run / "predictions" / "test_best.json").read_text())
    assert sorted(predictions) == sorted(clip_ids_of(run))  # every clip exactly once
    # each rank has its own dropout stream, saved with the checkpoint
    streams = load_checkpoint(run / "checkpoints" / "last.pt")["rng"]
    assert len(streams) == 2 and not torch.equal(streams[0]["torch"], streams[1]["torch"])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 11])
def test_each_rank_captions_a_disjoint_share_and_together_all(world, n):
    from training.distributed import Dist, merge_disjoint, shard

    shares = [shard(n, Dist(rank=r, world=world)) for r in range(world)]
    flat = [i for share in shares for i in share]
    assert sorted(flat) == list(range(n))  # covering, and no index twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced, odd counts included
    merged = merge_disjoint([{f"clip{i}": r for i in share} for r, share in enumerate(shares)])
    assert len(merged) == n
    if n:
        with pytest.raises(RuntimeError, match="another rank also returned"):
            merge_disjoint([{"clip0": 0}, {"clip0": 1}])


def test_tokenizer_also_learns_the_texts_of_named_datasets(tmp_path):
    """model.tokenizer.also_train_on: a pretraining tokenizer covers the finetuning data's words
    (no unknown pieces); a missing file is named."""
    import pickle

    from configs import schema
    from dataloaders.build import tokenizer_for_run
    from dataloaders.synthetic import generate

    records = generate(0, 1, 1)[0][:3]
    words = "quokka zebra xylophone"
    for rec in records:
        rec["labels"] = [f"{words} {i}." for i in range(40)]
    with open(tmp_path / "extra.pkl", "wb") as handle:
        pickle.dump(records, handle)
    texts = ["a person raises the left arm."] * 20
    pieces = {}
    for name, extra in (("plain", []), ("extra", [str(tmp_path / "extra.pkl")])):
        cfg = schema.from_dict({"model": {"tokenizer": {"vocab_size": 200, "also_train_on": extra}}})
        tok = tokenizer_for_run(cfg, tmp_path / name, texts, None, True, lambda: None)
        pieces[name] = tok.convert_ids_to_tokens(tok(words, add_special_tokens=False)["input_ids"])
    assert "<unk>" in pieces["plain"] and "<unk>" not in pieces["extra"], pieces  # q, z, x never seen
    cfg = schema.from_dict({"model": {"tokenizer": {"also_train_on": ["no/such.pkl"]}}})
    with pytest.raises(FileNotFoundError, match="model.tokenizer.also_train_on: .*no/such.pkl"):
        tokenizer_for_run(cfg, tmp_path / "missing", texts, None, True, lambda: None)
