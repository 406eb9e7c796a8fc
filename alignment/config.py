"""A small typed config for CARL training: dataclasses filled from YAML and ``key=value`` overrides.

Unknown keys and values of the wrong type fail at load time with the key's dotted name. This is
deliberately local to ``alignment/`` (the captioning script has its own config system).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from alignment.carl import AugmentConfig, EmbedderConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted key."""


@dataclass
class DataConfig:
    """Training clips: dataset pickles (paths relative to the repo root) or generated synthetic data."""

    source: str = "synthetic"                      # "synthetic" | "pickle"
    train: list[str] = field(default_factory=list)  # dataset pickles (source: pickle)
    standard: Optional[str] = None                 # standard pickle; its clips are training clips too
    synthetic_seed: int = 0
    synthetic_train_per_kind: int = 8
    synthetic_test_per_kind: int = 2
    synthetic_mode: str = "coach"


@dataclass
class TrainConfig:
    """Optimisation (CARL reference: Adam 1e-4, weight decay 1e-5, cosine, clip 10)."""

    epochs: int = 30
    batch_size: int = 16
    num_frames: int = 48          # view length n = min(clip length, num_frames)
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    temperature: float = 0.1
    variance: float = 10.0        # Gaussian target variance, frames^2
    seed: int = 0
    keep_epochs: int = 2          # epoch_NNNN.pt files kept besides last.pt
    max_minutes: float = 0.0      # stop (after a checkpointed epoch) past this wall time; 0: no limit
    num_threads: int = 0          # torch CPU threads; 0: torch's default


@dataclass
class CarlConfig:
    """Everything a CARL training run needs."""

    name: Optional[str] = None    # run folder results/<name>/ (default: the config file's stem)
    data: DataConfig = field(default_factory=DataConfig)
    model: EmbedderConfig = field(default_factory=EmbedderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ============================================================================ building ========
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted where floats are)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, found {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a float, found {value!r}")
        return float(value)
    if tp in (int, bool, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, found {value!r}")
        return value
    raise ConfigError(f"config key {key!r}: unsupported type {_type_name(tp)}")


def _build(cls: type, values: Any, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys by dotted name."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config key {prefix or '<root>'!r}: expected a mapping, found {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}"
                          f" (known keys{' under ' + prefix if prefix else ''}: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        key, text = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> CarlConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
    cfg = _build(CarlConfig, apply_overrides(raw, overrides))
    validate(cfg)
    return cfg


def validate(cfg: CarlConfig) -> None:
    """Value checks that types alone cannot express."""
    if cfg.data.source not in ("synthetic", "pickle"):
        raise ConfigError(f"config key 'data.source': expected 'synthetic' or 'pickle', "
                          f"found {cfg.data.source!r}")
    if cfg.data.source == "pickle" and not cfg.data.train and not cfg.data.standard:
        raise ConfigError("config key 'data.train': give at least one dataset pickle "
                          "(or data.standard) when data.source is 'pickle'")
    if cfg.model.positions not in ("sinusoidal", "none"):
        raise ConfigError(f"config key 'model.positions': expected 'sinusoidal' or 'none', "
                          f"found {cfg.model.positions!r}")
    if cfg.model.channels not in (3, 6):
        raise ConfigError(f"config key 'model.channels': expected 3 or 6, found {cfg.model.channels}")
    if cfg.model.width % cfg.model.heads or cfg.model.width % 2:
        raise ConfigError(f"config key 'model.width': {cfg.model.width} must be even and "
                          f"divisible by model.heads ({cfg.model.heads})")
    for key in ("scale", "speed", "crop_ratio"):
        pair = getattr(cfg.augment, key)
        if len(pair) != 2 or pair[0] > pair[1] or pair[0] <= 0:
            raise ConfigError(f"config key 'augment.{key}': expected [low, high] with "
                              f"0 < low <= high, found {pair}")
    if cfg.augment.up_axis not in (0, 1, 2):
        raise ConfigError(f"config key 'augment.up_axis': expected 0, 1 or 2, "
                          f"found {cfg.augment.up_axis}")
    for key in ("epochs", "batch_size", "num_frames"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"config key 'train.{key}': expected >= 1")


def to_dict(cfg: CarlConfig) -> dict:
    return asdict(cfg)


def to_yaml(cfg: CarlConfig) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
