"""One run, one folder: ``results/<experiment>/`` with config.yaml, train.log, tb/, checkpoints/,
metrics.jsonl. Creating it (and refusing a folder that belongs to another config), logging into
it, the metrics log, the checkpoint files and stopping on a signal are the same for every trainer.
"""
from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from core.io import atomic_save, atomic_write_text, remove_temporaries
from core.run_folder import COMMANDS_FILE
from training import checkpoint as ckpt

log = logging.getLogger(__name__)


def resolve_run_dir(results_root: Path, cfg_path: Path, experiment: str) -> Path:
    """``<results>/<exp>/config.yaml`` runs in its own folder; other configs in
    ``<results>/<experiment or config stem>/``."""
    results_root = Path(results_root).resolve()
    if cfg_path.name == "config.yaml" and cfg_path.resolve().parent.parent == results_root:
        return cfg_path.resolve().parent
    return results_root / (experiment or cfg_path.stem)


def config_differences(old: dict, new: dict, ignore: Iterable[str] = (), prefix: str = "",
                       defaults: dict | None = None, retired: Mapping[str, Any] | None = None) -> list[str]:
    """``"key: old -> new"`` for each dotted key that differs; ``ignore`` holds keys that may change
    between a run and its resumption (an entry ending in "." ignores a whole section). A key that
    ``old`` lacks counts as its value in ``defaults`` (a key added to the config since the run began);
    a key that ``new`` lacks and ``retired`` holds (dotted key -> its old default; a key removed from
    the config since) differs only when ``old`` has it at another value."""
    ignore = tuple(ignore)
    defaults = defaults or {}
    retired = retired or {}
    out = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k, defaults.get(k)), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = defaults.get(k) if isinstance(defaults.get(k), dict) else None
            out += config_differences(a, b, ignore, key + ".", sub, retired)
        elif key in retired and k not in new:
            if a != retired[key]:
                out.append(f"{key}: {a!r} -> retired")
        elif a != b and not any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore):
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def prepare_run_dir(run_dir: Path, cfg_path: Path, resolved: dict, *, resumable: Iterable[str] = (),
                    allow_change: bool = False, subfolders: Iterable[str] = ("checkpoints", "tb"),
                    defaults: dict | None = None, retired: Mapping[str, Any] | None = None) -> None:
    """Create the folder, refuse one that belongs to another config, save the resolved config.

    Call on the main process only. ``resolved`` is the config as a dict; ``resumable`` lists keys
    that may differ between a run and its resumption; ``defaults`` (the config's defaults as a
    dict) stand in for keys a saved config predates; ``retired`` (dotted key -> old default) are
    keys removed since, which a saved config may still hold at that default.
    """
    saved = run_dir / "config.yaml"
    is_source = saved.resolve() == cfg_path.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_temporaries(run_dir)
    if saved.is_file() and not is_source and not allow_change:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        diff = config_differences(old, resolved, resumable, defaults=defaults, retired=retired)
        if diff:
            raise SystemExit(
                f"error: {run_dir} belongs to a different config ({saved}); differing keys: "
                + "; ".join(diff[:10]) + ". Use another `experiment` name, or pass "
                "--allow_config_change to run there anyway.")
    if not is_source:
        atomic_write_text(yaml.safe_dump(resolved, sort_keys=False), saved)
    for sub in subfolders:
        (run_dir / sub).mkdir(exist_ok=True)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted run", file=sys.stderr)


def record_command(run_dir: Path, args: Iterable[str], script: str, world: int = 1) -> None:
    """Append this invocation's command line to ``<run>/commands.txt`` (main process only)."""
    launcher = f"torchrun (world {world}) " if world > 1 else "python "
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {launcher}{script} {shlex.join(list(args))}\n"
    with open(run_dir / COMMANDS_FILE, "a", encoding="utf-8") as f:
        f.write(line)


_HANDLER_TAG = "_motion2text"


def setup_logging(run_dir: Path | None, rank: int = 0, main: bool = True) -> None:
    """Console (stderr) and ``train.log`` on the main process; warnings only on the others."""
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO if main else logging.WARNING)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if main and run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "train.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    for noisy in ("transformers", "torch", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tensorboard_writer(run_dir: Path, main: bool = True):
    """A SummaryWriter on ``<run>/tb`` for the main process, None on the others."""
    if not main:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(run_dir / "tb"))


# ============================================================================ metrics.jsonl ===
def append_metrics(run_dir: Path, entry: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def trim_metrics(path: Path, last_epoch: int) -> None:
    """Keep the ``metrics.jsonl`` lines of epochs <= ``last_epoch`` (the resumed checkpoint's; -1
    on a fresh start). A run killed after an evaluation but before that epoch's checkpoint
    evaluates the epoch again on resume; without this its line would appear twice (or half-written).
    """
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and entry["epoch"] <= last_epoch:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        log.info("metrics.jsonl: dropped %d line(s) written after the checkpoint being resumed", dropped)
        atomic_write_text("".join(k + "\n" for k in kept), path)


# ============================================================================ checkpoints =====
def save_checkpoint(folder: Path, payload: dict, epoch: int, keep_epoch_checkpoints: int,
                    epoch_file: bool) -> None:
    """Write ``last.pt`` and, at an epoch's end, ``epoch_NNNN.pt``; keep the newest
    ``keep_epoch_checkpoints`` epoch files (at least one)."""
    if epoch_file:
        atomic_save(payload, folder / f"epoch_{epoch:04d}.pt")
    atomic_save(payload, folder / "last.pt")
    if epoch_file:
        epochs = sorted(folder.glob("epoch_*.pt"), key=lambda p: ckpt.natural_key(p.name))
        for old in epochs[:-max(keep_epoch_checkpoints, 1)]:
            old.unlink(missing_ok=True)


def find_resume_checkpoint(folder: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``folder`` that loads (``last.pt`` first), or None on a fresh run."""
    return ckpt.load_first_good(ckpt.resume_candidates(folder))


# ============================================================================ signals =========
class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary and exits 0.
    A second Ctrl-C stops at once. Use as a context manager: the previous handlers come back."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %d received: saving a checkpoint at the next step boundary", signum)
