"""``train.freeze``: parts of the captioner whose parameters get no gradient, and the parameter counts.

Parts (any of them, in any order):

* ``encoder``: the STA-GCN skeleton encoder;
* ``projection``: the projection of skeleton features into T5 tokens;
* ``t5_encoder``: T5's encoder stack (blocks, relative position bias, final norm), its LoRA
  adapters included, without the token embeddings;
* ``t5_decoder``: T5's decoder stack, likewise;
* ``embeddings``: T5's token embedding table (shared by its encoder and decoder, and used by the
  prompt) and its output layer ``lm_head`` (transformers 5 ties the two in every T5; an untied
  ``lm_head`` would be frozen with them).

Freezing sets ``requires_grad = False``; the optimizer is built afterwards from what still
requires a gradient, so frozen parameters get neither updates nor optimizer state. BatchNorm layers
of a frozen encoder still update their running statistics in training mode (their weights do not
change); their statistics are saved with every checkpoint like all buffers.
"""
from __future__ import annotations

import logging
from typing import Iterable

from torch import nn

from configs.schema import FREEZE_PARTS
from models import lora
from models.build import parameter_counts

log = logging.getLogger(__name__)



def _embedding_params(t5: nn.Module) -> list[nn.Parameter]:
    found = list(t5.get_input_embeddings().parameters())
    output = t5.get_output_embeddings()
    if output is not None:
        found += [p for p in output.parameters() if all(p is not q for q in found)]
    return found


def part_parameters(model: nn.Module, part: str) -> list[nn.Parameter]:
    """The parameters of one part of ``model`` (a Captioner), each once."""
    if part not in FREEZE_PARTS:
        raise ValueError(f"train.freeze: expected parts among {', '.join(FREEZE_PARTS)}, found {part!r}")
    if part in ("encoder", "projection"):
        return list(getattr(model, part).parameters())
    t5 = lora.base_t5(model.t5)
    embeddings = _embedding_params(t5)
    if part == "embeddings":
        return embeddings
    stack = t5.encoder if part == "t5_encoder" else t5.decoder
    return [p for p in stack.parameters() if all(p is not e for e in embeddings)]


def apply_freeze(model: nn.Module, parts: Iterable[str]) -> None:
    """Stop the gradient of every parameter of the named parts; fail when nothing is left to train."""
    parts = list(parts)
    for part in parts:
        for p in part_parameters(model, part):
            p.requires_grad_(False)
    if parts and not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"train.freeze={parts} leaves no parameter to train"
                         + (" (LoRA already freezes T5's own weights)" if lora.is_wrapped(model.t5) else ""))


def describe(model: nn.Module, parts: Iterable[str] = ()) -> str:
    """One line for the log: trainable and total parameters, overall and per part."""
    trainable, total = parameter_counts(model)
    pieces = []
    parts_of = [("encoder", model.encoder), ("projection", model.projection), ("T5", model.t5)]
    for name, module in parts_of:
        t, n = parameter_counts(module)
        pieces.append(f"{name} {t:,}/{n:,}")
    settings = lora.t5_record(model)["lora"] if lora.is_wrapped(model.t5) else None
    how = (f"LoRA r={settings['r']} alpha={settings['alpha']:g} on {','.join(settings['target_modules'])}"
           if settings else "no LoRA")
    frozen = ", ".join(parts) or "nothing"
    return (f"parameters: {trainable:,} trainable of {total:,} ({100.0 * trainable / max(total, 1):.2f}%); "
            f"{'; '.join(pieces)} (trainable/total); {how}; frozen: {frozen}")
