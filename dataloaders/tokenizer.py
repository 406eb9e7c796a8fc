"""The captioner's tokenizer: a T5 tokenizer by hub name or local folder, or one trained offline on
the training texts (SentencePiece Unigram in T5's fast-tokenizer pipeline), and its files as text
(checkpoints store them, so a finetuning run can reuse its source's vocabulary).
"""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any, Iterable

from core.hub import from_pretrained


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000, extra_ids: int = 0) -> Any:
    """Train a SentencePiece-Unigram T5 tokenizer on ``texts`` (offline, about a second).

    The pieces and their scores come from ``sentencepiece``'s trainer on one thread, which gives
    the same vocabulary, in the same order, on every run (the ``tokenizers`` Unigram trainer does
    not: its scores move in the third decimal between runs and the piece order, hence every token
    id, follows them). They are placed in T5's fast-tokenizer pipeline (whitespace split, ``▁``
    word prefix, ids 0/1/2 = pad / eos / unk). ``vocab_size`` is an upper bound: the trainer stops
    earlier on a small corpus. ``extra_ids`` are T5's sentinel tokens, unused for captioning.
    """
    from transformers import T5TokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("cannot train a tokenizer: no training texts")
    spec = json.loads(T5TokenizerFast(extra_ids=0).backend_tokenizer.to_str())
    spec["model"]["vocab"] = [[piece, score] for piece, score in unigram_pieces(texts, vocab_size)]
    from tokenizers import Tokenizer
    return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), extra_ids=extra_ids)


def unigram_pieces(texts: list[str], vocab_size: int) -> list[tuple[str, float]]:
    """``[(piece, log-probability)]`` of a Unigram model trained deterministically on ``texts``;
    the first three are ``<pad>``, ``</s>``, ``<unk>``."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="unigram",
        vocab_size=vocab_size, hard_vocab_limit=False, num_threads=1,
        normalization_rule_name="identity", character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return [(sp.id_to_piece(i), 0.0 if sp.is_control(i) or sp.is_unknown(i) else sp.get_score(i))
            for i in range(sp.get_piece_size())]


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, name_or_path, "tokenizer")


def tokenizer_files_of(tok: Any) -> dict[str, str]:
    """The tokenizer's saved files as text (stored in checkpoints so finetuning can reuse them)."""
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.suffix == ".json"}


def tokenizer_from_files(files: dict[str, str]) -> Any:
    """The tokenizer saved by :func:`tokenizer_files_of`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / Path(name).name).write_text(content, encoding="utf-8")
        return load_tokenizer(tmp)
