"""Build the captioner from a config, and rebuild a trained one from its checkpoint.

Training (``train_t5_stagcn.py``), the caption command and the benchmarks share these, so a
model is assembled in exactly one place. A checkpoint written by training carries its config
(``"config"``) and its tokenizer's files (``"tokenizer"``), so :func:`load_trained` needs
nothing but the file; it reads it with ``weights_only=True``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from configs import schema

from training import checkpoint as ckpt
from .captioner import Captioner

__all__ = ["build_model", "tokenizer_files_of", "tokenizer_from_files", "load_trained", "checkpoint_of_run"]


def build_model(cfg: schema.Config, tokenizer: Any) -> Captioner:
    """STA-GCN encoder + projection + T5 as ``cfg.model`` describes them."""
    from . import text
    from .graph import Graph
    from .projection import Projection
    from .stagcn import STAGCN

    enc = cfg.model.encoder
    graph = Graph(layout=enc.graph.layout, strategy=enc.graph.strategy, max_hop=enc.graph.max_hop,
                  dilation=enc.graph.dilation)
    encoder = STAGCN(in_channels=6, graph=graph, channels=tuple(enc.channels), strides=tuple(enc.strides),
                     temporal_kernel=enc.temporal_kernel, dropout=enc.dropout,
                     num_attention_graphs=enc.num_attention_graphs)
    t5 = text.build_t5(tokenizer, cfg.model.t5.name, cfg.model.t5.config)
    text.check_special_ids(t5, tokenizer)
    width = encoder.out_channels * (2 if cfg.model.reference == "subtract" else 1)
    projection = Projection(width, t5.config.d_model, policy=cfg.model.projection.policy,
                            num_joints=graph.num_nodes, dropout=cfg.model.projection.dropout)
    return Captioner(encoder, projection, t5, tokenizer, reference=cfg.model.reference,
                     prompt=cfg.model.prompt)


def tokenizer_files_of(tok: Any) -> dict[str, str]:
    """The tokenizer's saved files as text (stored in checkpoints so finetuning can reuse them)."""
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.suffix == ".json"}


def tokenizer_from_files(files: dict[str, str]) -> Any:
    """The tokenizer saved by :func:`tokenizer_files_of`."""
    from . import text

    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / Path(name).name).write_text(content, encoding="utf-8")
        return text.load_tokenizer(tmp)


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
    payload = ckpt.load_checkpoint(path, map_location=map_location)
    missing = [k for k in ("model", "config", "tokenizer") if not payload.get(k)]
    if missing:
        raise ckpt.CheckpointError(f"{path}: not a Motion2Text training checkpoint (no {', '.join(missing)})")
    cfg = schema.from_dict(payload["config"])
    tokenizer = tokenizer_from_files(payload["tokenizer"])
    model = build_model(cfg, tokenizer)
    model.load_state_dict(payload["model"])
    if payload.get("retrieval"):
        from dataloaders.retrieval import Retriever

        model.retriever = Retriever.from_state(payload["retrieval"])
    return model.eval(), cfg
