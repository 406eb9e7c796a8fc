"""T5 and its tokenizer: from the hub or a local folder, or built offline for training from scratch.

Two ways to get each piece:

* ``name`` set (``t5-base``, ``t5-small``, ``google/flan-t5-base`` or a local folder): loaded with
  ``from_pretrained``. Offline, a hub name that is not in the local cache fails with an error that
  says so and names the offline alternative.
* ``name`` empty: the tokenizer is trained on the training texts (SentencePiece Unigram through
  ``tokenizers``, wrapped as a ``T5Tokenizer``) and saved into the run folder; the T5 is built from
  a ``T5Config`` given in the YAML.

Either way pad / eos / decoder-start ids are taken from the tokenizer so the two agree.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

# A small T5 that trains in minutes on a CPU; every key can be overridden from the config.
TINY_T5 = dict(d_model=128, d_ff=256, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=4,
               dropout_rate=0.1, feed_forward_proj="relu")

OFFLINE_HINT = ("No model can be downloaded here. Either put the files in a local folder and give "
                "its path, or train from scratch: leave `model.t5.name` and `model.tokenizer.name` "
                "empty so the tokenizer is trained on the training texts and T5 is built from "
                "`model.t5.config`.")


class ModelSourceError(RuntimeError):
    """A hub name or folder could not be loaded (typically: offline and not cached)."""


def _from_pretrained(cls: Any, name: str, what: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(name).exists() else "hub name"
        raise ModelSourceError(
            f"could not load {what} from {where} {name!r}: {str(exc).splitlines()[0][:300]}. "
            f"{OFFLINE_HINT}") from None


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

    return _from_pretrained(AutoTokenizer, name_or_path, "tokenizer")


def build_t5(tokenizer: Any, name: str = "", config: dict | None = None) -> Any:
    """A ``T5ForConditionalGeneration``: pretrained when ``name`` is set, else from ``config``."""
    from transformers import T5Config, T5ForConditionalGeneration

    if name:
        model = _from_pretrained(T5ForConditionalGeneration, name, "T5")
        if model.config.vocab_size < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        return model
    settings = {**TINY_T5, **(config or {})}
    settings.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return T5ForConditionalGeneration(T5Config(**settings))


def t5_from_config(config: dict) -> Any:
    """A ``T5ForConditionalGeneration`` of the architecture in ``config`` (a ``config.json`` dict,
    as checkpoints store it), with fresh weights to be overwritten by a state dict."""
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config.from_dict(dict(config)))


def check_special_ids(t5: Any, tokenizer: Any) -> None:
    """Fail early when T5 and the tokenizer disagree on pad / eos ids or the vocabulary size."""
    cfg = t5.config
    problems = []
    if cfg.pad_token_id != tokenizer.pad_token_id:
        problems.append(f"pad id: T5 {cfg.pad_token_id} vs tokenizer {tokenizer.pad_token_id}")
    if cfg.eos_token_id != tokenizer.eos_token_id:
        problems.append(f"eos id: T5 {cfg.eos_token_id} vs tokenizer {tokenizer.eos_token_id}")
    if t5.get_input_embeddings().num_embeddings < len(tokenizer):
        problems.append(f"vocabulary: T5 has {t5.get_input_embeddings().num_embeddings} rows, "
                        f"tokenizer {len(tokenizer)} tokens")
    if problems:
        raise ValueError("T5 and tokenizer do not match: " + "; ".join(problems))
