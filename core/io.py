"""The ground floor's file handling: atomic writes and the safe checkpoint reader.

Every checkpoint is a plain ``dict`` of tensors, numbers, strings and containers, saved with
``torch.save`` and loaded with ``torch.load(..., weights_only=True)`` so that a file carrying a
pickled payload that would run code is refused. Writes go to a temporary file in the same folder
that is flushed, fsynced and renamed over the target, so a crash or a full disk leaves either the
old file or the new one, never a truncated one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch

TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and the cause."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, and rename it over ``path``.

    A crash or an error leaves either the old file or the new one, never a partial file; the
    temporary file is removed on error. The file gets the usual ``0o666 & ~umask`` mode (a bare
    ``mkstemp`` file would be readable by its owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """Save ``obj`` with ``torch.save`` to ``path`` atomically; a failed write names the file."""
    try:
        return atomic_write(path, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc}; the previous file (if any) is unchanged"
        ) from exc


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a small text file atomically (used for configs and predictions)."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed run left behind in ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.rglob(TMP_PREFIX + "*") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; any failure becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or hostile files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds objects that are not plain tensors/containers (refused, nothing was run)"
        else:
            reason = f"it is damaged or not a checkpoint ({type(exc).__name__}: {first[:200]})"
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"cannot load checkpoint {path}: expected a dict, found {type(obj).__name__}"
        )
    return obj
