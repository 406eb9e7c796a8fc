"""Random state: seeding (the same weights on every rank, a different dropout stream on each) and
capturing / restoring the Python, NumPy, torch and CUDA generators in a checkpoint."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s own stream (dropout masks, sampling): distinct for every rank, and
    ``seed`` itself on rank 0, so a world of one draws what it always drew."""
    return seed + 1_000_003 * rank


def seed_rank_stream(seed: int, rank: int) -> None:
    """Reseed Python, NumPy and torch for this rank, once the model is built alike on every rank."""
    seed_everything(rank_seed(seed, rank))


def rng_state() -> dict:
    """Every global generator's state, as tensors and plain numbers (loads with weights_only)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(py[1]), "python_pos": py[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
