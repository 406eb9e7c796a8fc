"""The protocol command on tiny data: every run folder, the table, the baselines beside it, and
a killed command that continues without redoing finished runs."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation import protocol
from tests.test_train import REPO, tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learner_data(tmp_path_factory) -> Path:
    """Synthetic clips given four learners (two per split), in the dataset pickle format."""
    from dataloaders import synthetic
    from dataloaders.records import load_records

    folder = tmp_path_factory.mktemp("learners")
    synthetic.write(folder, seed=0, train_per_kind=2, test_per_kind=1)
    for name, offset in (("train", 0), ("test", 2)):
        records = load_records(folder / f"{name}.pkl")
        for i, rec in enumerate(records):
            rec["learner"] = f"L{offset + i % 2}"
        (folder / f"{name}.pkl").write_bytes(pickle.dumps(records, protocol=4))
    return folder


def protocol_args(results: Path, data: Path, which: str, *extra: str) -> list[str]:
    overrides = [a for a in tiny(results, "tinyproto") if a not in ("--cfg_file",) and not a.endswith(".yaml")]
    overrides = [a for a in overrides if not a.startswith("experiment=")]
    return ["--cfg_file", str(REPO / "configs" / "synthetic.yaml"), "--protocol", which, "--no-java",
            "--bootstrap", "200", *extra, *overrides, "experiment=tinyproto", "data.kind=pickle",
            f"data.root={data}", "data.standard=standard.pkl", "train.epochs=1", "data.val_split.fraction=0.3"]


def test_official_protocol_runs_every_seed_and_prints_the_table(tmp_path, learner_data, capsys):
    assert protocol.main(protocol_args(tmp_path, learner_data, "official", "--seeds", "2")) == 0
    root = tmp_path / "tinyproto" / "protocol" / "official"
    for seed in (0, 1):
        run = root / f"seed_{seed}"
        assert (run / "test_best_metrics.json").is_file() and (run / "checkpoints" / "best.pt").is_file()
        assert f"seed: {seed}" in (run / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert "mean ± std over 2 runs (seeds)" in out and "| model |" in out and "| consensus |" in out
    summary = json.loads((root / "summary.json").read_text())
    model = summary["rows"]["model"]
    assert len(model["CIDEr"]) == 2 and {"novelty", "distinct", "R@1"} <= set(model)
    # the table's model figures are the runs' own test figures
    for seed, cider in enumerate(model["CIDEr"]):
        assert cider == json.loads((root / f"seed_{seed}" / "test_best_metrics.json").read_text())["CIDEr"]
    ci = summary["bootstrap"]["CIDEr - consensus"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert (root / "summary.md").read_text().startswith("### tinyproto, official protocol")


def test_new_learner_protocol_holds_out_whole_learners_and_resumes_after_a_kill(tmp_path, learner_data):
    args = [sys.executable, "-m", "evaluation.protocol", *protocol_args(tmp_path, learner_data, "new-learner",
                                                                         "--folds", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    root = tmp_path / "tinyproto" / "protocol" / "new-learner"
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (root / "fold_1_seed_0" / "train.log").is_file():  # fold 0 done, fold 1 started
            assert first.poll() is None and time.monotonic() < deadline, "the command ended early"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the command and the training it started
        first.wait()
    done_before = (root / "fold_0_seed_0" / "test_best_metrics.json").stat().st_mtime_ns
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "fold_0_seed_0: finished earlier, skipped" in again.stdout
    assert (root / "fold_0_seed_0" / "test_best_metrics.json").stat().st_mtime_ns == done_before
    from dataloaders.records import load_records
    from dataloaders.splits import learner_of
    for fold in (0, 1):
        train = {learner_of(r) for r in load_records(root / "data" / f"fold_{fold}" / "train.pkl")}
        test = {learner_of(r) for r in load_records(root / "data" / f"fold_{fold}" / "test.pkl")}
        assert len(test) == 2 and len(train) == 2 and not train & test
        predictions = json.loads((root / f"fold_{fold}_seed_0" / "predictions" / "test_best.json").read_text())
        assert len(predictions) == len(load_records(root / "data" / f"fold_{fold}" / "test.pkl"))
    assert "mean ± std over 2 runs (folds)" in again.stdout


def test_decode_from_captions_the_runs_again_without_training(tmp_path, learner_data, capsys):
    from evaluation import inference
    from dataloaders.records import load_records

    args = protocol_args(tmp_path, learner_data, "official", "--seeds", "1")
    assert protocol.main(args) == 0
    source = tmp_path / "tinyproto" / "protocol" / "official" / "seed_0"
    capsys.readouterr()
    again = [a for a in args if not a.startswith("experiment=")]
    with pytest.raises(SystemExit, match=r"only eval.\* keys may differ .*these do: train.lr \(0.5 here, 0.002 in"):
        protocol.main([*again, "--decode-from", "tinyproto", "experiment=redecoded", "train.lr=0.5"])
    assert protocol.main([*again, "--decode-from", "tinyproto", "experiment=redecoded", "eval.num_beams=2",
                          "eval.max_new_tokens=5"]) == 0
    run = tmp_path / "redecoded" / "protocol" / "official" / "seed_0"
    assert not (run / "checkpoints" / "last.pt").exists() and not (run / "metrics.jsonl").exists()  # nothing trained
    assert (run / "decoded_from.txt").is_file()
    # the source's best.pt with the new decoding, as inference captions it
    model, cfg, _ = inference.load_model(ckpt=source / "checkpoints" / "best.pt", device="cpu")
    records = load_records(run.parent / "data" / "official" / "test.pkl")
    want = inference.caption_records(model, cfg, records, inference.read_standards(learner_data / "standard.pkl"),
                                      num_beams=2, max_new_tokens=5)
    got = json.loads((run / "predictions" / "test_best.json").read_text())
    assert got == {k: v[0] for k, v in want.items()}
    val = json.loads((run / "val_best_metrics.json").read_text())
    out = capsys.readouterr().out
    assert f"validation CIDEr-D of best.pt by run: {val['CIDEr']:.3f}" in out
    assert json.loads((run.parent / "summary.json").read_text())["decoded_from"] == "tinyproto"
    # a source trained on other clips is refused
    with pytest.raises(SystemExit, match="other validation clips"):
        protocol.main([*again, "--decode-from", "tinyproto", "experiment=other", "data.val_split.fraction=0.5"])
