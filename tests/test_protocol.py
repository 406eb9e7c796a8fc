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


def synthetic_with_learners(folder: Path, per_split: int) -> Path:
    """Synthetic clips given ``per_split`` learners in each split, in the dataset pickle format."""
    from dataloaders import synthetic
    from dataloaders.records import load_records

    synthetic.write(folder, seed=0, train_per_kind=2, test_per_kind=1)
    for name, offset in (("train", 0), ("test", per_split)):
        records = load_records(folder / f"{name}.pkl")
        for i, rec in enumerate(records):
            rec["learner"] = f"L{offset + i % per_split}"
        (folder / f"{name}.pkl").write_bytes(pickle.dumps(records, protocol=4))
    return folder


@pytest.fixture(scope="module")
def learner_data(tmp_path_factory) -> Path:
    """Synthetic clips given four learners (two per split)."""
    return synthetic_with_learners(tmp_path_factory.mktemp("learners"), 2)


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
    from inference import decode, inputs
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
    model, cfg, _ = decode.load_model(ckpt=source / "checkpoints" / "best.pt", device="cpu")
    records = load_records(run.parent / "data" / "official" / "test.pkl")
    want = decode.caption_records(model, cfg, records, inputs.read_standards(learner_data / "standard.pkl"),
                                      num_beams=2, max_new_tokens=5)
    got = json.loads((run / "predictions" / "test_best.json").read_text())
    assert got == {k: v[0] for k, v in want.items()}
    val = json.loads((run / "val_best_metrics.json").read_text())
    out = capsys.readouterr().out
    assert f"validation CIDEr-D of best.pt by run: {val['CIDEr']:.3f}" in out
    assert json.loads((run.parent / "summary.json").read_text())["decoded_from"] == "tinyproto"
    # --val-only captions the validation split alone: no test predictions, only the validation line
    capsys.readouterr()
    assert protocol.main([*again, "--decode-from", "tinyproto", "--val-only", "experiment=valonly",
                          "eval.num_beams=2", "eval.max_new_tokens=5"]) == 0
    val_run = tmp_path / "valonly" / "protocol" / "official" / "seed_0"
    assert not (val_run / "test_best_metrics.json").exists() and not (val_run / "predictions" / "test_best.json").exists()
    assert json.loads((val_run / "val_best_metrics.json").read_text()) == val  # the same checkpoint, the same decoding
    assert f"validation CIDEr-D of best.pt by run: {val['CIDEr']:.3f}" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --val-only without --decode-from: a usage error
        protocol.parse_args([*again, "--val-only"])
    # a source trained on other clips is refused
    with pytest.raises(SystemExit, match="other validation clips"):
        protocol.main([*again, "--decode-from", "tinyproto", "experiment=other", "data.val_split.fraction=0.5"])


# ------------------------------------------------------------------ new-learner retrieval, untrained
class _Stop(Exception):
    """Raised where the protocol would score the runs: the commands are all known by then."""


def training_commands(monkeypatch, argv: list[str]) -> list[list[str]]:
    """The training command lines protocol.main starts for ``argv``, without training: each child
    process is recorded instead of started and its run marked finished; scoring is stopped."""
    import train_t5_stagcn as trainer
    from configs.schema import load_config

    commands = []

    def fake_run(command, *args, **kwargs):
        assert Path(command[1]).name == "train_t5_stagcn.py", command
        commands.append(list(command))
        args = trainer.parse_args(command[2:])
        cfg = load_config(args.cfg_file, args.overrides)
        folder = REPO / cfg.results_dir / cfg.experiment
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test_best_metrics.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(protocol.subprocess, "run", fake_run)
    monkeypatch.setattr(protocol, "run_scores", lambda *a, **kw: (_ for _ in ()).throw(_Stop()))
    with pytest.raises(_Stop):
        protocol.main(argv)
    return commands


def test_new_learner_runs_never_retrieve_a_text_of_the_clips_own_learner(tmp_path, monkeypatch, bx_dir_or_none):
    """Each new-learner run's config (as the protocol starts it) says model.retrieval.exclude=learner,
    and with that config no training, validation or test clip's retrieved texts (encoder input and
    reranking pool) come from a clip of its own learner: on BX when present, else on synthetic clips
    with learners. Nothing is trained."""
    import train_t5_stagcn as trainer
    from configs.schema import load_config
    from dataloaders.build import retrieval_fields, validation_records
    from dataloaders.records import load_records
    from dataloaders.retrieval import Retriever
    from dataloaders.splits import learner_of

    if bx_dir_or_none is not None:  # configs/boxing.yaml itself says exclude: self
        argv = ["--cfg_file", str(REPO / "configs" / "boxing.yaml"), f"data.root={bx_dir_or_none}", "--folds", "2"]
    else:  # six learners: a fold trains on three, one of them held out for validation
        data = synthetic_with_learners(tmp_path / "learners", 3)
        argv = ["--cfg_file", str(REPO / "configs" / "synthetic.yaml"), "data.kind=pickle", f"data.root={data}",
                "data.standard=standard.pkl", "--folds", "2"]
    argv += ["--protocol", "new-learner", "--no-java", f"results_dir={tmp_path}", "experiment=nl",
             "model.retrieval.k=3", "eval.rerank=2", "eval.rerank_k=3"]
    commands = training_commands(monkeypatch, argv)
    assert len(commands) == 2  # one run per fold

    def tagged(records):  # each label carries its clip's learner, so a retrieved text says where it came from
        return [{**r, "labels": [f"{learner_of(r)}::{t}" for t in r["labels"]]} for r in records]

    for command in commands:
        args = trainer.parse_args(command[2:])
        assert "model.retrieval.exclude=learner" in args.overrides
        cfg = load_config(args.cfg_file, args.overrides)
        assert cfg.model.retrieval.exclude == "learner", command
        root = Path(cfg.data.root) if Path(cfg.data.root).is_absolute() else REPO / cfg.data.root
        train, val, _ = validation_records(cfg.data, load_records(root / cfg.data.train), root / cfg.data.train,
                                           None, None)
        test = load_records(root / cfg.data.test)
        assert train and val and test
        retriever = Retriever.from_records(tagged(train))  # as dataloaders.build.attach_retrieval builds it
        checked = 0
        for split, records in (("train", train), ("val", val), ("test", test)):
            fields = retrieval_fields(cfg, retriever, tagged(records))
            assert {"retrieved", "pool"} <= set(fields)
            for rec in records:
                for field in ("retrieved", "pool"):
                    texts = fields[field][rec["video_name"]]
                    assert texts, (split, rec["video_name"], field)
                    own, sources = learner_of(rec), {t.split("::", 1)[0] for t in texts}
                    assert own not in sources, (f"{cfg.experiment}: {split} clip {rec['video_name']} retrieved "
                                                f"({field}) texts of its own learner {own}")
                    checked += 1
        assert checked == 2 * (len(train) + len(val) + len(test))



def test_decode_from_captions_with_the_given_configs_decoding(tmp_path):
    """--decode-from loads the source run's config.yaml with every eval.* key of the config given
    (file and overrides) as overrides, so the shipped file's decoding applies without being
    repeated on the command line."""
    import yaml

    from configs import schema

    given = schema.load_config(REPO / "configs" / "boxing.yaml", ["eval.rerank_gate=0.5"])
    source = schema.load_config(REPO / "configs" / "boxing.yaml",
                                ["eval.rerank_candidates=generated", "eval.rerank_logprob=0", "eval.num_beams=1"])
    saved = tmp_path / "config.yaml"  # a source run's config, decoded otherwise
    saved.write_text(yaml.safe_dump(schema.to_dict(source), sort_keys=False))
    overrides = protocol.decoding_overrides(given)
    assert overrides and all(o.startswith("eval.") for o in overrides)
    again = schema.load_config(saved, overrides)
    assert schema.to_dict(again)["eval"] == schema.to_dict(given)["eval"]
    assert schema.to_dict(again)["model"] == schema.to_dict(source)["model"]
    assert (again.eval.rerank_candidates, again.eval.rerank_gate, again.eval.num_beams) == ("gated", 0.5, 3)
