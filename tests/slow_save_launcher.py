"""Run ``train_t5_stagcn.py`` with checkpoint writes slowed down (for the SIGKILL test).

    python tests/slow_save_launcher.py --cfg_file ... key=value ...

``torch.save`` to an open file is replaced by one that serialises to memory and then writes the
bytes in 20 chunks, 10 ms apart, so a kill has a wide window in which a checkpoint is half
written. Nothing else changes: the bytes written are the same.
"""
from __future__ import annotations

import io
import runpy
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
_save = torch.save


def slow_save(obj, f, *args, **kwargs):
    if not hasattr(f, "write"):
        return _save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    _save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    chunk = max(len(data) // 20, 1)
    for i in range(0, len(data), chunk):
        f.write(data[i:i + chunk])
        f.flush()
        time.sleep(0.01)
    return None


if __name__ == "__main__":
    torch.save = slow_save
    sys.path.insert(0, str(REPO))
    sys.argv = [str(REPO / "train_t5_stagcn.py"), *sys.argv[1:]]
    runpy.run_path(str(REPO / "train_t5_stagcn.py"), run_name="__main__")
