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

from dataloaders import body_frame
from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards
from dataloaders.splits import split_off

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Data:
    train: MotionTextDataset
    val: MotionTextDataset | None  # chooses best.pt; None when the config asks for no validation
    test: MotionTextDataset  # scored on the chosen checkpoint; never used for a choice
    tokenizer: Any
    collate: Collator
    groups: dict[str, str]  # video_name -> motion_type ("all" when absent), for the breakdown
    train_texts: list[str]  # every training target, for the novelty of generated captions
    retriever: Any = None  # dataloaders.retrieval.Retriever over the training clips, when used


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def data_files(cfg: Any, run_dir: Path, main: bool, barrier: Callable[[], None]
               ) -> tuple[Path, Path | None, Path, Path | None]:
    """Paths of the train / validation / test / standard pickles (validation None: carved from
    the training clips, or none); synthetic data are generated when absent."""
    d = cfg.data
    if d.kind == "synthetic":
        folder = run_dir / "data"
        if main and not (folder / "test.pkl").is_file():
            from dataloaders import synthetic
            log.info("generating synthetic data (%s, seed %d) into %s", d.synthetic.mode, d.synthetic.seed, folder)
            synthetic.write(folder, seed=d.synthetic.seed, mode=d.synthetic.mode,
                            train_per_kind=d.synthetic.train_per_kind, test_per_kind=d.synthetic.test_per_kind)
        barrier()
        return folder / "train.pkl", None, folder / "test.pkl", folder / "standard.pkl"
    root = repo_path(d.root)
    return root / d.train, (root / d.val if d.val else None), root / d.test, (root / d.standard if d.standard else None)


def texts_of(records: list[dict]) -> list[str]:
    """Every label and paraphrase of ``records``: what a tokenizer trained for them learns."""
    return [t for r in records for t in r["labels"] + (r.get("augmented_labels") or [])]


def extra_tokenizer_texts(paths: list[str]) -> list[str]:
    """The labels (and paraphrases) of ``model.tokenizer.also_train_on``'s dataset pickles."""
    texts: list[str] = []
    for name in paths:
        path = repo_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"model.tokenizer.also_train_on: {path} is not a file (expected a "
                                    "dataset pickle whose texts the tokenizer also learns)")
        more = texts_of(load_records(path))
        log.info("tokenizer: %d more texts from %s (model.tokenizer.also_train_on)", len(more), path)
        texts += more
    return texts


def tokenizer_for_run(cfg: Any, run_dir: Path, texts: list[str], stored_files: dict | None,
                      main: bool, barrier: Callable[[], None]) -> Any:
    """The named tokenizer; else the run's own, written on first use from ``stored_files`` (a
    finetuning source's) or trained on ``texts``."""
    from core.io import atomic_write_text
    from dataloaders import tokenizer as tok

    if cfg.model.tokenizer.name:
        return tok.load_tokenizer(cfg.model.tokenizer.name)
    folder = run_dir / "tokenizer"
    if main and not (folder / "tokenizer.json").is_file():
        if stored_files:
            log.info("using the tokenizer stored in the checkpoint being finetuned from")
            files = stored_files
        else:
            texts = texts + extra_tokenizer_texts(cfg.model.tokenizer.also_train_on)
            log.info("training a tokenizer (vocab <= %d) on %d training texts",
                     cfg.model.tokenizer.vocab_size, len(texts))
            files = tok.tokenizer_files_of(tok.train_tokenizer(texts, cfg.model.tokenizer.vocab_size))
        for name, content in files.items():
            atomic_write_text(content, folder / name)
    barrier()
    return tok.load_tokenizer(str(folder))


def build_data(cfg: Any, run_dir: Path, *, main: bool = True, barrier: Callable[[], None] = lambda: None,
               stored_tokenizer: dict | None = None) -> Data:
    train_file, val_file, test_file, standard_file = data_files(cfg, run_dir, main, barrier)
    reference = cfg.model.reference == "subtract"
    standards = None
    if reference or cfg.data.segment != "none":
        if standard_file is not None and not standard_file.is_file():
            raise FileNotFoundError(f"data.standard: {standard_file} does not exist")
        if standard_file is not None:
            standards = load_standards(standard_file)
    train_records = read_records(cfg.data, train_file, standards)
    test_records = read_records(cfg.data, test_file, standards)
    train_records, val_records, val_source = validation_records(cfg.data, train_records, train_file, val_file,
                                                                standards)
    standards = body_frame.convert_standards(standards, cfg.data.frame, str(standard_file))
    common = dict(standards=standards, segment=cfg.data.segment, normalise=cfg.data.normalise,
                  reference=reference and standards is not None, seed=cfg.seed,
                  min_frames=cfg.model.encoder.temporal_kernel, on_bad=cfg.data.on_bad)
    train = MotionTextDataset(train_records, labels=cfg.data.labels, source=str(train_file),
                              augmented_labels=cfg.data.augmented_labels, train=True, mirror=cfg.data.mirror,
                              rotate=cfg.data.rotate, speed=cfg.data.speed, **common)
    val = MotionTextDataset(val_records, train=False, source=val_source, **common) if val_records else None
    test = MotionTextDataset(test_records, train=False, source=str(test_file), **common)
    texts = texts_of(train_records)
    tokenizer = tokenizer_for_run(cfg, run_dir, texts, stored_tokenizer, main, barrier)
    log.info("data: %d train samples from %d clips (%s), %d validation clips (%s), %d test clips (%s)",
             len(train), len(train_records), train_file, len(val) if val else 0, val_source or "none",
             len(test), test_file)
    groups = {r["video_name"]: r.get("motion_type") or "all" for r in [*val_records, *test_records]}
    retriever = attach_retrieval(cfg, train_records, [(train, train_records), (val, val_records),
                                                      (test, test_records)])
    r = cfg.model.retrieval
    collate = Collator(tokenizer, max_target_len=cfg.data.max_target_len,
                       retrieved_texts=r.texts if r.k else 0, retrieved_max_tokens=r.max_tokens)
    return Data(train, val, test, tokenizer, collate, groups, texts, retriever)


def attach_retrieval(cfg: Any, train_records: list, datasets: list[tuple[Any, list]]) -> Any:
    """The retriever over the training clips (None when neither ``model.retrieval.k`` nor
    ``eval.rerank`` asks for one), with each dataset's retrieved texts and reranking pools set."""
    r, rerank_k = cfg.model.retrieval, cfg.eval.rerank_k if cfg.eval.rerank else 0
    if not (r.k or rerank_k):
        return None
    from dataloaders.retrieval import Retriever

    retriever = Retriever.from_records(train_records)
    for dataset, records in datasets:
        if dataset is None:
            continue
        for name, texts in retrieval_fields(cfg, retriever, records).items():
            dataset.set_retrieved(texts, name)
    log.info("retrieval over %d training clips: %d neighbours' texts as input (%d kept), rerank pool of %d "
             "neighbours; a clip never retrieves %s", len(train_records), r.k, r.texts if r.k else 0,
             rerank_k, "its own learner" if r.exclude == "learner" else "itself")
    return retriever


def retrieval_fields(cfg: Any, retriever: Any, records: list) -> dict[str, dict[str, list]]:
    """``{field: {video_name: texts}}`` of the records for :meth:`MotionTextDataset.set_retrieved`:
    ``retrieved`` (the encoder-side input, with ``model.retrieval.k``), ``pool`` (with ``eval.rerank``)
    and ``familiar`` (one flag a clip, with ``eval.rerank_candidates: gated``)."""
    r, names = cfg.model.retrieval, [str(rec["video_name"]) for rec in records]
    fields = {}
    if r.k:
        fields["retrieved"] = dict(zip(names, retriever.texts(records, r.k, r.exclude)))
    if cfg.eval.rerank:
        fields["pool"] = dict(zip(names, retriever.texts(records, cfg.eval.rerank_k, r.exclude)))
        if cfg.eval.rerank_candidates == "gated":
            scale = cfg.eval.rerank_gate
            fields["familiar"] = dict(zip(names, retriever.familiar(records, r.exclude, scale)))
            log.info("gated decoding: %d of %d clips familiar (nearest training clip within %.3f), captioned "
                     "from their retrieved texts", sum(fields["familiar"].values()), len(names),
                     scale * retriever.familiar_threshold())
    return fields


def read_records(d: Any, path: Path, standards: Any) -> list:
    """The validated records of a dataset pickle in the body frame ``data.frame`` asks for."""
    return body_frame.convert_records(load_records(path, standards=standards, on_bad=d.on_bad), d.frame, str(path))


def validation_records(d: Any, train_records: list, train_file: Path, val_file: Path | None,
                       standards: Any) -> tuple[list, list, str]:
    """``(training records, validation records, where the validation came from)``: the records
    of ``data.val`` when set, else ``data.val_split.fraction`` of the training clips (whole
    learners at a time with ``group_by: learner``), else none."""
    if val_file is not None:
        return train_records, read_records(d, val_file, standards), str(val_file)
    split = d.val_split
    if split.fraction <= 0:
        return train_records, [], ""
    rest, held = split_off(train_records, split.fraction, split.group_by, split.seed)
    return rest, held, (f"{split.fraction:g} of {train_file} by {split.group_by}, seed {split.seed}")
