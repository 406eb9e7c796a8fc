"""T5: from the hub or a local folder, or built from a ``T5Config`` for training from scratch.

* ``name`` set (``t5-base``, ``t5-small``, ``google/flan-t5-base`` or a local folder): loaded with
  ``from_pretrained``. Offline, a hub name that is not in the local cache fails with an error that
  says so and names the offline alternative (:mod:`core.hub`).
* ``name`` empty: T5 is built from a ``T5Config`` given in the YAML.

Either way pad / eos / decoder-start ids are taken from the tokenizer
(:mod:`dataloaders.tokenizer`) so the two agree.
"""
from __future__ import annotations

import logging
from typing import Any

from core.hub import from_pretrained

log = logging.getLogger(__name__)

# A small T5 that trains in minutes on a CPU; every key can be overridden from the config.
TINY_T5 = dict(d_model=128, d_ff=256, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=4,
               dropout_rate=0.1, feed_forward_proj="relu")


def build_t5(tokenizer: Any, name: str = "", config: dict | None = None) -> Any:
    """A ``T5ForConditionalGeneration``: pretrained when ``name`` is set, else from ``config``."""
    from transformers import T5Config, T5ForConditionalGeneration

    if name:
        model = from_pretrained(T5ForConditionalGeneration, name, "T5")
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
