"""Build the captioner from a config, and rebuild a trained one from its checkpoint.

Training (``train_t5_stagcn.py``), the caption command and the benchmarks share these, so a
model is assembled in exactly one place. A checkpoint written by training carries its config
(``"config"``), its tokenizer's files (``"tokenizer"``) and T5's architecture and LoRA settings
(``"t5"``, see :func:`models.lora.t5_record`), so :func:`load_trained` needs nothing but the
file (neither the hub nor a pretrained folder); it reads it with ``weights_only=True``, builds the
same LoRA wrapping as training did and loads the weights strictly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from configs import schema
from core.io import CheckpointError, load_checkpoint
from dataloaders.tokenizer import tokenizer_from_files
from .captioner import Captioner

__all__ = ["build_model", "load_trained", "model_from_payload", "checkpoint_of_run", "parameter_counts"]


def build_model(cfg: schema.Config, tokenizer: Any, t5: Any = None, t5_config: dict | None = None) -> Captioner:
    """STA-GCN encoder + projection + T5 as ``cfg.model`` describes them.

    T5 is ``model.t5.name`` (``from_pretrained``) or built from ``model.t5.config``; with
    ``t5_config`` (a stored ``config.json`` dict) it is built from that instead, with no download.
    Either way it gets fresh LoRA adapters when ``model.t5.lora.r > 0``. A ``t5`` passed in (an
    export's merged T5) is used as it is, never wrapped.
    """
    from . import lora, text
    from .graph import Graph
    from .projection import Projection
    from .stagcn import STAGCN

    enc = cfg.model.encoder
    graph = Graph(layout=enc.graph.layout, strategy=enc.graph.strategy, max_hop=enc.graph.max_hop,
                  dilation=enc.graph.dilation)
    encoder = STAGCN(in_channels=6, graph=graph, channels=tuple(enc.channels), strides=tuple(enc.strides),
                     temporal_kernel=enc.temporal_kernel, dropout=enc.dropout,
                     num_attention_graphs=enc.num_attention_graphs)
    if t5 is None:
        t5 = text.t5_from_config(t5_config) if t5_config else text.build_t5(tokenizer, cfg.model.t5.name,
                                                                             cfg.model.t5.config)
        t5 = lora.wrap(t5, lora.lora_settings(cfg.model.t5.lora))
    text.check_special_ids(t5, tokenizer)
    width = encoder.out_channels * (2 if cfg.model.reference == "subtract" else 1)
    projection = Projection(width, t5.config.d_model, policy=cfg.model.projection.policy,
                            num_joints=graph.num_nodes, dropout=cfg.model.projection.dropout)
    return Captioner(encoder, projection, t5, tokenizer, reference=cfg.model.reference,
                     prompt=cfg.model.prompt)


def checkpoint_of_run(run_dir: str | Path) -> Path:
    """``checkpoints/best.pt`` of a run folder, else its ``last.pt``; a clear error when neither."""
    folder = Path(run_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    raise FileNotFoundError(f"{run_dir}: no checkpoints/best.pt or checkpoints/last.pt (has it trained?)")


def load_trained(path: str | Path, map_location: Any = "cpu") -> tuple[Captioner, schema.Config]:
    """A trained captioner (in eval mode) and its config, from a training checkpoint."""
    return model_from_payload(load_checkpoint(path, map_location=map_location), path)


def model_from_payload(payload: dict, source: str | Path) -> tuple[Captioner, schema.Config]:
    """The captioner (in eval mode) a loaded checkpoint describes, LoRA wrapping included, with
    its weights loaded strictly (an adapter tensor is never dropped or left out)."""
    from . import lora

    missing = [k for k in ("model", "config", "tokenizer") if not payload.get(k)]
    if missing:
        raise CheckpointError(f"{source}: not a Motion2Text training checkpoint (no {', '.join(missing)})")
    try:
        cfg = schema.from_dict(payload["config"])
    except schema.ConfigError as exc:  # e.g. an option retired since the checkpoint was written
        raise CheckpointError(f"{source}: its config: {exc}") from None
    record = payload.get("t5") or {}
    settings = lora.lora_settings(cfg.model.t5.lora)
    if "lora" in record and record["lora"] != settings:
        raise CheckpointError(f"{source}: its T5 record says LoRA {record['lora']} but its config says "
                                   f"model.t5.lora {settings}; the checkpoint is inconsistent")
    if lora.has_adapters(payload["model"]) != (settings is not None):
        raise CheckpointError(
            f"{source}: the weights {'hold' if settings is None else 'lack'} LoRA adapter tensors but the config "
            f"has model.t5.lora.r={cfg.model.t5.lora.r}; refusing to load adapters partially")
    tokenizer = tokenizer_from_files(payload["tokenizer"])
    model = build_model(cfg, tokenizer, t5_config=record.get("config"))
    model.load_state_dict(payload["model"])
    if payload.get("retrieval"):
        from dataloaders.retrieval import Retriever

        model.retriever = Retriever.from_state(payload["retrieval"])
    return model.eval(), cfg


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters, tied ones counted once."""
    params = list(module.parameters())  # deduplicated by identity
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
