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
