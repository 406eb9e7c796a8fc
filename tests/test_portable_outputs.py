"""What a run or an export writes to be read elsewhere names no machine's folders: export.json and
the export's model card, and test_best_metrics.json, hold paths relative to the run folder or the
repository (or a bare name); the benchmarks print paths relative to the checkout."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import common
from models import export

REPO_ROOT = Path(__file__).resolve().parents[1]
ABSOLUTE = re.compile(r"(?<![^\s`'\"(\[=:,])/[^\s`'\"(),\]]+")  # "/..." after a space, quote, "=", ...


def strings_of(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings_of(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_of(v)
    elif isinstance(value, str):
        yield value


def assert_portable(text: str, *folders: Path, what: str) -> None:
    for folder in (REPO_ROOT, *folders):
        assert str(folder) not in text, f"{what} names {folder}"
    assert not ABSOLUTE.findall(text), f"{what} holds absolute paths: {ABSOLUTE.findall(text)[:3]}"


def test_export_and_result_files_hold_no_machine_paths(tiny_run, tmp_path):
    out = export.export_run(tiny_run, tmp_path / "exported")
    manifest = json.loads((out / export.MANIFEST).read_text(encoding="utf-8"))
    for value in strings_of(manifest):
        assert not Path(value).is_absolute(), value
    assert manifest["source"]["run"] == tiny_run.name                 # the run lies outside the repository
    assert manifest["source"]["checkpoint"] == "checkpoints/best.pt"  # relative to the run folder
    assert_portable((out / export.MANIFEST).read_text(encoding="utf-8"), tiny_run, tmp_path, what="export.json")
    card = (out / export.CARD).read_text(encoding="utf-8")
    assert "python train_t5_stagcn.py" in card  # the command is kept, its paths made relative
    assert_portable(card, tiny_run, tmp_path, what="the model card")

    metrics_file = tiny_run / "test_best_metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    assert metrics["checkpoint"] == "checkpoints/best.pt"
    assert_portable(metrics_file.read_text(encoding="utf-8"), tiny_run, what="test_best_metrics.json")


def test_portable_paths_by_hand(tmp_path):
    run = tmp_path / "results" / "run"
    assert export.portable(run / "checkpoints" / "best.pt", run) == "checkpoints/best.pt"
    assert export.portable(REPO_ROOT / "results" / "boxing") == "results/boxing"
    assert export.portable(tmp_path / "elsewhere" / "model.pt", run) == "model.pt"
    text = f"2024-01-01 10:00:00  python train_t5_stagcn.py --cfg_file {REPO_ROOT}/configs/synthetic.yaml " \
           f"results_dir={tmp_path}/results (from `{run}/train.pkl`) t5/ 1/2"
    assert export.portable_text(text, run) == ("2024-01-01 10:00:00  python train_t5_stagcn.py --cfg_file "
                                               "configs/synthetic.yaml results_dir=results (from `train.pkl`) t5/ 1/2")


def test_benchmarks_print_paths_relative_to_the_checkout():
    assert common.shown(common.RESULTS_DIR / "train_step.json") == "bench/results/train_step.json"
    assert common.shown(REPO_ROOT.parent / "shared" / "data" / "BX") == "../shared/data/BX"
    assert common.shown(Path("bench/results/x.json")) == "bench/results/x.json"  # as typed
    assert not Path(common.shown(common.BX_DIR)).is_absolute() or not common.BX_DIR.resolve().is_relative_to(
        REPO_ROOT.parent.resolve())


def test_default_outputs_go_under_results():
    from alignment import preprocess
    from inference import pictures

    assert pictures.parse_args(["curves", "results/a"]).out == "results/curves.png"
    assert pictures.parse_args(["clip", "--run", "results/a", "x.npy"]).out_dir == "results/pictures"
    args = preprocess.parse_args(["--data", "../shared/data/BX/BX_test.pkl", "--standard", "s.pkl", "--method", "dtw"])
    assert args.out == Path("results/alignment/BX_test.dtw.pkl")


def test_gitignore_covers_what_commands_write():
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    text = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8")
    named = [line.lstrip("!") for line in text.splitlines() if line.startswith("!")]
    for path in named:  # every exception the file makes names something that exists
        assert (REPO_ROOT / path.rstrip("/")).exists(), f".gitignore keeps {path}, which does not exist"
    outputs = ["results/synthetic/checkpoints/best.pt", "results/pictures/a.gif", "results/curves.png",
               "results/alignment/BX_test.dtw.pkl", "bench/results/train_step.json", "exports/boxing/export.json",
               "data/humanml3d/train.pkl"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *outputs], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert sorted(done.stdout.split()) == sorted(outputs)
    kept = subprocess.run(["git", "check-ignore", "--no-index", "results/finetune_example/config.yaml"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert kept.returncode == 1  # the shipped example stays tracked
