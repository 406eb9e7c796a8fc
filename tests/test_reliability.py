"""Reliability: damaged and hostile checkpoints, SIGTERM, non-finite losses, bad inputs, full disk.

Every run uses the tiny overrides of tests/test_train.py (a run takes about a second on CPU).
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

import train_t5_stagcn as trainer
from models.captioner import Captioner
from core.io import CheckpointError, load_checkpoint
from tests.test_train import REPO, tiny

pytestmark = pytest.mark.reliability


def ckdir(results: Path, experiment: str) -> Path:
    return results / experiment / "checkpoints"


def log_of(results: Path, experiment: str) -> str:
    return (results / experiment / "train.log").read_text(encoding="utf-8")


def no_torch_load_frames(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "serialization.py" not in text and "_pickle" not in text and "UnpicklingError" not in text.split(
        "CheckpointError")[0], text[-3000:]


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob(".tmp-*")], list(folder.rglob(".tmp-*"))


# ======================================================================= 1. damaged checkpoint ====
def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zeroed":
        path.write_bytes(b"\0" * size)
    elif how == "garbage":
        path.write_bytes(os.urandom(size))
    elif how == "wrong_file":  # a valid torch file that is not a checkpoint dict
        torch.save(torch.zeros(3), path)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbage", "wrong_file", "empty"])
def test_damaged_last_falls_back_to_newest_epoch_file(tmp_path, how):
    trainer.main(tiny(tmp_path, "dmg"))
    folder = ckdir(tmp_path, "dmg")
    assert sorted(p.name for p in folder.glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    damage(folder / "last.pt", how)
    trainer.main(tiny(tmp_path, "dmg", "train.epochs=3"))  # epochs may grow on resume
    text = log_of(tmp_path, "dmg")
    warning = [line for line in text.splitlines() if "skipped damaged checkpoint" in line]
    assert len(warning) == 1, text
    assert "WARNING" in warning[0]
    assert str(folder / "last.pt") in warning[0] and str(folder / "epoch_0002.pt") in warning[0]
    assert f"resumed from {folder / 'epoch_0002.pt'}: epoch 2" in text
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 3  # rewritten, good again


def test_damaged_last_and_newest_epoch_fall_back_to_older_epoch(tmp_path):
    trainer.main(tiny(tmp_path, "dmg2"))
    folder = ckdir(tmp_path, "dmg2")
    damage(folder / "last.pt", "truncated")
    damage(folder / "epoch_0002.pt", "zeroed")
    trainer.main(tiny(tmp_path, "dmg2"))
    text = log_of(tmp_path, "dmg2")
    warning = [line for line in text.splitlines() if "skipped damaged checkpoint" in line][0]
    for name in ("last.pt", "epoch_0002.pt", "epoch_0001.pt"):
        assert str(folder / name) in warning
    assert f"resumed from {folder / 'epoch_0001.pt'}: epoch 1" in text
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 2


def test_every_checkpoint_damaged_stops_with_a_clear_error(tmp_path):
    trainer.main(tiny(tmp_path, "alldmg"))
    folder = ckdir(tmp_path, "alldmg")
    for name, how in (("last.pt", "truncated"), ("epoch_0002.pt", "zeroed"), ("epoch_0001.pt", "garbage")):
        damage(folder / name, how)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "alldmg", "train.epochs=3"))
    message = str(info.value)
    assert message.startswith("no usable checkpoint to resume from")
    for name in ("last.pt", "epoch_0002.pt", "epoch_0001.pt"):
        assert str(folder / name) in message
    assert "damaged" in message and "Move the damaged files away" in message
    assert info.value.__cause__ is None
    no_torch_load_frames(info.value)


# ======================================================================= 2. hostile checkpoint ====
class Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "state": {"epoch": 0}, "x": Payload(marker)}, path)
    # sanity: the payload really would run under a plain (unsafe) unpickle
    probe = marker.with_name("probe")
    torch.save({"x": Payload(probe)}, path.with_suffix(".probe"))
    torch.load(path.with_suffix(".probe"), weights_only=False)
    assert probe.exists()
    path.with_suffix(".probe").unlink()
    return path


def assert_refused(exc: BaseException, path: Path) -> None:
    assert isinstance(exc, CheckpointError)
    assert str(path) in str(exc) and "refused, nothing was run" in str(exc)
    no_torch_load_frames(exc)


def test_hostile_checkpoint_refused_on_resume(tmp_path):
    marker = tmp_path / "MARKER"
    evil = hostile_checkpoint(ckdir(tmp_path, "res") / "last.pt", marker)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "res"))
    assert_refused(info.value, evil)
    assert not marker.exists()


def test_hostile_last_with_good_epoch_files_falls_back(tmp_path):
    trainer.main(tiny(tmp_path, "res2"))
    marker = tmp_path / "MARKER"
    hostile_checkpoint(ckdir(tmp_path, "res2") / "last.pt", marker)
    trainer.main(tiny(tmp_path, "res2", "train.epochs=3"))
    text = log_of(tmp_path, "res2")
    assert "refused, nothing was run" in text and "resumed from" in text and "epoch_0002.pt" in text
    assert not marker.exists()


def test_hostile_checkpoint_refused_for_finetune_from_pretrain_folder(tmp_path):
    marker = tmp_path / "MARKER"
    evil = hostile_checkpoint(tmp_path / "ft" / "pretrain_checkpoints" / "pretrain.pt", marker)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "ft", "train.epochs=1"))
    assert_refused(info.value, evil)
    assert not marker.exists()
    assert not (ckdir(tmp_path, "ft") / "last.pt").exists()


def test_hostile_checkpoint_refused_for_init_from(tmp_path):
    marker = tmp_path / "MARKER"
    evil = hostile_checkpoint(tmp_path / "elsewhere" / "model.pt", marker)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "init", "train.epochs=1", f"train.init_from={evil}"))
    assert_refused(info.value, evil)
    assert not marker.exists()


def test_hostile_checkpoint_refused_for_eval_only(tmp_path):
    trainer.main(tiny(tmp_path, "ev", "train.epochs=1"))
    marker = tmp_path / "MARKER"
    evil = hostile_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "ev", "train.epochs=1") + ["--eval_only", "--ckpt", str(evil)])
    assert_refused(info.value, evil)
    assert not marker.exists()
    assert not (tmp_path / "ev" / "predictions" / "eval_evil.json").exists()


# ======================================================================= 3. SIGTERM ==============
def test_sigterm_checkpoints_at_a_step_boundary_exits_0_and_resumes(tmp_path):
    args = [sys.executable, "train_t5_stagcn.py", *tiny(tmp_path, "term", "train.epochs=12")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log_file = tmp_path / "term" / "train.log"
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log_file.is_file() and "epoch 1 done" in log_file.read_text(encoding="utf-8"):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    text = log_file.read_text(encoding="utf-8")
    assert "signal 15 received" in text and "stopped on request" in text
    state = load_checkpoint(tmp_path / "term" / "checkpoints" / "last.pt")["state"]
    assert state["epoch"] < 12 and state["step"] > 0
    assert 1 <= state["batch_in_epoch"] <= 7  # saved mid-epoch, at a step boundary (7 batches an epoch)
    no_temporaries(tmp_path / "term")
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    text = log_file.read_text(encoding="utf-8")
    assert f"resumed from {tmp_path / 'term' / 'checkpoints' / 'last.pt'}: epoch {state['epoch']}, " \
           f"step {state['step']}" in text
    final = load_checkpoint(tmp_path / "term" / "checkpoints" / "last.pt")["state"]
    assert final["epoch"] == 12 and final["step"] == 12 * 7 and final["batch_in_epoch"] == 0
    # the interrupted run ends where an uninterrupted one does (same process settings)
    straight = [sys.executable, "train_t5_stagcn.py", *tiny(tmp_path, "straight", "train.epochs=12")]
    done = subprocess.run(straight, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "term" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (tmp_path / "term" / "metrics.jsonl").read_text()


# ======================================================================= 1. SIGKILL at any moment =
KILL_EPOCHS = 16
# Where each run of the same command is killed: start-up writes, steps, evaluations, the moment
# between a metrics line and its checkpoint, and half-way through every kind of file write.
# (The tiny model's CIDEr stays 0, so best.pt is written at epoch 1 only: its kill comes early.)
KILL_PLAN = ["write:config.yaml:1", "write:tokenizer:1", "eval:1", "step:5", "write:best.pt:1",
             "write:epoch_:1", "write:last.pt:1", "metrics:1", "step:11", "write:predictions:2",
             "eval:3", "step:20", "write:last.pt:2"]


def kill_run_args(results: Path, experiment: str, killer: bool) -> list[str]:
    script = "tests/kill_launcher.py" if killer else "train_t5_stagcn.py"
    return [sys.executable, script,
            *tiny(results, experiment, f"train.epochs={KILL_EPOCHS}", "eval.at_start=true")]


def kill_env(point: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return {**env, "MOTION2TEXT_KILL": point} if point else env


def checkpoints_all_load(folder: Path) -> list[str]:
    """Every ``*.pt`` in ``folder`` loads completely (temporaries are not ``*.pt``)."""
    names = sorted(p.name for p in folder.glob("*.pt"))
    for name in names:
        load_checkpoint(folder / name)  # raises on a truncated file
    return names


def test_sigkill_at_planned_points_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL at every planned point in turn, each time running the same command again. Every
    planned kill must land; the run must end with the weights, state and metrics.jsonl of a run
    never interrupted; no checkpoint may ever be truncated; no temporary file may be left."""
    run = tmp_path / "killed"
    ck = run / "checkpoints"
    for point in KILL_PLAN:
        proc = subprocess.run(kill_run_args(tmp_path, "killed", killer=True), cwd=REPO, env=kill_env(point),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])
        if ck.is_dir():
            checkpoints_all_load(ck)
    log_text = (run / "train.log").read_text(encoding="utf-8")
    resumed = log_text.count("resumed from ")
    final = subprocess.run(kill_run_args(tmp_path, "killed", killer=False), cwd=REPO, env=kill_env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert resumed == len(KILL_PLAN) - 7  # the first seven runs die before a checkpoint exists
    no_temporaries(run)
    assert checkpoints_all_load(ck)

    straight = tmp_path / "straight"
    done = subprocess.run(kill_run_args(tmp_path, "straight", killer=False), cwd=REPO, env=kill_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(ck / "last.pt")
    assert a["state"] == b["state"] and b["state"]["epoch"] == KILL_EPOCHS
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (straight / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(KILL_EPOCHS + 1))
    print(f"SIGKILL x {len(KILL_PLAN)} ({', '.join(KILL_PLAN)}); {resumed} resumed from a checkpoint; "
          "final weights equal")


# ======================================================================= 4. non-finite loss =======
def nan_on_calls(monkeypatch, bad) -> list[int]:
    calls: list[int] = []
    original = Captioner.forward

    def forward(self, *a, **kw):
        loss = original(self, *a, **kw)
        calls.append(1)
        return loss * float("nan") if bad(len(calls)) else loss

    monkeypatch.setattr(Captioner, "forward", forward)
    return calls


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    calls = nan_on_calls(monkeypatch, lambda n: n in (3, 4, 11))
    trainer.main(tiny(tmp_path, "nan"))
    assert len(calls) == 14  # 2 epochs of 7 batches (51 training samples left after validation)
    text = log_of(tmp_path, "nan")
    assert text.count("non-finite loss/gradient") == 3
    state = load_checkpoint(ckdir(tmp_path, "nan") / "last.pt")["state"]
    assert state["nonfinite_total"] == 3 and state["step"] == 14 - 3
    weights = load_checkpoint(ckdir(tmp_path, "nan") / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "nan" / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/nonfinite_steps")] == [1, 2, 3]


def test_too_many_nonfinite_in_a_row_stops_naming_the_clips(tmp_path, monkeypatch):
    nan_on_calls(monkeypatch, lambda n: True)
    with pytest.raises(FloatingPointError, match=r"2 non-finite losses in a row \(train.max_nonfinite=2\)") as info:
        trainer.main(tiny(tmp_path, "nan2", "train.max_nonfinite=2"))
    from dataloaders.records import load_records
    names = {r["video_name"] for r in load_records(tmp_path / "nan2" / "data" / "train.pkl")}
    named = str(info.value).split("clips: ")[1].split(", ")
    assert named and all(any(n.startswith(v) for v in names) for n in named), (named, sorted(names)[:4])
    assert log_of(tmp_path, "nan2").count("non-finite loss/gradient") == 2


# ======================================================================= 5. bad inputs ===========
def synthetic_copy(folder: Path) -> tuple[list, list, list]:
    from dataloaders import synthetic
    synthetic.write(folder, seed=0, train_per_kind=2, test_per_kind=1)
    from dataloaders.safe_pickle import safe_load
    return tuple(safe_load(folder / f"{n}.pkl") for n in ("train", "test", "standard"))


def write_pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=4))


def pickle_run(results: Path, root: Path, *extra: str) -> list[str]:
    return tiny(results, "bad", "data.kind=pickle", f"data.root={root}", "train.epochs=1", *extra)


def test_missing_data_file(tmp_path):
    from dataloaders.records import DataError
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="dataset file not found") as info:
        trainer.main(pickle_run(tmp_path, missing))
    assert str(missing / "train.pkl") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_empty_dataset(tmp_path):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    synthetic_copy(root)
    write_pickle(root / "train.pkl", [])
    with pytest.raises(DataError, match="the dataset is empty") as info:
        trainer.main(pickle_run(tmp_path, root))
    assert str(root / "train.pkl") in str(info.value)


def test_motion_type_without_a_standard(tmp_path):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    train[3]["motion_type"] = "moonwalk"
    write_pickle(root / "train.pkl", train)
    with pytest.raises(DataError) as info:
        trainer.main(pickle_run(tmp_path, root, "data.standard=standard.pkl", "model.reference=subtract"))
    message = str(info.value)
    assert str(root / "train.pkl") in message and "motion_type" in message and "moonwalk" in message
    assert train[3]["video_name"] in message


def test_nan_coordinates(tmp_path):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    train[5]["coordinates"] = train[5]["coordinates"].copy()
    train[5]["coordinates"][2, 4] = float("nan")
    write_pickle(root / "train.pkl", train)
    with pytest.raises(DataError) as info:
        trainer.main(pickle_run(tmp_path, root))
    message = str(info.value)
    assert str(root / "train.pkl") in message and "coordinates" in message and "non-finite" in message
    assert train[5]["video_name"] in message and "frame 2" in message


@pytest.mark.parametrize("labels", [42, [b"bytes label"], ["ok", None], []])
def test_labels_that_are_not_text(tmp_path, labels):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    train[1]["labels"] = labels
    write_pickle(root / "train.pkl", train)
    with pytest.raises(DataError) as info:
        trainer.main(pickle_run(tmp_path, root))
    message = str(info.value)
    assert str(root / "train.pkl") in message and "labels" in message and train[1]["video_name"] in message


def test_negative_learning_rate(tmp_path):
    with pytest.raises(Exception, match=r"train\.lr") as info:
        trainer.main(tiny(tmp_path, "lr", "train.lr=-0.001"))
    assert "-0.001" in str(info.value)
    assert not (tmp_path / "lr").exists()  # refused before a run folder is made


def test_batch_larger_than_dataset_with_drop_last(tmp_path):
    with pytest.raises(ValueError, match=r"train\.batch_size=1000 with drop_last leaves no batch: 51 training"):
        trainer.main(tiny(tmp_path, "big", "train.batch_size=1000", "train.drop_last=true"))


# ======================================================================= 6. disk full =============
def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = torch.save
    writes: list[str] = []

    def save(obj, f, *a, **kw):
        name = getattr(f, "name", f)  # os.fdopen files are named by their descriptor
        target = Path(os.readlink(f"/proc/self/fd/{name}") if isinstance(name, int) else str(name)).name
        if target.startswith(".tmp-last.pt."):
            writes.append(target)
            if len(writes) == 2:
                f.write(b"PK\x03\x04 half a zip")  # part of the data reached the disk
                raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointError) as info:
        trainer.main(tiny(tmp_path, "full"))
    folder = ckdir(tmp_path, "full")
    message = str(info.value)
    assert f"could not write checkpoint {folder / 'last.pt'}" in message
    assert "No space left on device" in message and "previous file (if any) is unchanged" in message
    assert len(writes) == 2
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 1
    no_temporaries(tmp_path / "full")
    monkeypatch.setattr(torch, "save", real_save)
    trainer.main(tiny(tmp_path, "full"))  # space is back: the same command resumes and finishes
    assert "resumed from" in log_of(tmp_path, "full")
    assert load_checkpoint(folder / "last.pt")["state"]["epoch"] == 2


def test_disk_full_on_rename_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer.main(tiny(tmp_path, "ren", "train.epochs=1"))
    folder = ckdir(tmp_path, "ren")
    before = (folder / "last.pt").read_bytes()
    from core import io as ckpt

    def replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*last.pt.*unchanged"):
        ckpt.atomic_save({"a": torch.ones(2)}, folder / "last.pt")
    monkeypatch.undo()
    assert (folder / "last.pt").read_bytes() == before
    no_temporaries(folder)


def test_segment_outside_the_clip(tmp_path):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    n = train[2]["coordinates"].shape[0]
    train[2]["gt_end_frame"] = n + 50
    write_pickle(root / "train.pkl", train)
    with pytest.raises(DataError) as info:
        trainer.main(pickle_run(tmp_path, root, "data.standard=standard.pkl", "data.segment=gt"))
    message = str(info.value)
    assert str(root / "train.pkl") in message and "gt_end_frame" in message and str(n + 50) in message
    assert train[2]["video_name"] in message



def shorten(record: dict, frames: int) -> None:
    """Keep the first ``frames`` frames; drop the segment fields that pointed past them."""
    record["coordinates"] = record["coordinates"][:frames].copy()
    for key in [k for k in record if k.endswith(("_frame", "_seq_len"))]:
        del record[key]


def test_clip_shorter_than_the_temporal_kernel(tmp_path):
    from dataloaders.records import DataError
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    shorten(train[4], 2)  # 2 frames, kernel 9
    write_pickle(root / "train.pkl", train)
    with pytest.raises(DataError) as info:
        trainer.main(pickle_run(tmp_path, root, "model.encoder.temporal_kernel=9"))
    message = str(info.value)
    assert str(root / "train.pkl") in message and train[4]["video_name"] in message
    assert "at least 9 frames" in message and "2 frame(s)" in message
    assert "model.encoder.temporal_kernel" in message and "data.on_bad=skip" in message


def test_short_clip_skipped_with_on_bad_skip(tmp_path):
    from dataloaders.dataset import MotionTextDataset
    from dataloaders.records import validate_records
    root = tmp_path / "data"
    train, _, _ = synthetic_copy(root)
    shorten(train[4], 5)
    records = validate_records(train, "train.pkl")
    with pytest.warns(UserWarning, match=f"{train[4]['video_name']}.*5 frame.*skipped"):
        data = MotionTextDataset(records, min_frames=9, on_bad="skip", source="train.pkl")
    assert data.clip_ids() == [r["video_name"] for i, r in enumerate(train) if i != 4]
    # A clip exactly at the limit is kept.
    train[4]["coordinates"] = train[0]["coordinates"]
    shorten(train[4], 9)
    data = MotionTextDataset(validate_records(train, "train.pkl"), min_frames=9, source="train.pkl")
    assert len(data.clip_ids()) == len(train)


# ======================================================================= 6. a rank dies ==========
def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank: int, port: int, argv: list[str], log_path: Path) -> subprocess.Popen:
    """One rank of a 2-process gloo world, started by hand (no torchrun to clean up after it)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train_t5_stagcn.py", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def signal_one_rank(tmp_path: Path, experiment: str, victim: int, signum: int, *extra: str
                    ) -> tuple[int, float, str]:
    """Start a 2-rank run, send ``signum`` to rank ``victim`` after two epochs; returns the other
    rank's exit code, the seconds it took to exit, and its stderr."""
    argv = tiny(tmp_path, experiment, "train.epochs=200", "eval.every=1000", "train.save_every_epochs=1000",
                *extra)
    port = free_port()
    procs = [start_rank(r, port, argv, tmp_path / f"rank{r}.err") for r in (0, 1)]
    try:
        log_file = tmp_path / experiment / "train.log"
        wait_for(lambda: log_file.is_file() and "epoch 2 done" in log_file.read_text(), 240,
                 "two epochs of training")
        procs[victim].send_signal(signum)
        start = time.monotonic()
        code = procs[1 - victim].wait(timeout=120)
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return code, elapsed, (tmp_path / f"rank{1 - victim}.err").read_text()


@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_dies_and_the_survivor_exits_nonzero_quickly(tmp_path, victim):
    """SIGKILL one rank mid-training: the other must fail (not hang) well inside 2 minutes."""
    code, elapsed, err = signal_one_rank(tmp_path, "dies", victim, signal.SIGKILL)
    assert code != 0, f"survivor exited {code} after its peer was killed"
    assert elapsed < 120
    assert "a collective operation failed" in err and "by peer" in err, err[-2000:]  # closed or reset


def test_a_frozen_rank_is_caught_by_the_collective_timeout(tmp_path):
    """SIGSTOP one rank (alive but silent): the other fails once train.dist_timeout_s has passed."""
    code, elapsed, err = signal_one_rank(tmp_path, "frozen", 1, signal.SIGSTOP, "train.dist_timeout_s=10")
    assert code != 0 and 5 < elapsed < 120, (code, elapsed)
    assert "a collective operation failed" in err and "train.dist_timeout_s" in err, err[-2000:]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    """Checkpoints and run files are as readable as any file the user writes (not mkstemp's 0600)."""
    from core.io import atomic_write_text
    old = os.umask(0o022)
    try:
        path = atomic_write_text("x", tmp_path / "a.txt")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        path = atomic_write_text("y", tmp_path / "b.txt")
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
