"""Export a trained run as one self-contained folder, and load it back without pickle.

    python -m models.export --run results/boxing --out exports/boxing [--ckpt best|last|epoch_NNNN|FILE]

The folder holds::

    export.json            what the folder is (format, version), where it came from, the LoRA settings
    config.yaml            the run's resolved config
    t5/                    T5 with any LoRA adapters merged into its weights (save_pretrained, safetensors)
    tokenizer/             the tokenizer (save_pretrained: JSON files)
    skeleton.safetensors   the STA-GCN encoder's and the projection's weights and buffers
    README.md              a model card: data, metrics from metrics.jsonl, the training command
    retrieval.json         (retrieval runs) the training clips' motion statistics and texts

Everything is JSON, YAML or safetensors: loading runs no unpickler (T5 is read with
``use_safetensors=True``, so a ``pytorch_model.bin`` placed in ``t5/`` is never opened). The
adapters are merged once, on a copy, when exporting, and the export check compares the merged
T5's logits with the unmerged model's on a random batch (recorded in ``export.json``). Loading
never wraps the merged T5 again. ``caption.py --run DIR`` and ``train.init_from: DIR`` accept it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from core.io import CheckpointError
from core.paths import portable

__all__ = ["MANIFEST", "SKELETON", "ExportError", "is_export", "read_manifest", "export_run", "write_export",
           "load_export", "merge_check", "MERGE_TOLERANCE"]

log = logging.getLogger(__name__)

FORMAT = "motion2text-export"
VERSION = 1
MANIFEST = "export.json"
RETRIEVAL = "retrieval.json"  # a retrieval model's training clips (features, labels), dataloaders.retrieval
SKELETON = "skeleton.safetensors"
CONFIG = "config.yaml"
CARD = "README.md"
# merged vs unmerged logits: max |difference| <= MERGE_TOLERANCE * max(1, max |logit|) (float32)
MERGE_TOLERANCE = 1e-4
# an absolute path inside a text: "/" at the start or after a space, quote, bracket, "=" or ":"
_ABSOLUTE = re.compile(r"(?<![^\s`'\"(\[=:,])/[^\s`'\"(),\]]+")


class ExportError(CheckpointError):
    """An export folder could not be written or read; the message names the folder and the cause."""


def is_export(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict:
    """``export.json`` of an export folder, checked for format and version."""
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable export folder ({MANIFEST}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: {MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ExportError(f"{path}: export version {manifest.get('version')!r}; this code reads version {VERSION}")
    return manifest


# ============================================================================ writing ========
def merge_check(model: Any, t5: Any, seed: int = 0) -> float:
    """Max |logit difference| between ``model.t5`` and ``t5`` on a random batch (2 x 8 input
    embeddings, 6 decoder tokens), both in eval mode; the random state is left as it was."""
    d_model = t5.config.d_model
    was = model.t5.training
    model.t5.eval()
    t5.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        embeds = torch.randn(2, 8, d_model, generator=gen)
        decoder = torch.randint(0, t5.config.vocab_size, (2, 6), generator=gen)
        device = next(model.t5.parameters()).device
        a = model.t5(inputs_embeds=embeds.to(device), decoder_input_ids=decoder.to(device)).logits.float().cpu()
        b = t5(inputs_embeds=embeds.to(device), decoder_input_ids=decoder.to(device)).logits.float().cpu()
    model.t5.train(was)
    diff = (a - b).abs().max().item()
    if diff > MERGE_TOLERANCE * max(1.0, a.abs().max().item()):
        raise ExportError(f"merging the LoRA adapters changed T5's logits by {diff:.3g} (tolerance "
                          f"{MERGE_TOLERANCE:g} x max |logit|); nothing was written")
    return diff


def write_export(model: Any, cfg: Any, out: str | os.PathLike, *, source: dict, card: str,
                 overwrite: bool = False) -> Path:
    """Write the export folder of ``model`` (a Captioner, LoRA-wrapped or plain) to ``out``.

    The folder is assembled beside ``out`` and renamed into place, so ``out`` is either absent
    or complete. An existing ``out`` is replaced only with ``overwrite`` and only if it is an
    export folder itself.
    """
    from safetensors.torch import save_file

    from configs import schema
    from models import lora

    out = Path(out)
    if out.exists() and not (overwrite and is_export(out)):
        why = "pass --overwrite to replace it" if is_export(out) else "it is not an export folder; choose another --out"
        raise ExportError(f"{out} already exists; {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}.", dir=out.parent))
    try:
        t5 = lora.merged_t5(model.t5).to("cpu")  # a copy: the loaded model keeps its adapters
        settings = lora.t5_record(model)["lora"]
        difference = merge_check(model, t5.to(next(model.t5.parameters()).device)) if settings else 0.0
        with _quiet_progress():
            t5.to("cpu").save_pretrained(tmp / "t5", safe_serialization=True)
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        skeleton = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
                    if not k.startswith("t5.")}
        save_file(skeleton, str(tmp / SKELETON), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(schema.to_yaml(cfg), encoding="utf-8")
        files = {"config": CONFIG, "t5": "t5/", "tokenizer": "tokenizer/", "skeleton": SKELETON, "card": CARD}
        if getattr(model, "retriever", None) is not None:  # the training clips' texts it retrieves from
            (tmp / RETRIEVAL).write_text(json.dumps(model.retriever.state_dict()), encoding="utf-8")
            files["retrieval"] = RETRIEVAL
        manifest = {"format": FORMAT, "version": VERSION,
                    "created": datetime.datetime.now().isoformat(timespec="seconds"),
                    "source": source, "adapters": "merged" if settings else "none", "lora": settings,
                    "merge_check": {"max_abs_logit_difference": difference, "tolerance": MERGE_TOLERANCE},
                    "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / CARD).write_text(card, encoding="utf-8")
        _usual_modes(tmp)
        if out.exists():
            old = out.with_name(f".tmp-{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _usual_modes(folder: Path) -> None:
    """Folders 0o777 and files 0o666 less the umask (mkdtemp and some writers make them private)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No transformers progress bars while saving or loading weights (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def portable_text(text: str, *bases: str | os.PathLike) -> str:
    """``text`` with every absolute path in it made :func:`portable`."""
    return _ABSOLUTE.sub(lambda m: portable(m.group(0), *bases), text)


def checkpoint_file(run: Path, which: str) -> Path:
    """The checkpoint of ``run`` to export: best.pt else last.pt by default; else best | last |
    epoch_NNNN | a file."""
    from models.build import checkpoint_of_run

    if not which:
        return checkpoint_of_run(run)
    path = Path(which)
    if path.is_file():
        return path
    path = run / "checkpoints" / (which if which.endswith(".pt") else f"{which}.pt")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def export_run(run: str | os.PathLike, out: str | os.PathLike, ckpt: str = "",
               overwrite: bool = False) -> Path:
    """Export checkpoint ``ckpt`` of run folder ``run`` to ``out`` (see the module docstring)."""
    from core.io import load_checkpoint
    from models.build import model_from_payload

    run = Path(run)
    path = checkpoint_file(run, ckpt)
    payload = load_checkpoint(path)
    model, cfg = model_from_payload(payload, path)
    state = payload.get("state") or {}
    # paths relative to the repository (the run) or bare names: the folder names no machine's folders
    source = {"run": portable(run), "checkpoint": portable(path, run), "epoch": state.get("epoch"),
              "step": state.get("step")}
    card = portable_text(model_card(model, cfg, run, path, source), run)
    return write_export(model, cfg, out, source=source, card=card, overwrite=overwrite)


# ============================================================================ model card =====
def _metrics_line(metrics: dict) -> str:
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("epoch", "step")]
    return " | ".join(keys) + "\n" + " | ".join("---" for _ in keys) + "\n" + \
        " | ".join(f"{metrics[k]:.4f}" for k in keys)


def _data_lines(cfg: Any, run: Path) -> list[str]:
    d = cfg.data
    if d.kind == "synthetic":
        s = d.synthetic
        lines = [f"- synthetic data, {s.mode} mode, seed {s.seed}, {s.train_per_kind} training and "
                 f"{s.test_per_kind} test clips per kind of motion (`dataloaders/synthetic.py`)"]
    else:
        lines = [f"- pickles in `{d.root}`: train `{d.train}`, test `{d.test}`"
                 + (f", validation `{d.val}`" if d.val else "") + (f", standards `{d.standard}`" if d.standard else "")]
    if not d.val:
        lines.append(f"- validation: {d.val_split.fraction:g} of the training clips, grouped by "
                     f"{d.val_split.group_by}, seed {d.val_split.seed}")
    lines.append(f"- segment `{d.segment}`, labels `{d.labels}`, augmented labels {d.augmented_labels}, "
                 f"normalisation `{d.normalise}`")
    log_file = run / "train.log"
    if log_file.is_file():
        counts = [line.split(" INFO ", 1)[-1] for line in log_file.read_text(encoding="utf-8").splitlines()
                  if " INFO data: " in line]
        if counts:
            lines.append(f"- from train.log: {counts[-1]}")
    return lines


def _metric_lines(run: Path, ckpt_path: Path, epoch: Any) -> list[str]:
    lines = []
    metrics_file = run / "metrics.jsonl"
    entries = []
    if metrics_file.is_file():
        for text in metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(text))
            except ValueError:
                continue
    chosen = [e for e in entries if e.get("epoch") == epoch]
    for split in ("val", "test"):
        if chosen and isinstance(chosen[-1].get(split), dict):
            lines += [f"{'Validation' if split == 'val' else 'Test (logged during training)'} split at "
                      f"epoch {epoch} (`metrics.jsonl`):", "", _metrics_line(chosen[-1][split]), ""]
    test_file = run / f"test_{ckpt_path.stem}_metrics.json"
    if test_file.is_file():
        test = json.loads(test_file.read_text(encoding="utf-8"))
        lines += [f"Test split, scored once on `{ckpt_path.name}` (`{test_file.name}`):", "",
                  _metrics_line(test), ""]
    return lines or ["No metrics were found in the run folder.", ""]


def _commands(run: Path) -> list[str]:
    from core.run_folder import COMMANDS_FILE

    file = run / COMMANDS_FILE
    lines = file.read_text(encoding="utf-8").splitlines() if file.is_file() else []
    if lines:
        return ["Commands run in this folder (`commands.txt`):", "", "```", *lines, "```"]
    return ["The run's resolved config reproduces it:", "", "```",
            "python train_t5_stagcn.py --cfg_file THIS_FOLDER/config.yaml", "```"]


def model_card(model: Any, cfg: Any, run: Path, ckpt_path: Path, source: dict) -> str:
    from models import lora
    from models.build import parameter_counts

    settings = lora.t5_record(model)["lora"]
    t5c = lora.base_t5(model.t5).config
    enc = cfg.model.encoder
    _, total = parameter_counts(model)
    lines = [f"# Motion2Text model: {cfg.experiment or run.name}", "",
             f"Exported from `{source['checkpoint']}` of run `{source['run']}` (epoch {source.get('epoch')}, "
             f"step {source.get('step')}).", "",
             "## Model", "",
             f"- STA-GCN encoder: channels {enc.channels}, strides {enc.strides}, temporal kernel "
             f"{enc.temporal_kernel}, {enc.num_attention_graphs} attention graphs",
             f"- projection `{cfg.model.projection.policy}`, reference branch `{cfg.model.reference}`, "
             f"prompt {cfg.model.prompt!r}",
             f"- T5: d_model {t5c.d_model}, {t5c.num_layers} + {t5c.num_decoder_layers} layers, "
             f"vocabulary {t5c.vocab_size}; from {cfg.model.t5.name or 'model.t5.config (trained from scratch)'}",
             f"- {total:,} parameters",
             ("- LoRA r={r}, alpha={alpha:g}, dropout={dropout:g} on {mods}: merged into `t5/`'s weights".format(
                 mods=", ".join(settings["target_modules"]), **settings) if settings else "- no LoRA adapters"),
             f"- frozen in training: {', '.join(cfg.train.freeze) or 'nothing'}", "",
             "## Data", "", *_data_lines(cfg, run), "",
             "## Metrics", "", *_metric_lines(run, ckpt_path, source.get("epoch")),
             "## Training", "", *_commands(run), "",
             "## Use", "", "```",
             "python caption.py --run THIS_FOLDER clip.npy          # or a dataset .pkl",
             "python train_t5_stagcn.py ... train.init_from=THIS_FOLDER   # finetune from it",
             "```", ""]
    return "\n".join(lines)


# ============================================================================ loading ========
def load_export(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(captioner in eval mode, config) of an export folder; no pickle is read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import T5ForConditionalGeneration

    from configs import schema
    from core.hub import ModelSourceError
    from dataloaders.tokenizer import load_tokenizer
    from models.build import build_model

    path = Path(path)
    manifest = read_manifest(path)
    try:
        cfg = schema.from_dict(schema.read_yaml(path / CONFIG))
    except schema.ConfigError as exc:
        raise ExportError(f"{path}: {CONFIG}: {exc}") from None
    try:
        tokenizer = load_tokenizer(str(path / "tokenizer"))
    except ModelSourceError as exc:
        raise ExportError(f"{path}: the tokenizer could not be loaded: {exc}") from None
    try:
        with _quiet_progress():
            t5 = T5ForConditionalGeneration.from_pretrained(path / "t5", use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: t5/ could not be loaded from safetensors "
                          f"({str(exc).splitlines()[0][:300]}); pickled weights are not read") from None
    try:
        skeleton = load_file(str(path / SKELETON), device="cpu")
    except (OSError, SafetensorError, ValueError) as exc:
        raise ExportError(f"{path}: {SKELETON} is not a readable safetensors file ({exc})") from None
    model = build_model(cfg, tokenizer, t5=t5)
    missing, unexpected = model.load_state_dict(skeleton, strict=False)
    missing = [k for k in missing if not k.startswith("t5.")]
    if missing or unexpected:
        raise ExportError(f"{path}: {SKELETON} does not fit the config's encoder and projection "
                          f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if (path / RETRIEVAL).is_file():
        from dataloaders.retrieval import Retriever

        model.retriever = Retriever.from_state(json.loads((path / RETRIEVAL).read_text(encoding="utf-8")))
    elif cfg.model.retrieval.k or cfg.eval.rerank:
        raise ExportError(f"{path}: the config retrieves training texts (model.retrieval.k / eval.rerank) "
                          f"but {RETRIEVAL} is missing")
    log.info("loaded export %s (T5 adapters: %s)", path, manifest.get("adapters"))
    return model.to(map_location).eval(), cfg


# ============================================================================ command line ===
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder results/<experiment>")
    p.add_argument("--out", required=True, help="the export folder to write (must not exist)")
    p.add_argument("--ckpt", default="", help="best | last | epoch_NNNN | a file (default: best.pt, else last.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder at --out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="note: %(message)s", stream=sys.stderr)
    try:
        out = export_run(args.run, args.out, args.ckpt, args.overwrite)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"models.export: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    manifest = read_manifest(out)
    source = manifest["source"]
    print(f"wrote {args.out} (from {source['checkpoint']} of {source['run']}, T5 adapters {manifest['adapters']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
