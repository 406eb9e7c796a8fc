"""A pretrained T5 from a local folder, finetuned with and without LoRA; the same model after every reload.

The module builds a small T5 and a tokenizer and ``save_pretrained`` s both into a folder
(``model.t5.name`` / ``model.tokenizer.name`` point at it), then runs training through
``train_t5_stagcn.main`` on tiny synthetic data:

* ``plain``: T5 from the folder, stopped after epoch 1 and resumed;
* ``lora``: LoRA, finetuned from ``plain``'s best.pt (in ``pretrain_checkpoints/``), stopped
  mid-epoch and resumed;
* ``--eval_only`` of both; ``caption.py`` on both; ``python -m models.export`` of ``lora``;
* finetuning from ``pretrain_checkpoints/`` or ``train.init_from`` in every combination: plain
  from plain, LoRA from plain, plain from LoRA, LoRA from LoRA (another rank), plain from the export.

Probes wrapped around the trainer record, on one fixed batch (every test clip with its standard
and first reference), the teacher-forced logits and the greedy captions of the live model when a
checkpoint is written and of the model just after each reload. Reloads of the same wrapping must
give identical logits; where LoRA adapters are merged (plain from LoRA, LoRA from LoRA, the
export), the logits agree within ``models.export.MERGE_TOLERANCE`` x max |logit| and the captions
are the same, while the adapters themselves move the logits by far more than that (so a merge
done twice, or adapters dropped, would fail).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import caption
import train_t5_stagcn as trainer
from training import evaluate as in_training
from dataloaders import synthetic
from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards
from inference import decode
from models import export, lora
from dataloaders.tokenizer import load_tokenizer, train_tokenizer
from core.io import CheckpointError, load_checkpoint
from tests.test_reliability import Payload
from tests.test_train import REPO, tiny

MAX_NEW = 6  # tiny()'s eval.max_new_tokens
LORA = "model.t5.lora={r: 4, alpha: 32, dropout: 0.0, target_modules: [q, v, wi]}"
LORA_OTHER = "model.t5.lora={r: 2, alpha: 8, dropout: 0.1, target_modules: [k, o]}"


# ============================================================================ probes =========
@dataclass
class Shot:
    logits: torch.Tensor  # (N, L, vocab), teacher-forced on the batch's labels
    captions: dict[str, str]  # greedy, MAX_NEW tokens


@torch.no_grad()
def shoot(model, batch: dict) -> Shot:
    was = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        embeds, attn = model.encode(batch)
        logits = model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"], use_cache=False).logits
        texts = model.generate(batch, num_beams=1, max_new_tokens=MAX_NEW)
    model.train(was)
    return Shot(logits.float().clone(), dict(zip(batch["video_names"], texts)))


def run_probed(argv: list[str], batch: dict) -> dict[str, Any]:
    """``trainer.main(argv)`` with probes: ``saved`` (last checkpoint written), ``best``, ``resumed``,
    ``finetuned``, ``evaluated`` (last evaluation's model) and ``first_step`` (the state dict)."""
    shots: dict[str, Any] = {}
    orig = {"save": trainer.Trainer.save, "load": trainer.Trainer.load_state_dict, "step": trainer.Trainer.train_step,
            "best": trainer.keep_best, "finetune": trainer.load_finetune_weights, "eval": in_training.evaluate_split}

    def save(self, *a, **kw):
        orig["save"](self, *a, **kw)
        shots["saved"] = shoot(self.model, batch)

    def load_state_dict(self, payload):
        orig["load"](self, payload)
        shots["resumed"] = shoot(self.model, batch)

    def train_step(self, b):
        shots.setdefault("first_step", {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return orig["step"](self, b)

    def keep_best(run_dir, t, metrics, tok):
        before = t.progress.best_epoch
        orig["best"](run_dir, t, metrics, tok)
        if t.progress.best_epoch != before:
            shots["best"] = shoot(t.model, batch)

    def load_finetune_weights(model, incoming, source):
        orig["finetune"](model, incoming, source)
        shots["finetuned"] = shoot(model, batch)

    def evaluate_split(model, *a, **kw):
        shots["evaluated"] = shoot(model, batch)
        return orig["eval"](model, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer.Trainer, "save", save)
        mp.setattr(trainer.Trainer, "load_state_dict", load_state_dict)
        mp.setattr(trainer.Trainer, "train_step", train_step)
        mp.setattr(trainer, "keep_best", keep_best)
        mp.setattr(trainer, "load_finetune_weights", load_finetune_weights)
        mp.setattr(in_training, "evaluate_split", evaluate_split)
        trainer.main(argv)
    return shots


def same(a: Shot, b: Shot) -> None:
    """Identical logits and captions (a reload of the same weights and wrapping)."""
    assert torch.equal(a.logits, b.logits), (a.logits - b.logits).abs().max()
    assert a.captions == b.captions


def merged_same(a: Shot, b: Shot) -> float:
    """Logits within the stated merge tolerance, same captions (adapters merged on one side)."""
    diff = (a.logits - b.logits).abs().max().item()
    assert diff <= export.MERGE_TOLERANCE * max(1.0, a.logits.abs().max().item()), diff
    assert a.captions == b.captions
    return diff


# ============================================================================ the runs =======
@dataclass
class World:
    results: Path
    folder: Path  # the saved pretrained T5 + tokenizer
    batch: dict
    shots: dict[str, dict[str, Any]]
    export_dir: Path

    def run(self, name: str) -> Path:
        return self.results / name

    def best(self, name: str) -> Shot:
        """The model as best.pt was last written, in the run's second invocation or its first."""
        return self.shots[f"{name}_2"].get("best") or self.shots[f"{name}_1"]["best"]

    def args(self, name: str, *extra: str) -> list[str]:
        return tiny(self.results, name, f"model.t5.name={self.folder}", f"model.tokenizer.name={self.folder}",
                    "train.lr=1e-2", *extra)


def save_pretrained_folder(folder: Path, data: Path) -> None:
    """A small T5 and a tokenizer trained on the synthetic texts, as a user's local T5 folder."""
    from transformers import T5Config, T5ForConditionalGeneration

    texts = [t for r in load_records(data / "train.pkl") for t in r["labels"]]
    tok = train_tokenizer(texts, vocab_size=200)
    torch.manual_seed(123)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))
    t5.save_pretrained(folder)
    tok.save_pretrained(folder)


def fixed_batch(data: Path, folder: Path) -> dict:
    standards = load_standards(data / "standard.pkl")
    records = load_records(data / "test.pkl", standards=standards)
    dataset = MotionTextDataset(records, standards=standards, reference=True, train=False)
    return Collator(load_tokenizer(str(folder)), max_target_len=32)([dataset[i] for i in range(len(dataset))])


def copy_to_pretrain(src: Path, run: Path) -> None:
    (run / "pretrain_checkpoints").mkdir(parents=True)
    shutil.copy(src, run / "pretrain_checkpoints" / "best.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    results = tmp_path_factory.mktemp("pretrained_lora")
    data = results / "synthetic_data"
    synthetic.write(data, seed=0, mode="coach", train_per_kind=2, test_per_kind=1)  # what the runs generate
    folder = results / "local_t5"
    save_pretrained_folder(folder, data)
    w = World(results, folder, fixed_batch(data, folder), {}, results / "lora_export")
    # plain: T5 from the folder; stop after epoch 1, resume, finish; --eval_only
    w.shots["plain_1"] = run_probed(w.args("plain") + ["--stop_after_epoch", "1"], w.batch)
    w.shots["plain_2"] = run_probed(w.args("plain"), w.batch)
    w.shots["plain_eval"] = run_probed(w.args("plain") + ["--eval_only"], w.batch)
    # lora: finetuned from plain's best.pt in pretrain_checkpoints/; stop after step 3, resume; --eval_only
    copy_to_pretrain(w.run("plain") / "checkpoints" / "best.pt", w.run("lora"))
    w.shots["lora_1"] = run_probed(w.args("lora", LORA) + ["--stop_after_step", "3"], w.batch)
    w.shots["lora_2"] = run_probed(w.args("lora", LORA), w.batch)
    w.shots["lora_eval"] = run_probed(w.args("lora", LORA) + ["--eval_only"], w.batch)
    assert export.main(["--run", str(w.run("lora")), "--out", str(w.export_dir)]) == 0
    return w


def finetune(w: World, name: str, *extra: str, source: Path | None = None) -> dict[str, Any]:
    """One step of a finetuning run (then it stops): the probes of the model as loaded."""
    if source is not None:
        copy_to_pretrain(source, w.run(name))
    return run_probed(w.args(name, *extra) + ["--stop_after_step", "1"], w.batch)


# ============================================================================ 1. pretrained ==
def test_the_local_pretrained_t5_is_loaded_as_saved_before_the_first_step(world):
    from transformers import T5ForConditionalGeneration

    saved = T5ForConditionalGeneration.from_pretrained(world.folder).state_dict()
    first = world.shots["plain_1"]["first_step"]
    t5_state = {k[len("t5."):]: v for k, v in first.items() if k.startswith("t5.")}
    assert t5_state.keys() == saved.keys()
    assert all(torch.equal(t5_state[k], saved[k]) for k in saved)
    log = (world.run("plain") / "train.log").read_text()
    assert "no LoRA; frozen: nothing" in log and "parameters: " in log and " trainable of " in log
    # the run's tokenizer is the folder's: checkpoints carry its files
    stored = load_checkpoint(world.run("plain") / "checkpoints" / "best.pt")["tokenizer"]
    assert json.loads(stored["tokenizer.json"])["model"] == json.loads(
        (world.folder / "tokenizer.json").read_text())["model"]


def test_finetuning_with_lora_from_the_pretrained_run_starts_from_its_weights(world):
    first = world.shots["lora_1"]["first_step"]
    source = load_checkpoint(world.run("plain") / "checkpoints" / "best.pt")["model"]
    plain = {lora.plain_name(k): v for k, v in first.items() if lora.plain_name(k) is not None}
    assert plain.keys() == source.keys()
    assert all(torch.equal(plain[k], source[k]) for k in source)
    assert all(not v.any() for k, v in first.items() if "lora_B" in k)  # fresh adapters: B = 0
    same(world.best("plain"), world.shots["lora_1"]["finetuned"])  # LoRA from plain: exact
    log = (world.run("lora") / "train.log").read_text()
    assert "LoRA r=4 alpha=32 on q,v,wi" in log and "fresh LoRA adapter tensors (B = 0" in log
    assert "finetune: missing (kept at init): none" in log


# ============================================================================ 2. reloads =====
def test_resume_gives_the_model_that_was_saved(world):
    same(world.shots["plain_1"]["saved"], world.shots["plain_2"]["resumed"])  # after epoch 1
    same(world.shots["lora_1"]["saved"], world.shots["lora_2"]["resumed"])  # mid-epoch, with adapters
    state = load_checkpoint(world.run("lora") / "checkpoints" / "last.pt")
    assert state["t5"]["lora"]["r"] == 4 and lora.has_adapters(state["model"])


def test_the_trained_adapters_matter(world):
    """Teeth: merging twice or dropping the adapters would move the logits this much."""
    model, _ = decode.load_model(run=world.run("lora"), device="cpu")[:2]
    with model.t5.disable_adapter():
        without = shoot(model, world.batch)
    best = world.best("lora")
    assert (best.logits - without.logits).abs().max().item() > 100 * export.MERGE_TOLERANCE * max(
        1.0, best.logits.abs().max().item())


def test_eval_only_evaluates_the_model_that_was_saved_as_best(world):
    same(world.best("plain"), world.shots["plain_eval"]["evaluated"])
    same(world.best("lora"), world.shots["lora_eval"]["evaluated"])
    for name in ("plain", "lora"):
        predictions = json.loads((world.run(name) / "predictions" / "test_best.json").read_text())
        assert predictions == world.best(name).captions


@pytest.mark.parametrize("name", ["plain", "lora"])
def test_caption_py_gives_the_saved_model(world, name, capsys):
    run = world.run(name)
    model, _, path = decode.load_model(run=run, device="cpu")
    assert path.name == "best.pt" and lora.is_wrapped(model.t5) == (name == "lora")
    same(world.best(name), shoot(model, world.batch))
    assert caption.main(["--run", str(run), str(run / "data" / "test.pkl"), "--standard",
                         str(run / "data" / "standard.pkl"), "--json", "--max_new_tokens", str(MAX_NEW)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {k: v[0] for k, v in got.items()} == world.best(name).captions


@pytest.mark.parametrize("case", ["plain_from_plain", "plain_from_lora", "lora_from_lora", "plain_from_export"])
def test_finetuning_from_every_kind_of_source_starts_from_that_model(world, case):
    plain_best, lora_best = world.best("plain"), world.best("lora")
    lora_ckpt = world.run("lora") / "checkpoints" / "best.pt"
    if case == "plain_from_plain":  # pretrain_checkpoints/, with two parts frozen
        shots = finetune(world, case, "train.freeze=[encoder, t5_encoder]",
                         source=world.run("plain") / "checkpoints" / "best.pt")
        same(plain_best, shots["finetuned"])
        before, after = shots["first_step"], load_checkpoint(world.run(case) / "checkpoints" / "last.pt")["model"]
        params = [k for k, v in after.items() if v.is_floating_point() and "running_" not in k]
        frozen = [k for k in params if k.startswith(("encoder.", "t5.encoder.")) and "embed_tokens" not in k]
        assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # not moved by the step
        moved = [k for k in params if not torch.equal(after[k], before[k])]
        assert any(k.startswith("projection.") for k in moved) and any(k.startswith("t5.decoder.") for k in moved)
        assert "frozen: encoder, t5_encoder" in (world.run(case) / "train.log").read_text()
    elif case == "plain_from_lora":  # pretrain_checkpoints/: adapters merged once into plain weights
        shots = finetune(world, case, source=lora_ckpt)
        merged_same(lora_best, shots["finetuned"])
        assert "merged once into its T5 weights" in (world.run(case) / "train.log").read_text()
    elif case == "lora_from_lora":  # train.init_from: merged, then fresh adapters of another rank
        shots = finetune(world, case, LORA_OTHER, f"train.init_from={lora_ckpt}")
        merged_same(lora_best, shots["finetuned"])
        last = load_checkpoint(world.run(case) / "checkpoints" / "last.pt")
        assert last["t5"]["lora"]["target_modules"] == ["k", "o"] and lora.has_adapters(last["model"])
    else:  # train.init_from: an export folder (T5 merged when exported)
        shots = finetune(world, case, f"train.init_from={world.export_dir}")
        merged_same(lora_best, shots["finetuned"])
        assert "finetuning source is an export folder (T5 merged)" in (world.run(case) / "train.log").read_text()


# ============================================================================ 3. export ======
def test_export_folder_holds_no_pickle_and_loads_as_the_run_merged(world):
    d = world.export_dir
    manifest = export.read_manifest(d)
    assert manifest["adapters"] == "merged" and manifest["lora"]["r"] == 4
    assert manifest["merge_check"]["max_abs_logit_difference"] <= 1e-4
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert files == ["README.md", "config.yaml", "export.json", "skeleton.safetensors", "t5/config.json",
                     "t5/generation_config.json", "t5/model.safetensors", "tokenizer/tokenizer.json",
                     "tokenizer/tokenizer_config.json"]
    card = (d / "README.md").read_text()
    for text in ("LoRA r=4", "merged into `t5/`", "synthetic data, coach mode", "Validation split at epoch",
                 "test_best_metrics.json", "train_t5_stagcn.py", "model.t5.lora=", "CIDEr"):
        assert text in card, text
    model, cfg = export.load_export(d)
    assert not lora.is_wrapped(model.t5) and cfg.model.t5.lora.r == 4
    merged_same(world.best("lora"), shoot(model, world.batch))
    # the run's own model is untouched by the export: still wrapped, same logits
    again, _, _ = decode.load_model(run=world.run("lora"), device="cpu")
    same(world.best("lora"), shoot(again, world.batch))


def test_export_captions_in_a_subprocess_equal_the_runs(world):
    run = world.run("lora")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "caption.py", "--run", str(world.export_dir), str(run / "data" / "test.pkl"),
                           "--standard", str(run / "data" / "standard.pkl"), "--json", "--max_new_tokens",
                           str(MAX_NEW)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = {k: v[0] for k, v in json.loads(done.stdout).items()}
    assert got == json.loads((run / "predictions" / "test_best.json").read_text())
    assert got == world.best("lora").captions


def test_export_refuses_to_overwrite_and_names_the_folder(world, tmp_path, capsys):
    assert export.main(["--run", str(world.run("lora")), "--out", str(world.export_dir)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert export.main(["--run", str(world.run("plain")), "--out", str(tmp_path / "other")]) == 2
    assert "not an export folder" in capsys.readouterr().err
    assert export.main(["--run", str(world.run("plain")), "--out", str(tmp_path / "plain"), "--ckpt", "last"]) == 0
    assert export.read_manifest(tmp_path / "plain")["adapters"] == "none"
    assert export.main(["--run", str(world.run("plain")), "--out", str(tmp_path / "plain"), "--overwrite"]) == 0
    assert export.read_manifest(tmp_path / "plain")["source"]["checkpoint"].endswith("best.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ============================================================================ hostile files ==
def hostile(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"weights": Payload(marker)}, f)


def test_a_pickle_in_an_export_is_never_run(world, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    beside = tmp_path / "beside"
    shutil.copytree(world.export_dir, beside)
    torch.save({"x": Payload(marker)}, beside / "t5" / "pytorch_model.bin")  # next to model.safetensors
    export.load_export(beside)  # loads from safetensors; the .bin is never opened
    assert not marker.exists()
    instead = tmp_path / "instead"
    shutil.copytree(world.export_dir, instead)
    (instead / "t5" / "model.safetensors").unlink()
    torch.save({"x": Payload(marker)}, instead / "t5" / "pytorch_model.bin")
    with pytest.raises(export.ExportError, match="could not be loaded from safetensors.*pickled weights are not read"):
        export.load_export(instead)
    skeleton = tmp_path / "skeleton"
    shutil.copytree(world.export_dir, skeleton)
    hostile(skeleton / export.SKELETON, marker)
    with pytest.raises(export.ExportError, match="skeleton.safetensors is not a readable safetensors file"):
        export.load_export(skeleton)
    run = world.run("lora")
    assert caption.main(["--run", str(instead), str(run / "data" / "test.pkl")]) == 2
    assert "caption.py: error:" in capsys.readouterr().err
    assert not marker.exists()


def test_finetuning_from_an_export_with_a_pickle_for_weights_is_refused(world, tmp_path):
    marker = tmp_path / "MARKER"
    skeleton = tmp_path / "skeleton"
    shutil.copytree(world.export_dir, skeleton)
    hostile(skeleton / export.SKELETON, marker)
    with pytest.raises(CheckpointError, match="skeleton.safetensors is not a readable safetensors file"):
        trainer.main(world.args("from_hostile_export", f"train.init_from={skeleton}"))
    assert not marker.exists()


def test_a_hostile_checkpoint_is_refused_by_export(world, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    run = tmp_path / "evil_run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}, "x": Payload(marker)}, run / "checkpoints" / "best.pt")
    assert export.main(["--run", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refused, nothing was run" in err and str(run / "checkpoints" / "best.pt") in err
    assert not marker.exists() and not (tmp_path / "out").exists()
