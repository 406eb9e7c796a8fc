"""A small typed config for CARL training: dataclasses filled from YAML and ``key=value`` overrides.

Unknown keys and values of the wrong type fail at load time with the key's dotted name, through
the same typed builder as the captioning config (``configs/schema.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from configs import schema
from alignment.carl import POSE_CHANNELS, POSITION_MODES, AugmentConfig, EmbedderConfig


ConfigError = schema.ConfigError  # a config file or override is invalid; names the dotted key


@dataclass
class DataConfig:
    """Training clips: dataset pickles (paths relative to the repo root) or generated synthetic data."""

    kind: str = "synthetic"                        # synthetic | pickle
    train: list[str] = field(default_factory=list)  # dataset pickles (kind: pickle)
    standard: Optional[str] = None                 # standard pickle; its clips are training clips too
    synthetic: schema.SyntheticData = field(default_factory=lambda: schema.SyntheticData(
        train_per_kind=8, test_per_kind=2))


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
    keep_epoch_checkpoints: int = 2  # epoch_NNNN.pt files kept besides last.pt
    max_minutes: float = 0.0      # stop (after a checkpointed epoch) past this wall time; 0: no limit
    num_threads: int = 0          # torch CPU threads; 0: torch's default


@dataclass
class CarlConfig:
    """Everything a CARL training run needs (the same top-level keys as the captioner's config)."""

    experiment: str = ""          # results/<experiment>/; empty: the config file's stem
    results_dir: str = "results"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: EmbedderConfig = field(default_factory=EmbedderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ============================================================================ loading =========
def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> CarlConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Types, unknown keys and overrides are handled by the project's typed-config builder
    (``configs.schema``); the value checks below are CARL's own.
    """
    cfg = schema.load_typed(CarlConfig, path, list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: CarlConfig) -> None:
    """Value checks that types alone cannot express."""
    if cfg.data.kind not in schema.CHOICES["data.kind"]:
        raise ConfigError(f"config key 'data.kind': expected one of {', '.join(schema.CHOICES['data.kind'])}, "
                          f"found {cfg.data.kind!r}")
    if cfg.data.synthetic.mode not in schema.CHOICES["data.synthetic.mode"]:
        raise ConfigError(f"config key 'data.synthetic.mode': expected one of "
                          f"{', '.join(schema.CHOICES['data.synthetic.mode'])}, found {cfg.data.synthetic.mode!r}")
    if cfg.data.kind == "pickle" and not cfg.data.train and not cfg.data.standard:
        raise ConfigError("config key 'data.train': give at least one dataset pickle "
                          "(or data.standard) when data.kind is 'pickle'")
    if cfg.model.positions not in POSITION_MODES:
        raise ConfigError(f"config key 'model.positions': expected one of {', '.join(POSITION_MODES)}, "
                          f"found {cfg.model.positions!r}")
    if cfg.model.channels not in POSE_CHANNELS:
        raise ConfigError(f"config key 'model.channels': expected one of {POSE_CHANNELS}, found {cfg.model.channels}")
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
