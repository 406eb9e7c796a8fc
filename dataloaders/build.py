"""The captioner's data for one run: the train and test datasets, the tokenizer and the collate
function, built from the ``data`` and ``model`` sections of a training config.

Synthetic data are generated into ``<run>/data/`` when absent. The tokenizer is, in this order:
the one ``model.tokenizer.name`` names, the run's own ``<run>/tokenizer/``, the one stored in the
checkpoint being finetuned from, or one trained here on the training texts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Data:
    train: MotionTextDataset
    test: MotionTextDataset
    tokenizer: Any
    collate: Collator
    test_groups: dict[str, str]  # video_name -> motion_type ("all" when absent), for the breakdown


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def data_files(cfg: Any, run_dir: Path, main: bool, barrier: Callable[[], None]) -> tuple[Path, Path, Path | None]:
    """Paths of the train / test / standard pickles; synthetic data are generated when absent."""
    d = cfg.data
    if d.kind == "synthetic":
        folder = run_dir / "data"
        if main and not (folder / "test.pkl").is_file():
            from dataloaders import synthetic
            log.info("generating synthetic data (%s, seed %d) into %s", d.synthetic.mode, d.synthetic.seed, folder)
            synthetic.write(folder, seed=d.synthetic.seed, mode=d.synthetic.mode,
                            train_per_kind=d.synthetic.train_per_kind, test_per_kind=d.synthetic.test_per_kind)
        barrier()
        return folder / "train.pkl", folder / "test.pkl", folder / "standard.pkl"
    root = repo_path(d.root)
    return root / d.train, root / d.test, (root / d.standard if d.standard else None)


def tokenizer_for_run(cfg: Any, run_dir: Path, texts: list[str], stored_files: dict | None,
                      main: bool, barrier: Callable[[], None]) -> Any:
    """The named tokenizer; else the run's own, written on first use from ``stored_files`` (a
    finetuning source's) or trained on ``texts``."""
    from models import text
    from models.build import tokenizer_files_of
    from training.checkpoint import atomic_write_text

    if cfg.model.tokenizer.name:
        return text.load_tokenizer(cfg.model.tokenizer.name)
    folder = run_dir / "tokenizer"
    if main and not (folder / "tokenizer.json").is_file():
        if stored_files:
            log.info("using the tokenizer stored in the checkpoint being finetuned from")
            files = stored_files
        else:
            log.info("training a tokenizer (vocab <= %d) on %d training texts",
                     cfg.model.tokenizer.vocab_size, len(texts))
            files = tokenizer_files_of(text.train_tokenizer(texts, cfg.model.tokenizer.vocab_size))
        for name, content in files.items():
            atomic_write_text(content, folder / name)
    barrier()
    return text.load_tokenizer(str(folder))


def build_data(cfg: Any, run_dir: Path, *, main: bool = True, barrier: Callable[[], None] = lambda: None,
               stored_tokenizer: dict | None = None) -> Data:
    train_file, test_file, standard_file = data_files(cfg, run_dir, main, barrier)
    reference = cfg.model.reference == "subtract"
    standards = None
    if reference or cfg.data.segment != "none":
        if standard_file is not None and not standard_file.is_file():
            raise FileNotFoundError(f"data.standard: {standard_file} does not exist")
        if standard_file is not None:
            standards = load_standards(standard_file)
    train_records = load_records(train_file, standards=standards, on_bad=cfg.data.on_bad)
    test_records = load_records(test_file, standards=standards, on_bad=cfg.data.on_bad)
    common = dict(standards=standards, segment=cfg.data.segment, normalise=cfg.data.normalise,
                  reference=reference and standards is not None, seed=cfg.seed,
                  min_frames=cfg.model.encoder.temporal_kernel, on_bad=cfg.data.on_bad)
    train = MotionTextDataset(train_records, labels=cfg.data.labels, source=str(train_file),
                              augmented_labels=cfg.data.augmented_labels, train=True, **common)
    test = MotionTextDataset(test_records, train=False, source=str(test_file), **common)
    texts = [t for r in train_records for t in r["labels"] + (r.get("augmented_labels") or [])]
    tokenizer = tokenizer_for_run(cfg, run_dir, texts, stored_tokenizer, main, barrier)
    log.info("data: %d train samples from %d clips (%s), %d test clips (%s)",
             len(train), len(train_records), train_file, len(test), test_file)
    groups = {r["video_name"]: r.get("motion_type") or "all" for r in test_records}
    return Data(train, test, tokenizer, Collator(tokenizer, max_target_len=cfg.data.max_target_len), groups)
