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
from training.checkpoint import load_checkpoint

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
                "predictions/epoch_0001.json", "predictions/epoch_0002.json", "data/train.pkl"):
        assert (run / rel).is_file(), rel
    assert any((run / "tb").iterdir())
    predictions = json.loads((run / "predictions" / "epoch_0002.json").read_text())
    assert set(predictions) == clip_ids_of(run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert 0.0 <= lines[-1][key] <= 10.0 and key in metrics
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["epoch"] == 2 and last["state"]["step"] > 0
    assert last["config"]["experiment"] == "smoke"
    assert "tokenizer.json" in last["tokenizer"]


def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path):
    trainer.main(tiny(tmp_path, "straight"))
    trainer.main(tiny(tmp_path, "stopped", ) + ["--stop_after_epoch", "1"])
    stopped = tmp_path / "stopped"
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    trainer.main(tiny(tmp_path, "stopped"))  # the same command again: resumes at epoch 2
    assert "resumed from" in (stopped / "train.log").read_text()
    assert_same_weights(model_state(tmp_path / "straight" / "checkpoints" / "last.pt"),
                        model_state(stopped / "checkpoints" / "last.pt"))
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (stopped / "metrics.jsonl").read_text()


def test_resume_after_the_last_epoch_is_a_no_op(tmp_path):
    trainer.main(tiny(tmp_path, "done", "train.epochs=1"))
    before = model_state(tmp_path / "done" / "checkpoints" / "last.pt")
    trainer.main(tiny(tmp_path, "done", "train.epochs=1"))
    assert_same_weights(before, model_state(tmp_path / "done" / "checkpoints" / "last.pt"))


def test_finetune_picks_up_pretrain_checkpoint_and_logs_skipped_keys(tmp_path):
    trainer.main(tiny(tmp_path, "pre", "model.reference=none", "train.epochs=1"))
    target = tmp_path / "fine" / "pretrain_checkpoints"
    target.mkdir(parents=True)
    shutil.copy(tmp_path / "pre" / "checkpoints" / "best.pt", target / "pretrain_epoch_1.pt")
    trainer.main(tiny(tmp_path, "fine", "model.reference=subtract", "train.epochs=1"))
    log_text = (tmp_path / "fine" / "train.log").read_text()
    assert "finetuning from" in log_text and "pretrain_epoch_1.pt" in log_text
    skipped = [line for line in log_text.splitlines() if "skipped (shape differs)" in line][0]
    assert "projection" in skipped  # the projection widens when the reference branch is added
    pre = model_state(tmp_path / "pre" / "checkpoints" / "best.pt")
    # the tokenizer of the pretrain run is reused, so the vocabulary and T5 shapes match
    fine_tok = (tmp_path / "fine" / "tokenizer" / "tokenizer.json").read_text()
    assert fine_tok == (tmp_path / "pre" / "tokenizer" / "tokenizer.json").read_text()
    assert "t5.shared.weight" in pre


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
    metrics = json.loads((tmp_path / "ev" / "eval_best_metrics.json").read_text())
    predictions = json.loads((tmp_path / "ev" / "predictions" / "eval_best.json").read_text())
    assert set(predictions) == clip_ids_of(tmp_path / "ev") and "CIDEr" in metrics


def test_torchrun_two_processes_on_gloo(tmp_path):
    done = run_cli([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", "train_t5_stagcn.py", *tiny(tmp_path, "ddp")], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    log_text = (run / "train.log").read_text()
    assert "world 2" in log_text
    assert "replicas identical on 2 ranks" in log_text
    predictions = json.loads((run / "predictions" / "epoch_0002.json").read_text())
    assert sorted(predictions) == sorted(clip_ids_of(run))  # every clip exactly once
