"""Every command that takes a run folder, a checkpoint or an embedder answers a missing one with one
line on stderr and exit status 2: no traceback, and nothing written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def commands(tmp: Path) -> dict[str, list[str]]:
    """name -> argv (after the interpreter); every missing thing lies in ``tmp``."""
    run, ckpt = str(tmp / "no_run"), str(tmp / "no_run" / "checkpoints" / "last.pt")
    data, standard = str(tmp / "data.pkl"), str(tmp / "standard.pkl")
    return {
        "caption": ["caption.py", "--run", run, str(tmp / "clip.npy")],
        "caption --ckpt": ["caption.py", "--ckpt", ckpt, str(tmp / "clip.npy")],
        "demo": ["demo.py", "--run", run],
        "export": ["-m", "models.export", "--run", run, "--out", str(tmp / "export")],
        "pictures clip": ["-m", "inference.pictures", "clip", "--run", run, str(tmp / "in" / "clip.npy"),
                          "--out-dir", str(tmp / "pics")],
        "pictures curves": ["-m", "inference.pictures", "curves", run, "--out", str(tmp / "curves.png")],
        "score": ["-m", "evaluation.score", "--predictions", str(tmp / "no_run" / "test_best.json"),
                  "--references", data],
        "alignment.report": ["-m", "alignment.report", "--data", data, "--standard", standard,
                             "--embedder", ckpt],
        "alignment.preprocess": ["-m", "alignment.preprocess", "--data", data, "--standard", standard,
                                 "--method", "carl", "--embedder", ckpt, "--out", str(tmp / "aligned.pkl")],
        "train --eval_only": ["train_t5_stagcn.py", "--cfg_file", "configs/synthetic.yaml", "--eval_only",
                              f"results_dir={tmp}", "experiment=no_run"],
        "protocol --decode-from": ["-m", "evaluation.protocol", "--cfg_file", "configs/boxing.yaml",
                                   "--protocol", "official", "--decode-from", "no_run", f"results_dir={tmp}"],
    }


@pytest.mark.parametrize("name", list(commands(Path("/x"))))
def test_a_missing_run_or_checkpoint_is_one_line_and_exit_2(name, tmp_path):
    argv = commands(tmp_path)[name]
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "clip.npy", np.zeros((8, 22, 3), dtype=np.float32))  # an input that is there
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert "no_run" in lines[0] and "error" in lines[0], lines
    assert sorted(tmp_path.rglob("*")) == before, "nothing is written"
