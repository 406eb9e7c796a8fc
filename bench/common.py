"""Pieces shared by the benchmarks in ``bench/``: the data (BX when present, else synthetic), the two
model sizes, devices, timing and the JSON file each benchmark writes.

Not a benchmark itself. The benchmarks run as modules from the repository root
(``python -m bench.train_step``), so ``bench`` and the project packages import as they are;
they import this as ``from bench import common``.

Data: the real boxing data is read from ``$MOTION2TEXT_BX_DIR`` or ``../shared/data/BX`` beside
the checkout (the same place as ``tests/conftest.py``). When it is absent, a synthetic coach-mode
dataset (same pickle format, ``dataloaders.synthetic``) is written to a temporary folder instead,
and every table says which one was used.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from configs import schema
from core.paths import shown
from dataloaders import synthetic
from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards

REPO_ROOT = Path(__file__).resolve().parents[1]
BX_DIR = Path(os.environ.get("MOTION2TEXT_BX_DIR", REPO_ROOT.parent / "shared" / "data" / "BX"))
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BASE_CONFIG = REPO_ROOT / "configs" / "synthetic.yaml"
DATA_CHOICES = ("auto", "bx", "synthetic")

# "tiny" is configs/synthetic.yaml's model as it is. "small" has T5-small's shape (d_model 512,
# 6 + 6 layers, 8 heads, vocabulary padded to T5's 32128) and pretrain_humanml3d.yaml's encoder.
MODEL_CONFIGS: dict[str, list[str]] = {
    "tiny": [],
    "small": [
        "model.encoder.channels=[64,64,64,128,128,128,256,256]",
        "model.encoder.strides=[1,1,1,2,1,1,2,1]",
        "model.encoder.num_attention_graphs=3",
        "model.t5.config={d_model: 512, d_ff: 2048, d_kv: 64, num_layers: 6, "
        "num_decoder_layers: 6, num_heads: 8}",
    ],
    # configs/boxing.yaml's model (its retrieval texts left out): STA-GCN [32, 32, 64, 64] with 3
    # attention graphs, T5 d_model 256, 3 + 3 layers, the 1000-token tokenizer.
    "bx": [
        "model.encoder.channels=[32,32,64,64]",
        "model.encoder.strides=[1,2,1,2]",
        "model.encoder.num_attention_graphs=3",
        "model.t5.config={d_model: 256, d_ff: 512, d_kv: 32, num_layers: 3, "
        "num_decoder_layers: 3, num_heads: 8}",
    ],
    # t5-base's shape (d_model 768, d_ff 3072, 12 + 12 layers, 12 heads, vocabulary padded to
    # 32128) with random weights and pretrain_humanml3d.yaml's encoder (small's).
    "base": [
        "model.encoder.channels=[64,64,64,128,128,128,256,256]",
        "model.encoder.strides=[1,1,1,2,1,1,2,1]",
        "model.encoder.num_attention_graphs=3",
        "model.t5.config={d_model: 768, d_ff: 3072, d_kv: 64, num_layers: 12, "
        "num_decoder_layers: 12, num_heads: 12}",
    ],
}
VOCAB_ROWS = {"tiny": 0, "small": 32128, "bx": 0, "base": 32128}  # 0: the trained tokenizer's size, as training builds it
POLICIES = ("time_pool", "skeleton_pool", "origin")
REFERENCES = ("none", "subtract")


# ============================================================================ command line ====
def int_list(text: str) -> list[int]:
    """``"8,32"`` -> ``[8, 32]`` (for argparse ``type=``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers such as 8,32, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"expected positive integers such as 8,32, got {text!r}")
    return values


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type=`` for comma-separated names out of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if not values or bad:
            raise ValueError(f"expected comma-separated names out of {', '.join(choices)}, got {text!r}")
        return values
    parse.__name__ = "list of " + "/".join(choices)
    return parse


# ============================================================================ devices ========
def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda`` (or ``cuda:N``); a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: torch {torch.__version__} sees no CUDA device "
                         f"(CUDA available: {torch.cuda.is_available()}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {name}: expected cpu or cuda")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` (the device's queue drained before and after) and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def environment(device: torch.device) -> dict:
    """What the figures were measured on."""
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {shown(path)}")


# ============================================================================ data ===========
@dataclass
class Source:
    """Records and standards of one dataset split, and what they are."""

    name: str  # "BX" or "synthetic"
    train: list
    test: list
    standards: dict
    train_file: Path
    note: str = ""
    seconds: dict = field(default_factory=dict)  # load times by step


def bx_present() -> bool:
    return (BX_DIR / "BX_train.pkl").is_file()


def pick_data(kind: str) -> str:
    """``auto`` -> ``bx`` when the files are there, else ``synthetic``; ``bx`` demands them."""
    if kind not in DATA_CHOICES:
        raise SystemExit(f"error: --data {kind}: expected one of {', '.join(DATA_CHOICES)}")
    if kind == "bx" and not bx_present():
        raise SystemExit(f"error: --data bx: {shown(BX_DIR / 'BX_train.pkl')} not found "
                         f"(set MOTION2TEXT_BX_DIR or use --data synthetic)")
    if kind == "auto":
        return "bx" if bx_present() else "synthetic"
    return kind


def load_source(kind: str = "auto", per_kind: int = 16, tmp_dir: Path | None = None) -> Source:
    """BX (train, test, standards) or a synthetic coach-mode dataset written to ``tmp_dir``."""
    kind = pick_data(kind)
    if kind == "bx":
        folder, files = BX_DIR, ("BX_train.pkl", "BX_test.pkl", "BX_standard.pkl")
        note = f"BX from {shown(BX_DIR)}"
    else:
        folder = Path(tmp_dir or tempfile.mkdtemp(prefix="m2t_bench_"))
        synthetic.write(folder, seed=0, mode="coach", train_per_kind=per_kind,
                        test_per_kind=max(1, per_kind // 4))
        files = ("train.pkl", "test.pkl", "standard.pkl")
        note = (f"synthetic coach data ({per_kind} train clips per kind): BX not found at {shown(BX_DIR)}"
                if not bx_present() else "synthetic coach data (--data synthetic)")
    seconds = {}
    start = time.perf_counter()
    standards = load_standards(folder / files[2])
    seconds["load_standards"] = time.perf_counter() - start
    start = time.perf_counter()
    train = load_records(folder / files[0], standards=standards)
    seconds["load_records(train)"] = time.perf_counter() - start
    start = time.perf_counter()
    test = load_records(folder / files[1], standards=standards)
    seconds["load_records(test)"] = time.perf_counter() - start
    return Source("BX" if kind == "bx" else "synthetic", train, test, standards, folder / files[0],
                  note, seconds)


def train_dataset(source: Source, reference: bool = True) -> MotionTextDataset:
    """The training samples as configs/boxing.yaml builds them with ``data.segment=aligned
    model.reference=subtract data.mirror=0``: aligned segment, standards, paraphrases added."""
    return MotionTextDataset(source.train, source.standards, segment="aligned", labels="all",
                             augmented_labels=True, reference=reference, train=True,
                             source=str(source.train_file))


def eval_dataset(records: list, source: Source, reference: bool = True) -> MotionTextDataset:
    """One sample per clip (its first label), as evaluation builds it."""
    return MotionTextDataset(records, source.standards, segment="aligned", reference=reference,
                             train=False, source=str(source.train_file))


def training_texts(records: Sequence[dict]) -> list[str]:
    return [t for r in records for t in list(r["labels"]) + list(r.get("augmented_labels") or [])]


def make_tokenizer(source: Source, vocab_size: int = 1000) -> Any:
    from dataloaders import tokenizer as text

    return text.train_tokenizer(training_texts(source.train), vocab_size)


def random_batches(dataset: MotionTextDataset, collate: Collator, batch_size: int, count: int,
                   seed: int = 0) -> list[dict]:
    """``count`` batches of ``batch_size`` samples drawn without replacement (reshuffled as needed)."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < batch_size * count:
        order += torch.randperm(len(dataset), generator=gen).tolist()
    return [collate([dataset[i] for i in order[k * batch_size:(k + 1) * batch_size]])
            for k in range(count)]


def fixed_batch(clips: int = 8, frames: int = 100, joints: int = 22, tokens: int = 32, vocab: int = 1000,
                seed: int = 0) -> dict:
    """A batch of random clips (learner and standard, ``(clips, 6, frames, joints)``, every frame
    valid) with random target texts of ``tokens`` tokens: the fixed batch of the t5-base sizes."""
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(clips, 6, frames, joints, generator=gen),
            "std_x": torch.randn(clips, 6, frames, joints, generator=gen),
            "mask": torch.ones(clips, frames, dtype=torch.bool),
            "labels": torch.randint(3, vocab, (clips, tokens), generator=gen)}


# ============================================================================ models =========
def model_config(size: str, policy: str, reference: str, extra: Sequence[str] = ()) -> schema.Config:
    """configs/synthetic.yaml with the size's overrides and the chosen policy / reference mode."""
    if size not in MODEL_CONFIGS:
        raise SystemExit(f"error: unknown model config {size!r}; expected one of {', '.join(MODEL_CONFIGS)}")
    return schema.load_config(BASE_CONFIG, [*MODEL_CONFIGS[size], f"model.projection.policy={policy}",
                                            f"model.reference={reference}", *extra])


def make_model(size: str, policy: str, reference: str, tokenizer: Any, device: torch.device,
               seed: int = 0) -> torch.nn.Module:
    """The captioner of ``size`` built by ``models.build.build_model``; the same seed, same init."""
    from models.build import build_model

    torch.manual_seed(seed)
    model = build_model(model_config(size, policy, reference), tokenizer)
    rows = VOCAB_ROWS[size]
    if rows > model.t5.get_input_embeddings().num_embeddings:
        model.t5.resize_token_embeddings(rows, mean_resizing=False)  # T5-small's vocabulary size
    return model.to(device)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def quiet_libraries() -> None:
    """Silence transformers' advice messages (they would break up the tables)."""
    import logging
    import warnings

    for name in ("transformers", "tokenizers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")


# ============================================================================ profiler =======
class quiet_native_stderr:
    """Send file descriptor 2 to /dev/null for a block: the profiler's native library prints a
    start/stop line there that would land in the middle of a table. Python exceptions still
    propagate (their traceback is printed after the block, when stderr is back)."""

    def __enter__(self) -> "quiet_native_stderr":
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)


def cpu_allocation_peak(fn: Callable[[], Any]) -> int | None:
    """Bytes: the largest running total of torch's CPU allocations minus frees while ``fn()`` runs
    (tensors alive before the call are not counted), from ``torch.profiler`` with
    ``profile_memory=True``. ``None`` where this torch's profiler exposes no memory events."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    except AttributeError:
        return None
    running = peak = 0
    for _, nbytes in sorted(events):
        running += nbytes
        peak = max(peak, running)
    return peak
