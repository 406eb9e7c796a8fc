"""Shared pytest fixtures: the BX dataset path (skipped when absent) and a fixed seed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The real boxing data lives beside the checkout (../shared/data/BX); never copied into the repo.
BX_DIR = Path(os.environ.get("MOTION2TEXT_BX_DIR", REPO_ROOT.parent / "shared" / "data" / "BX"))


@pytest.fixture(scope="session")
def bx_dir() -> Path:
    if not (BX_DIR / "BX_train.pkl").is_file():
        pytest.skip(f"BX data not found at {BX_DIR}")
    return BX_DIR


@pytest.fixture(scope="session")
def bx_dir_or_none() -> Path | None:
    """The BX folder when its data are there, else None (for tests that fall back on synthetic data)."""
    return BX_DIR if (BX_DIR / "BX_train.pkl").is_file() else None


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A synthetic run of a few seconds (tests/test_caption.py's settings: reference branch,
    time_pool, a prompt; batches of 4 for 3 epochs, so that most test captions are not empty and
    they differ), trained once per session for the web page's tests."""
    import train_t5_stagcn as trainer
    from tests.test_caption import tiny

    results = tmp_path_factory.mktemp("tiny_runs")
    trainer.main(tiny(results, "tiny", "train.batch_size=4", "train.epochs=3"))
    return results / "tiny"


@pytest.fixture(scope="session")
def retrieval_run(tmp_path_factory) -> Path:
    """A synthetic run with retrieval: the 2 nearest training clips' texts in the encoder input and
    3 beam candidates and 2 sampled ones reranked (tests/test_retrieval.py and the web page's tests)."""
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    results = tmp_path_factory.mktemp("retrieval_runs")
    trainer.main(tiny(results, "ret", "train.lr=1e-2", "train.epochs=3", "eval.every=3", "model.retrieval.k=2",
                      "eval.rerank=3", "eval.rerank_samples=2", "eval.max_new_tokens=8"))
    return results / "ret"
