"""Paths as the project writes and prints them, naming no machine's folders.

:func:`portable` is what a result file or an export records (relative to a given folder or the
repository root, else the file's name alone); :func:`shown` is what a command or a table prints
(relative to the repository root, where commands run, when the path lies in or beside the
checkout; else as given).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def portable(path: str | os.PathLike, *bases: str | os.PathLike) -> str:
    """``path`` relative to the first of ``bases`` (then the repository root) that holds it, else
    its name alone."""
    path = Path(path).resolve()
    for base in (*bases, REPO_ROOT):
        try:
            return path.relative_to(Path(base).resolve()).as_posix() or "."
        except ValueError:
            continue
    return path.name


def shown(path: str | os.PathLike) -> str:
    """``path`` as a user types it from the repository root: an absolute path in or beside the
    checkout (``results/...``, ``../shared/data/BX``) becomes relative to the root; a relative
    one, or one elsewhere, is left as given."""
    given = Path(path)
    if given.is_absolute() and given.resolve().is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(given.resolve(), REPO_ROOT)
    return str(path)
