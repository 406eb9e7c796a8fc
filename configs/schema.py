"""The typed training configuration: every key, its type and its default.

A YAML file fills these dataclasses; a key that is not declared here, or a value of the wrong type,
fails at load time with the key's dotted name and the allowed keys. Command-line overrides are
``dotted.key=value`` pairs whose value is parsed as YAML (``train.lr=3e-4``,
``model.encoder.channels=[32,64]``). Paths are relative to the repository root unless absolute.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

# The allowed values of the config's choice keys. The modules that implement a choice import its
# tuple from here, so the schema imports nothing of the project's (docs/design.md, "Layers").
SEGMENTS = ("gt", "aligned", "error")  # record fields {segment}_start_frame ... (dataloaders/records.py)
SEGMENT_CHOICES = ("none",) + SEGMENTS  # data.segment
LABEL_MODES = ("all", "random")  # data.labels
NORMALISATIONS = ("none", "root_first_frame")  # data.normalise (dataloaders/features.py)
BODY_FRAMES = ("canonical", "stored")  # data.frame (dataloaders/body_frame.py)
ON_BAD = ("strict", "skip")  # data.on_bad: raise on an unusable record or clip, or drop it
RETRIEVAL_EXCLUDE = ("self", "learner")  # model.retrieval.exclude ("none" too for queries from outside)
GROUP_BY = ("none", "learner")  # data.val_split.group_by
SYNTHETIC_MODES = ("describe", "coach")  # data.synthetic.mode
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")  # eval.metric
REFERENCE_MODES = ("none", "subtract")  # model.reference
LAYOUT_NAMES = ("smpl22",)  # model.encoder.graph.layout (models/graph.py)
STRATEGIES = ("uniform", "distance", "spatial")  # model.encoder.graph.strategy
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1")  # model.t5.lora.target_modules
POLICIES = ("time_pool", "skeleton_pool", "origin")  # model.projection.policy
FREEZE_PARTS = ("encoder", "projection", "t5_encoder", "t5_decoder", "embeddings")  # train.freeze

DATA_KINDS = ("synthetic", "pickle")  # generated into the run folder, or read from data.root
DEVICES = ("auto", "cpu", "cuda")
RERANK_CANDIDATES = ("generated", "both", "retrieved", "gated")  # eval.rerank_candidates (inference.decode.reranked_captions)


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the dotted key."""


# ---------------------------------------------------------------------------------------------
@dataclass
class SyntheticData:
    seed: int = 0  # fixes the generated clips (each drawn from the seed, mode, split, kind and index)
    mode: str = "coach"  # coach: faults and coaching texts against a standard; describe: descriptions
    train_per_kind: int = 24  # training clips of each kind of motion
    test_per_kind: int = 4  # test clips of each kind of motion


@dataclass
class ValSplit:
    fraction: float = 0.15  # of the training clips held out for validation (0: no validation)
    group_by: str = "none"  # none | learner (every clip of a learner on one side)
    seed: int = 0  # draws the held-out clips


@dataclass
class DataConfig:
    kind: str = "synthetic"  # synthetic: generated into the run folder's data/; pickle: read from root
    root: str = ""  # folder holding the pickles (kind: pickle); relative to the repository root
    train: str = "train.pkl"  # the training pickle in root
    val: str = ""  # a validation pickle in root; empty: carve one from train with val_split
    test: str = "test.pkl"  # scored once, on the checkpoint chosen on validation
    val_split: ValSplit = field(default_factory=ValSplit)
    standard: str = ""  # standards file; needed for reference: subtract (unless pretraining)
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    segment: str = "none"  # crop clip and standard to the gt / aligned / error segment fields (none: whole)
    labels: str = "all"  # all: one sample per (clip, text); random: one text per clip, drawn each epoch
    augmented_labels: bool = False  # the records' paraphrases (augmented_labels) join the training targets
    mirror: float = 0.0  # share of training samples mirrored left-right each epoch (dataloaders/augment.py)
    rotate: float = 0.0  # training samples turned about the vertical axis by up to this many degrees
    speed: float = 0.0  # training samples played at a speed drawn from [1 - s, 1 + s] (resampled in time)
    frame: str = "canonical"  # canonical: metres, y up, feet on the floor, first frame facing +z; stored: as the files store them
    normalise: str = "root_first_frame"  # root_first_frame: the root's first-frame position subtracted
    on_bad: str = "strict"  # strict: a bad record or too short a clip stops the run; skip: dropped, counted
    max_target_len: int = 64  # target texts are cut to this many tokens
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)


@dataclass
class GraphConfig:
    layout: str = "smpl22"  # the skeleton graph's joints and bones (models/graph.py)
    strategy: str = "spatial"  # ST-GCN partition of the neighbours: uniform | distance | spatial
    max_hop: int = 1  # joints up to this many bones apart are neighbours
    dilation: int = 1  # hop step of the partitions (1 <= dilation <= max_hop)


@dataclass
class EncoderConfig:
    channels: list[int] = field(default_factory=lambda: [64, 64, 128, 128, 256])  # output width of each ST-GC block
    strides: list[int] = field(default_factory=lambda: [1, 1, 2, 1, 2])  # temporal stride of each block
    temporal_kernel: int = 9  # frames of each temporal convolution (odd); shorter clips are refused
    dropout: float = 0.0  # after each block's temporal convolution
    num_attention_graphs: int = 3  # learnt, data-dependent attention graphs (0: none)
    graph: GraphConfig = field(default_factory=GraphConfig)


@dataclass
class ProjectionConfig:
    policy: str = "time_pool"  # T5 tokens: one per joint (time_pool), per frame (skeleton_pool), per both (origin)
    dropout: float = 0.1  # on the T5 tokens, after their LayerNorm


@dataclass
class LoraSection:
    r: int = 0  # rank of the LoRA adapters on T5; 0: no LoRA (models/lora.py)
    alpha: float = 16.0  # the adapters' output is scaled by alpha / r
    dropout: float = 0.05  # dropout on the adapters' input
    target_modules: list[str] = field(default_factory=lambda: ["q", "v"])  # T5 linear layers to adapt


@dataclass
class T5Section:
    name: str = ""  # hub name or local folder; empty: build from `config` (train from scratch)
    config: dict = field(default_factory=dict)  # T5Config keys, merged over models.text.TINY_T5
    lora: LoraSection = field(default_factory=LoraSection)


@dataclass
class TokenizerSection:
    name: str = ""  # hub name or local folder; empty: train on the training texts
    vocab_size: int = 1000  # upper bound of a tokenizer trained on the training texts
    # dataset pickles (paths relative to the repository root) whose labels join the training texts
    # when the tokenizer is trained: a pretraining run's tokenizer then covers the words of the
    # data it will be finetuned on, as a hub tokenizer would
    also_train_on: list[str] = field(default_factory=list)


@dataclass
class RetrievalConfig:
    k: int = 0  # training clips retrieved per clip (z-scored motion statistics); 0: no retrieval
    texts: int = 3  # their texts placed on the encoder side, most central (consensus) first
    max_tokens: int = 40  # tokens kept of each retrieved text
    exclude: str = "self"  # self | learner: what a training clip may not retrieve (new-learner: learner)


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    reference: str = "none"  # subtract: the standard's features, subtracted, join the learner's (models/captioner.py)
    prompt: str = ""  # task prompt whose token embeddings precede the motion tokens (encoder side)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    t5: T5Section = field(default_factory=T5Section)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)


@dataclass
class ScstConfig:
    epochs: int = 0  # self-critical epochs after cross-entropy training, from best.pt (0: none)
    samples: int = 5  # captions sampled per clip; each one's baseline is the mean reward of the others
    lr: float = 5.0e-5  # the stage's learning rate (constant)
    batch_size: int = 8  # clips per step (each with `samples` captions)
    max_new_tokens: int = 48  # longest sampled caption, in tokens


@dataclass
class TrainConfig:
    epochs: int = 20  # cross-entropy epochs
    batch_size: int = 16  # training samples per batch, on each process
    lr: float = 1e-3  # AdamW's peak learning rate
    weight_decay: float = 0.01  # AdamW's, on weights (not on biases and norms)
    warmup_ratio: float = 0.05  # share of the steps with a linear warmup; then linear decay to 0
    grad_clip: float = 1.0  # gradient norm clip (0: none)
    label_smoothing: float = 0.0  # cross-entropy against (1 - e) one-hot + e uniform over the vocabulary
    amp: bool = True  # CUDA only: bf16 where supported, else fp16 with a GradScaler
    drop_last: bool = False  # leave out the samples beyond the last whole round of full batches
    group_by_length: bool = True  # batches of clips of about the same length (dataloaders/sampler.py)
    early_stop: int = 0  # evaluations without a better validation score before training stops (0: never)
    init_from: str = ""  # finetune from this checkpoint (else results/<exp>/pretrain_checkpoints/)
    max_nonfinite: int = 5  # consecutive non-finite losses before the run stops
    keep_epoch_checkpoints: int = 2  # newest epoch_NNNN.pt files kept beside last.pt (at least one)
    save_every_epochs: int = 1  # epochs between checkpoints (also at the last epoch and on a stop)
    log_every: int = 10  # steps between TensorBoard scalars
    deterministic: bool = False  # ask torch for deterministic kernels (torch.use_deterministic_algorithms)
    limit_steps: int = 0  # stop each epoch after this many steps (0: no limit); for smoke tests
    dist_timeout_s: int = 900  # how long a collective waits for a silent peer before the run fails
    freeze: list[str] = field(default_factory=list)  # parts without gradient (training/freeze.py)
    scst: ScstConfig = field(default_factory=ScstConfig)  # self-critical sequence training (training/scst.py)


@dataclass
class EvalConfig:
    every: int = 1  # epochs between evaluations (always at the end too)
    at_start: bool = False  # also evaluate the untrained model (epoch 0), for a baseline
    batch_size: int = 32  # clips per evaluation batch (sorted by length)
    num_beams: int = 1  # beam width of evaluation captions (1: greedy)
    max_new_tokens: int = 48  # longest caption, in tokens
    metric: str = "CIDEr"  # which validation metric picks `best.pt`
    rerank: int = 0  # beam candidates reranked by CIDEr-D against the retrieved clips' texts (0: off)
    rerank_k: int = 3  # training clips whose texts the candidates are reranked against
    rerank_samples: int = 0  # sampled candidates added to the beam candidates (drawn per clip from seed and name)
    rerank_temperature: float = 1.0  # softmax temperature of those samples
    rerank_candidates: str = "generated"  # generated | both (+ the retrieved training texts) | retrieved (those alone) | gated (retrieved for clips whose nearest training clip is likely their own learner's, else generated)
    rerank_logprob: float = 0.0  # weight of the model's log-probability of a candidate (nats) in its score (gated: familiar clips' retrieved texts only)
    rerank_gate: float = 1.0  # gated only: a clip is familiar when its nearest training clip is within this times the leave-one-out threshold
    log_test: bool = False  # also score the test split at each evaluation (logged, never used to choose)
    use_java: Optional[bool] = None  # null: use Java when found (PTB tokenizer, METEOR)
    num_logged_samples: int = 4  # captions beside a reference in train.log and TensorBoard at each evaluation
    num_logged_pictures: int = 2  # clips whose node/cross-attention maps go to TensorBoard (0: none)


@dataclass
class Config:
    experiment: str = ""  # results/<experiment>/; empty: the config file's stem
    results_dir: str = "results"  # the folder of run folders, relative to the repository root
    seed: int = 0  # the weights, batch order, augmentations and sampled candidates
    device: str = "auto"  # auto: cuda when available, else cpu
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "data.kind": DATA_KINDS,
    "data.synthetic.mode": SYNTHETIC_MODES,
    "data.segment": SEGMENT_CHOICES,
    "data.labels": LABEL_MODES,
    "data.frame": BODY_FRAMES,
    "data.normalise": NORMALISATIONS,
    "data.on_bad": ON_BAD,
    "data.val_split.group_by": GROUP_BY,
    "model.retrieval.exclude": RETRIEVAL_EXCLUDE,
    "model.projection.policy": POLICIES,
    "model.reference": REFERENCE_MODES,
    "model.encoder.graph.layout": LAYOUT_NAMES,
    "model.encoder.graph.strategy": STRATEGIES,
    "device": DEVICES,
    "eval.metric": METRIC_NAMES,
    "eval.rerank_candidates": RERANK_CANDIDATES,
}
POSITIVE = ("train.epochs", "train.batch_size", "train.lr", "eval.every", "eval.batch_size",
            "eval.num_beams", "eval.max_new_tokens", "data.max_target_len",
            "model.tokenizer.vocab_size", "model.encoder.temporal_kernel", "train.max_nonfinite",
            "train.save_every_epochs", "train.log_every", "train.dist_timeout_s", "model.t5.lora.alpha",
            "model.retrieval.texts", "model.retrieval.max_tokens", "eval.rerank_k", "eval.rerank_temperature", "train.scst.lr",
            "train.scst.batch_size", "train.scst.max_new_tokens")
NON_NEGATIVE = ("train.weight_decay", "train.warmup_ratio", "train.grad_clip", "model.t5.lora.r",
                "train.keep_epoch_checkpoints", "train.limit_steps", "data.num_workers",
                "eval.num_logged_pictures", "train.early_stop", "eval.rerank", "eval.rerank_samples", "eval.rerank_logprob", "model.retrieval.k", "train.scst.epochs",
                "model.encoder.dropout", "model.projection.dropout")

# Options that lost on validation and were removed (last in commit RETIRED_LAST[key], else RETIRED_IN), with their old
# defaults: a config or checkpoint written before carries them at these values, which are dropped
# silently; any other value describes a model that can no longer be built, and is refused.
RETIRED_IN = "67d6cae"
RETIRED = {"model.annotators": 0, "eval.annotators": [], "model.retrieval.copy": False, "model.retrieval.dropout": 0.0,
           "model.embedding": {"dim": 0, "temperature": 0.1, "weight": 1.0}, "eval.rerank_embedding": 0.0,
           "eval.rerank_pool": "statistics"}
RETIRED_LAST = {"model.embedding": "8261efd", "eval.rerank_embedding": "8261efd", "eval.rerank_pool": "8261efd"}

# Keys added after runs were written, with what a saved config or checkpoint without them meant
# (the behaviour of the code that wrote it); a config the user writes gets the defaults instead.
PREDATED = {"data.frame": "stored"}


# ---------------------------------------------------------------------------------------------
def _at_old_default(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    if isinstance(default, float):
        return isinstance(value, (int, float)) and value == default
    return type(value) is type(default) and value == default


def _drop_key(node: dict, parts: list[str], key: str, default: Any) -> dict:
    head, rest = parts[0], parts[1:]
    if head not in node or (rest and not isinstance(node[head], dict)):
        return node  # absent, or not a section (a type error that _build reports)
    if rest:
        return {**node, head: _drop_key(node[head], rest, key, default)}
    if not _at_old_default(node[head], default):
        raise ConfigError(f"{key} was retired (last in commit {RETIRED_LAST.get(key, RETIRED_IN)}); this config sets it to "
                          f"{node[head]!r} (only its old default {default!r} is still accepted)")
    return {k: v for k, v in node.items() if k != head}


def drop_retired(raw: dict) -> dict:
    """``raw`` (a config as a nested dict) without the :data:`RETIRED` keys at their old defaults;
    a retired key at another value is a :class:`ConfigError` naming it. ``raw`` is not changed."""
    for key, default in RETIRED.items():
        raw = _drop_key(raw, key.split("."), key, default)
    return raw


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint``; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {hint.__name__} keys, found {value!r}")
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, found {type(value).__name__} {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, found {type(value).__name__} {value!r}")
    if hint in (int, float, str) and (not isinstance(value, hint) or isinstance(value, bool) and hint is not bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, found {type(value).__name__} {value!r}")
    return value


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in allowed:
            raise ConfigError(f"unknown config key {key!r}; allowed keys here: {', '.join(allowed)}")
        values[name] = _coerce(value, hints[name], key)
    return cls(**values)


def _walk(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            yield from _walk(value, key)
        else:
            yield key, value


def validate(cfg: Config) -> Config:
    """Value checks beyond types: choices and signs."""
    for key, value in _walk(cfg):
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{key}: expected one of {', '.join(CHOICES[key])}, found {value!r}")
        if key in POSITIVE and not value > 0:
            raise ConfigError(f"{key}: expected a positive number, found {value!r}")
        if key in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{key}: expected a number >= 0, found {value!r}")
    enc = cfg.model.encoder
    if len(enc.channels) != len(enc.strides):
        raise ConfigError(f"model.encoder.strides: expected {len(enc.channels)} entries (one per "
                          f"channel entry), found {len(enc.strides)}")
    if cfg.train.scst.epochs and cfg.train.scst.samples < 2:
        raise ConfigError(f"train.scst.samples: expected 2 or more (each sample's baseline is the mean reward "
                          f"of the others), found {cfg.train.scst.samples!r}")
    if not 0.0 <= cfg.data.mirror <= 1.0:
        raise ConfigError(f"data.mirror: expected a probability in [0, 1], found {cfg.data.mirror!r}")
    if cfg.eval.rerank_samples and not cfg.eval.rerank:
        raise ConfigError(f"eval.rerank_samples: sampled candidates are only used when reranking; set eval.rerank "
                          f"> 0 (found eval.rerank=0, eval.rerank_samples={cfg.eval.rerank_samples})")
    if cfg.eval.rerank_gate <= 0:
        raise ConfigError(f"eval.rerank_gate: expected a number > 0 (the familiar threshold's scale), "
                          f"found {cfg.eval.rerank_gate!r}")
    for key, value in (("eval.rerank_candidates", cfg.eval.rerank_candidates != "generated" and cfg.eval.rerank_candidates),
                       ("eval.rerank_logprob", cfg.eval.rerank_logprob)):
        if value and not cfg.eval.rerank:
            raise ConfigError(f"{key}: only used when reranking; set eval.rerank > 0 (found eval.rerank=0, "
                              f"{key}={value!r})")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing: expected a number in [0, 1), found {cfg.train.label_smoothing!r}")
    if not 0.0 <= cfg.data.speed < 1.0:
        raise ConfigError(f"data.speed: expected a number in [0, 1), found {cfg.data.speed!r}")
    if not 0.0 <= cfg.data.rotate <= 180.0:
        raise ConfigError(f"data.rotate: expected degrees in [0, 180], found {cfg.data.rotate!r}")
    if not 0.0 <= cfg.data.val_split.fraction < 1.0:
        raise ConfigError(f"data.val_split.fraction: expected a number in [0, 1), found {cfg.data.val_split.fraction!r}")
    _validate_lists(cfg)
    if cfg.data.kind == "pickle" and not cfg.data.root:
        raise ConfigError("data.root: expected the folder holding the dataset pickles "
                          "(e.g. data.root=../shared/data/BX), found an empty string")
    return cfg


def _validate_lists(cfg: Config) -> None:
    """``train.freeze`` and ``model.t5.lora``: list entries and the adapter settings."""
    for i, part in enumerate(cfg.train.freeze):
        if part not in FREEZE_PARTS:
            raise ConfigError(f"train.freeze[{i}]: expected one of {', '.join(FREEZE_PARTS)}, found {part!r}")
    lora = cfg.model.t5.lora
    for i, name in enumerate(lora.target_modules):
        if name not in LORA_TARGETS:
            raise ConfigError(f"model.t5.lora.target_modules[{i}]: expected one of {', '.join(LORA_TARGETS)} "
                              f"(T5's linear layers), found {name!r}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"model.t5.lora.dropout: expected a number in [0, 1), found {lora.dropout!r}")
    if lora.r and not lora.target_modules:
        raise ConfigError("model.t5.lora.target_modules: expected at least one of "
                          f"{', '.join(LORA_TARGETS)} when model.t5.lora.r > 0, found []")


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.lr=3e-4", "data.labels=random"]`` -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r}: expected dotted.key=value")
        key, text = pair.split("=", 1)
        value = yaml.safe_load(text) if text != "" else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r}: {part} is not a section")
        node[parts[-1]] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return raw


def load_typed(cls: type, path: Optional[str | Path] = None, overrides: list[str] | None = None) -> Any:
    """Fill dataclass ``cls`` from a YAML file (defaults when None) and dotted overrides."""
    raw = read_yaml(path) if path is not None else {}
    raw = _merge(raw, parse_overrides(list(overrides or [])))
    try:
        return _build(cls, drop_retired(raw) if cls is Config else raw)
    except ConfigError as exc:
        where = f"config file {path}: " if path is not None else ""
        raise ConfigError(where + str(exc)) from None


def load_config(path: Optional[str | Path] = None, overrides: list[str] | None = None) -> Config:
    """Read a training config (or the defaults when ``path`` is None) and apply dotted overrides."""
    cfg = load_typed(Config, path, overrides)
    try:
        return validate(cfg)
    except ConfigError as exc:
        where = f"config file {path}: " if path is not None else ""
        raise ConfigError(where + str(exc)) from None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def with_predated(raw: dict) -> dict:
    """A saved config (a run's config.yaml or a checkpoint's, as a nested dict) with the
    :data:`PREDATED` keys it lacks at what they meant when it was written. ``raw`` is not changed."""
    for key, old in PREDATED.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and name not in node:
            raw = _merge(raw, parse_overrides([f"{key}={old}"]))
    return raw


def saved_defaults() -> dict:
    """The defaults as a nested dict, the :data:`PREDATED` keys at their old meaning: what stands
    in for a key that a saved config predates."""
    return _merge(to_dict(Config()), parse_overrides([f"{key}={old}" for key, old in PREDATED.items()]))


def from_dict(raw: dict) -> Config:
    """A saved config (a checkpoint's or a run folder's): retired keys dropped, predated keys at
    their old meaning (:func:`with_predated`)."""
    return validate(_build(Config, drop_retired(with_predated(raw))))


def describe_keys() -> str:
    """One line per key with its default, for ``--help``."""
    return "\n".join(f"  {k} = {v!r}" for k, v in _walk(Config()))
