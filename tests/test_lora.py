"""LoRA adapters and train.freeze on a tiny captioner built in memory (no training run).

Checked here: the config keys and their errors; peft's key names and what requires a gradient;
fresh adapters leave the output unchanged; merging (always on a copy) gives the unmerged logits
within the stated tolerance and can happen only once; finetuning weights move between plain and
LoRA models with the expected logits; a checkpoint whose adapters and config disagree is refused;
each freeze key leaves exactly its parameters without gradient.
"""
from __future__ import annotations

import pytest
import torch

from configs import schema
from configs.schema import ConfigError, load_config
from models import export, lora
from dataloaders.tokenizer import tokenizer_files_of
from models.build import build_model, model_from_payload, parameter_counts
from dataloaders.tokenizer import train_tokenizer
from training import freeze
from core.io import CheckpointError
from training.finetune import load_finetune_weights
from training.run import config_differences

TINY = ["model.encoder.channels=[8,16]", "model.encoder.strides=[1,2]", "model.encoder.num_attention_graphs=1",
        "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 2, num_decoder_layers: 2, num_heads: 4}",
        "model.reference=subtract", 'model.prompt="Motion Instruction : "']
LORA = "model.t5.lora={r: 4, alpha: 32, dropout: 0.0, target_modules: [q, v, wi]}"
TEXTS = ["the left elbow drops", "raise the right arm higher", "bend the knees more in the squat",
         "the jump is too low", "keep the guard up after the jab", "turn the hips into the cross"] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=120)


def captioner(tokenizer, *extra: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_config(None, [*TINY, *extra]), tokenizer)


def batch_of(tokenizer, n: int = 3, frames: int = 16) -> dict:
    gen = torch.Generator().manual_seed(1)
    labels = tokenizer(TEXTS[:n], padding="longest", return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    mask = torch.ones(n, frames, dtype=torch.bool)
    mask[0, frames - 4:] = False
    return {"x": torch.randn(n, 6, frames, 22, generator=gen), "mask": mask, "labels": labels,
            "std_x": torch.randn(n, 6, frames, 22, generator=gen)}


@torch.no_grad()
def logits_of(model, batch: dict) -> torch.Tensor:
    model.eval()
    embeds, attn = model.encode(batch)
    return model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"], use_cache=False).logits


def perturb_adapters(model, seed: int = 3) -> None:
    """Adapters as after training (B != 0), so that merging them matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def within_merge_tolerance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max |a - b|, asserted <= export.MERGE_TOLERANCE * max(1, max |a|) (the stated tolerance)."""
    diff = (a - b).abs().max().item()
    assert diff <= export.MERGE_TOLERANCE * max(1.0, a.abs().max().item()), diff
    return diff


# ============================================================================ config ========
def test_defaults_are_off_and_settings_round_trip():
    cfg = load_config(None)
    assert cfg.train.freeze == [] and cfg.model.t5.lora.r == 0
    assert lora.lora_settings(cfg.model.t5.lora) is None
    cfg = load_config(None, [LORA, "train.freeze=[encoder, embeddings]"])
    assert lora.lora_settings(cfg.model.t5.lora) == {"r": 4, "alpha": 32.0, "dropout": 0.0,
                                                     "target_modules": ["q", "v", "wi"]}
    assert schema.from_dict(schema.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    (["train.freeze=[encoder, decoder]"], "train.freeze[1]: expected one of encoder, projection, t5_encoder, "
                                          "t5_decoder, embeddings, found 'decoder'"),
    (["train.freeze=encoder"], "train.freeze: expected a list, found str 'encoder'"),
    (["model.t5.lora.target_modules=[q, query]"], "model.t5.lora.target_modules[1]: expected one of q, k, v, o, "
                                                  "wi, wo, wi_0, wi_1 (T5's linear layers), found 'query'"),
    (["model.t5.lora.r=-2"], "model.t5.lora.r: expected a number >= 0, found -2"),
    (["model.t5.lora.alpha=0"], "model.t5.lora.alpha: expected a positive number, found 0.0"),
    (["model.t5.lora.dropout=1.5"], "model.t5.lora.dropout: expected a number in [0, 1), found 1.5"),
    (["model.t5.lora.r=8", "model.t5.lora.target_modules=[]"], "model.t5.lora.target_modules: expected at least one"),
    (["model.t5.lora.rank=8"], "unknown config key 'model.t5.lora.rank'; allowed keys here: r, alpha, dropout, "
                               "target_modules"),
])
def test_bad_values_name_the_key_the_value_and_what_was_expected(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert message in str(err.value)


def test_a_config_saved_before_these_keys_existed_is_not_another_config():
    new = schema.to_dict(load_config(None))
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in new.items()}
    old["train"] = {k: v for k, v in new["train"].items() if k != "freeze"}
    old["model"] = dict(new["model"], t5={k: v for k, v in new["model"]["t5"].items() if k != "lora"})
    defaults = schema.to_dict(schema.Config())
    assert config_differences(old, new, defaults=defaults) == []
    changed = schema.to_dict(load_config(None, [LORA]))
    assert config_differences(old, changed, defaults=defaults) == ["model.t5.lora.alpha: 16.0 -> 32.0",
                                                                  "model.t5.lora.dropout: 0.05 -> 0.0",
                                                                  "model.t5.lora.r: 0 -> 4",
                                                                  "model.t5.lora.target_modules: ['q', 'v'] -> "
                                                                  "['q', 'v', 'wi']"]


# ============================================================================ wrapping ======
def test_wrapping_names_and_gradients(tokenizer):
    plain, wrapped = captioner(tokenizer), captioner(tokenizer, LORA)
    keys = set(wrapped.state_dict())
    adapters = sorted(k for k in keys if lora.plain_name(k) is None)
    # 2 + 2 layers: q and v in every attention (2 encoder self, 2 decoder self, 2 cross) and wi in 4 FFNs
    assert len(adapters) == 2 * (2 * 6 + 4)
    assert "t5.base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.default.weight" in adapters
    assert "t5.base_model.model.encoder.block.0.layer.0.SelfAttention.q.base_layer.weight" in keys
    assert {lora.plain_name(k) for k in keys} - {None} == set(plain.state_dict())
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("t5.")} == set(adapters)
    assert {n for n in trainable if not n.startswith("t5.")} == {n for n, _ in plain.named_parameters()
                                                                  if not n.startswith("t5.")}
    record = lora.t5_record(wrapped)
    assert record["lora"] == {"r": 4, "alpha": 32.0, "dropout": 0.0, "target_modules": ["q", "v", "wi"]}
    assert record["config"]["d_model"] == 32 and lora.t5_record(plain)["lora"] is None


def test_fresh_adapters_leave_the_output_unchanged_and_trained_ones_change_it(tokenizer):
    plain, wrapped = captioner(tokenizer), captioner(tokenizer)
    load_finetune_weights(wrapped, plain.state_dict(), "memory")  # plain into plain: same weights
    wrapped.t5 = lora.wrap(wrapped.t5, {"r": 4, "alpha": 32.0, "dropout": 0.0, "target_modules": ["q", "v"]})
    batch = batch_of(tokenizer)
    assert torch.equal(logits_of(plain, batch), logits_of(wrapped, batch))  # B = 0: exactly the same
    perturb_adapters(wrapped)
    assert (logits_of(plain, batch) - logits_of(wrapped, batch)).abs().max() > 0.05


def test_merging_gives_the_unmerged_logits_on_a_copy_and_only_once(tokenizer):
    model = captioner(tokenizer, LORA)
    perturb_adapters(model)
    batch = batch_of(tokenizer)
    before = logits_of(model, batch)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    merged_t5 = lora.merged_t5(model.t5)
    assert not lora.is_wrapped(merged_t5) and lora.is_wrapped(model.t5)
    # the live model is untouched: still wrapped, same tensors, same logits
    assert all(torch.equal(state_before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits_of(model, batch), before)
    merged = build_model(load_config(None, TINY), tokenizer, t5=merged_t5)
    merged.load_state_dict(lora.plain_state_dict(model))
    diff = within_merge_tolerance(before, logits_of(merged, batch))
    assert diff < 1e-4  # float32; observed about 1e-6 on this model
    # merged twice would add the adapters again: that moves the logits by far more than the tolerance
    with torch.no_grad():
        with model.t5.disable_adapter():
            base = logits_of(model, batch)
    assert (before - base).abs().max() > 1000 * diff
    # a merged T5 has nothing left to merge: "merging" it again is a plain copy
    again = lora.merged_t5(merged.t5)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), merged.t5.state_dict().values()))
    with pytest.raises(ValueError, match="already carries LoRA adapters"):
        lora.wrap(model.t5, lora.lora_settings(load_config(None, [LORA]).model.t5.lora))


@pytest.mark.parametrize("source_lora, target_lora", [(False, True), (True, False), (True, True)])
def test_finetuning_weights_move_between_plain_and_lora_models(tokenizer, source_lora, target_lora):
    source = captioner(tokenizer, *([LORA] if source_lora else []), seed=0)
    if source_lora:
        perturb_adapters(source)
    target = captioner(tokenizer, *(["model.t5.lora={r: 2, target_modules: [k, o]}"] if target_lora else []), seed=5)
    batch = batch_of(tokenizer)
    incoming = lora.plain_state_dict(source)  # what training.finetune.load_init_source hands over
    assert not lora.has_adapters(incoming)
    load_finetune_weights(target, incoming, "memory")
    expected, got = logits_of(source, batch), logits_of(target, batch)
    if source_lora:
        within_merge_tolerance(expected, got)
    else:
        assert torch.equal(expected, got)  # plain weights and fresh adapters (B = 0): exactly equal
    with pytest.raises(ValueError, match="still hold LoRA adapters"):
        load_finetune_weights(target, captioner(tokenizer, LORA).state_dict(), "memory")


def test_a_checkpoint_is_rebuilt_with_its_wrapping_and_refused_when_it_disagrees(tokenizer):
    model = captioner(tokenizer, LORA)
    perturb_adapters(model)
    cfg = load_config(None, [*TINY, LORA])
    payload = {"model": model.state_dict(), "config": schema.to_dict(cfg), "tokenizer": tokenizer_files_of(tokenizer),
               "t5": lora.t5_record(model)}
    again, _ = model_from_payload(payload, "ckpt.pt")
    batch = batch_of(tokenizer)
    assert lora.is_wrapped(again.t5) and torch.equal(logits_of(model, batch), logits_of(again, batch))
    # adapters in the weights but LoRA off in the config: refused, not loaded partially
    off = schema.to_dict(load_config(None, TINY))
    with pytest.raises(CheckpointError, match="hold LoRA adapter tensors but the config has model.t5.lora.r=0"):
        model_from_payload({**payload, "config": off, "t5": {**payload["t5"], "lora": None}}, "ckpt.pt")
    with pytest.raises(CheckpointError, match="its T5 record says LoRA None"):
        model_from_payload({**payload, "t5": {**payload["t5"], "lora": None}}, "ckpt.pt")
    # the adapters are never dropped silently: one missing tensor fails the strict load
    partial = {k: v for k, v in payload["model"].items() if "block.1.layer.0.SelfAttention.v.lora_B" not in k}
    with pytest.raises(RuntimeError, match="lora_B"):
        model_from_payload({**payload, "model": partial}, "ckpt.pt")


# ============================================================================ freezing ======
EMBEDDING_NAMES = {"t5.shared.weight", "t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight",
                   "t5.lm_head.weight"}


def expected_frozen(names: list[str], part: str) -> set[str]:
    """The parameter names of a part, by name alone (independent of training.freeze)."""
    if part in ("encoder", "projection"):
        return {n for n in names if n.startswith(part + ".")}
    if part == "embeddings":
        return EMBEDDING_NAMES & set(names)
    stack = "t5.encoder." if part == "t5_encoder" else "t5.decoder."
    return {n for n in names if n.startswith(stack) and n not in EMBEDDING_NAMES}


@pytest.mark.parametrize("part", freeze.FREEZE_PARTS)
def test_each_freeze_key_leaves_exactly_its_parameters_without_gradient(tokenizer, part):
    model = captioner(tokenizer)
    assert model.t5.lm_head.weight is model.t5.shared.weight  # tied, as in t5-small / t5-base
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    freeze.apply_freeze(model, [part])
    frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    assert frozen == expected_frozen(names, part) and frozen
    model.train()
    model(batch_of(tokenizer)).backward()
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in frozen:
            assert p.grad is None, name
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("projection."))\
        or part == "projection"
    trainable, total = parameter_counts(model)
    frozen_count = sum(p.numel() for p in freeze.part_parameters(model, part))
    assert trainable == total - frozen_count
    assert f"{trainable:,} trainable of {total:,}" in freeze.describe(model, [part])


def test_freezing_with_lora_reaches_the_adapters_of_the_named_stack(tokenizer):
    model = captioner(tokenizer, LORA)
    freeze.apply_freeze(model, ["t5_encoder", "encoder"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".decoder." in n and ".lora_" in n or n.startswith("projection.") for n in trainable)
    assert any(".decoder." in n for n in trainable) and any(n.startswith("projection.") for n in trainable)
    assert "LoRA r=4 alpha=32 on q,v,wi; frozen: t5_encoder, encoder" in freeze.describe(model, ["t5_encoder", "encoder"])
    with pytest.raises(ValueError, match="leaves no parameter to train .LoRA already freezes"):
        freeze.apply_freeze(model, ["t5_decoder", "projection"])



def test_attention_pictures_read_through_the_lora_wrapper(tokenizer):
    from inference import pictures

    model = captioner(tokenizer, LORA)
    perturb_adapters(model)
    batch = {**batch_of(tokenizer), "video_names": ["a", "b", "c"]}
    batch["lengths"] = batch["mask"].sum(dim=1)
    for beams in (1, 2):
        clips = pictures.clip_attention(model, batch, max_new_tokens=3, num_beams=beams)
        assert [c.video_name for c in clips] == ["a", "b", "c"]
        assert all(c.cross.shape[1] == 22 and torch.isfinite(torch.from_numpy(c.cross)).all() for c in clips)
