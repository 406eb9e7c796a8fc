"""The captioner end to end: padding invariance, reference branch, prompt, overfitting, offline errors."""
from __future__ import annotations

import copy
import time

import pytest
import torch

from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import load_records, load_standards
from dataloaders import synthetic
from core.hub import ModelSourceError
from dataloaders import tokenizer as tok
from models import text
from models.captioner import Captioner
from models.graph import Graph
from models.projection import Projection
from models.stagcn import STAGCN, MaskedBatchNorm

POLICIES = ("time_pool", "skeleton_pool", "origin")
T5_TINY = dict(d_model=64, d_ff=128, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=4,
               dropout_rate=0.0)


@pytest.fixture(scope="module")
def coach_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    synthetic.write(folder, seed=3, mode="coach", train_per_kind=2, test_per_kind=1)
    standards = load_standards(folder / "standard.pkl")
    records = load_records(folder / "train.pkl", standards=standards)
    return records, standards


@pytest.fixture(scope="module")
def tokenizer(coach_data):
    records, _ = coach_data
    return tok.train_tokenizer([t for r in records for t in r["labels"]], vocab_size=300)


def make_captioner(tokenizer, policy="time_pool", reference="none", prompt="", channels=(16, 32),
                   strides=(1, 2), t5=None) -> Captioner:
    torch.manual_seed(0)
    encoder = STAGCN(in_channels=6, graph=Graph("smpl22"), channels=channels, strides=strides,
                     temporal_kernel=5, num_attention_graphs=2)
    t5_model = text.build_t5(tokenizer, config=t5 or T5_TINY)
    width = encoder.out_channels * (2 if reference == "subtract" else 1)
    projection = Projection(width, t5_model.config.d_model, policy=policy)
    return Captioner(encoder, projection, t5_model, tokenizer, reference=reference, prompt=prompt)


@pytest.mark.parametrize("reference", ["none", "subtract"])
@pytest.mark.parametrize("policy", POLICIES)
def test_a_clip_alone_equals_the_same_clip_padded_in_a_batch(coach_data, tokenizer, policy, reference):
    records, standards = coach_data
    ds = MotionTextDataset(records, standards, segment="aligned", reference=reference == "subtract",
                           train=False)
    collate = Collator(tokenizer)
    model = make_captioner(tokenizer, policy, reference).eval()
    lengths = [ds[i]["features"].shape[1] for i in range(len(ds))]
    short = min(range(len(ds)), key=lambda i: lengths[i])
    long = max(range(len(ds)), key=lambda i: lengths[i])
    assert lengths[short] < lengths[long]
    with torch.no_grad():
        alone, alone_mask = model.encode(collate([ds[short]]))
        batch, batch_mask = model.encode(collate([ds[long], ds[short]]))
        loss_alone = model(collate([ds[short]]))
        loss_batched = model(collate([ds[short], ds[short]]))
    n_valid = int(alone_mask[0].sum())
    assert int(batch_mask[1].sum()) == n_valid
    torch.testing.assert_close(batch[1][batch_mask[1].bool()], alone[0][alone_mask[0].bool()],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_alone, loss_batched, atol=1e-5, rtol=1e-5)


def test_reference_branch_uses_the_standard_and_first_frame_without_one(coach_data, tokenizer):
    records, standards = coach_data
    ds = MotionTextDataset(records[:4], standards, segment="aligned", reference=True, train=False)
    collate = Collator(tokenizer)
    model = make_captioner(tokenizer, reference="subtract").eval()
    batch = collate([ds[i] for i in range(4)])
    assert batch["std_x"] is not None
    with torch.no_grad():
        with_std, _ = model.encode(batch)
        without = dict(batch, std_x=None)
        no_std, _ = model.encode(without)
        # stand-in for pretraining: the first frame repeated over time, built without a loop
        first = dict(batch, std_x=batch["x"][:, :, :1].repeat(1, 1, batch["x"].shape[2], 1))
        repeated, _ = model.encode(first)
    assert not torch.allclose(with_std, no_std)
    torch.testing.assert_close(no_std, repeated)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_standards_features_carry_no_gradient(coach_data, tokenizer, mode):
    """No gradient reaches the standard's input, neither in eval mode nor in training (where the
    joint batch's BatchNorm statistics connect the two: the standard's share is a constant)."""
    records, standards = coach_data
    ds = MotionTextDataset(records[:3], standards, segment="aligned", reference=True)
    batch = Collator(tokenizer)([ds[i] for i in range(3)])
    model = make_captioner(tokenizer, reference="subtract")
    getattr(model, mode)()
    x, std = batch["x"].clone().requires_grad_(True), batch["std_x"].clone().requires_grad_(True)
    model(dict(batch, x=x, std_x=std)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert std.grad is None or std.grad.abs().sum() == 0


# ---------------------------------------------------------------- the standard's pass (issue 27) --
def reference_batch(coach_data, tokenizer, count=4) -> dict:
    records, standards = coach_data
    ds = MotionTextDataset(records[:count], standards, segment="aligned", reference=True, train=False)
    batch = Collator(tokenizer)([ds[i] for i in range(count)])
    assert batch["std_x"] is not None and not batch["mask"].all()  # standards, and some padding
    return batch


def as_one_batch(model: Captioner) -> Captioner:
    """The former computation: the encoder runs learner and standard as one batch, gradient in
    every row (``no_grad_rows`` ignored)."""
    forward = model.encoder.forward
    model.encoder.forward = lambda x, mask=None, no_grad_rows=0: forward(x, mask)
    return model


def test_reference_branch_eval_logits_equal_the_one_batch_computation(coach_data, tokenizer):
    """Eval mode: the logits are those of an explicit computation (learner and standard through the
    encoder as one batch, their feature difference, projection, T5), bit for bit at inference
    (no gradient) and up to rounding with gradient enabled (the standard's rows apart)."""
    batch = reference_batch(coach_data, tokenizer)
    model = make_captioner(tokenizer, reference="subtract")
    model.train()
    with torch.no_grad():
        model(batch)  # running statistics that are not the identity
    model.eval()
    n = batch["x"].shape[0]
    with torch.no_grad():
        both = torch.cat([batch["x"], batch["std_x"]])  # (2N, C, T, V)
        feats, feat_mask, _ = model.encoder(both, torch.cat([batch["mask"], batch["mask"]]))
        tokens, token_mask = model.projection(torch.cat([feats[:n], feats[:n] - feats[n:]], dim=-1), feat_mask[:n])
        expected = model.t5(inputs_embeds=tokens, attention_mask=token_mask.long(), labels=batch["labels"]).logits

    def logits() -> torch.Tensor:
        embeds, attn = model.encode(batch)
        return model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"]).logits

    with torch.no_grad():
        assert torch.equal(logits(), expected)
    with_grad = logits()
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), expected, rtol=1e-6, atol=1e-6)


def test_reference_branch_training_forward_equals_the_one_batch_computation(coach_data, tokenizer):
    """Training: the same tokens as the former one-batch encoder (the joint statistics are the same
    numbers, summed in another order: the one-batch computation itself moves as much, ~1e-6 of
    the scale, when its rows are permuted) and the same running statistics after the step."""
    batch = reference_batch(coach_data, tokenizer)
    model = make_captioner(tokenizer, reference="subtract").train()  # no dropout anywhere
    former = as_one_batch(copy.deepcopy(model))
    got, got_mask = model.encode(batch)
    expected, expected_mask = former.encode(batch)
    assert got.requires_grad and torch.equal(got_mask, expected_mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    buffers = dict(former.encoder.named_buffers())
    for name, buffer in model.encoder.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=1e-5, atol=1e-6, msg=name)
    assert all(int(b) == 1 for name, b in model.encoder.named_buffers() if name.endswith("num_batches_tracked"))


def test_no_gradient_reaches_the_encoder_through_the_standard(coach_data, tokenizer):
    """'Through the standard' means along a path that passes the standard's activations. In the
    one-batch computation the standard's rows meet the learner's only in BatchNorm's statistics
    (convolutions, graph convolutions and attention graphs are per sample; the feature difference
    is detached), so the expected gradient is the one-batch gradient with the standard's rows
    detached at every BatchNorm input. The former one-batch gradient (without that) differs:
    through the statistics it reached the encoder's weights by way of the standard's rows."""
    batch = reference_batch(coach_data, tokenizer)
    n = batch["x"].shape[0]
    model = make_captioner(tokenizer, reference="subtract").train()
    detached, former = as_one_batch(copy.deepcopy(model)), as_one_batch(copy.deepcopy(model))
    for bn in [m for m in detached.encoder.modules() if isinstance(m, MaskedBatchNorm)]:
        def standard_constant(xs, masks, parts=bn.forward_parts):
            (x,) = xs  # one batch: learner rows, then standard rows
            return parts([torch.cat([x[:n], x[n:].detach()])], masks)
        bn.forward_parts = standard_constant

    def gradients(m: Captioner) -> dict[str, torch.Tensor]:
        m(batch).backward()
        return {name: p.grad for name, p in m.encoder.named_parameters()}

    got, expected, before = gradients(model), gradients(detached), gradients(former)
    scale = max(g.abs().max() for g in expected.values())
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)
    assert any(not torch.allclose(before[name], g, rtol=1e-3, atol=1e-3 * scale) for name, g in expected.items())


def test_the_standards_pass_records_no_autograd_graph(coach_data, tokenizer):
    """In a training step every convolution of the encoder runs twice, on the learner's rows with
    gradient and on the standard's rows without (no graph kept, nothing to do in the backward)."""
    batch = reference_batch(coach_data, tokenizer)
    model = make_captioner(tokenizer, reference="subtract").train()
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    calls = []
    for conv in convs:
        conv.register_forward_hook(lambda m, args, out: calls.append((m, args[0].shape[0], out.requires_grad)))
    model(batch).backward()
    n = batch["x"].shape[0]
    assert len(calls) == 2 * len(convs)
    for conv in convs:
        assert sorted(grad for m, rows, grad in calls if m is conv and rows == n) == [False, True]


def test_prompt_is_placed_before_the_motion_tokens(coach_data, tokenizer):
    records, _ = coach_data
    ds = MotionTextDataset(records[:2], train=False)
    batch = Collator(tokenizer)([ds[0], ds[1]])
    plain = make_captioner(tokenizer).eval()
    prompted = make_captioner(tokenizer, prompt="the person").eval()
    prompted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, a_mask = plain.encode(batch)
        b, b_mask = prompted.encode(batch)
    n_prompt = len(tokenizer("the person", add_special_tokens=False)["input_ids"])
    assert n_prompt > 0 and b.shape[1] == a.shape[1] + n_prompt
    torch.testing.assert_close(b[:, n_prompt:], a)
    expected = plain.t5.get_input_embeddings()(prompted.prefix_ids)
    torch.testing.assert_close(b[0, :n_prompt], expected)
    assert b_mask[:, :n_prompt].all()


def test_labels_padding_is_ignored_by_the_loss(coach_data, tokenizer):
    records, _ = coach_data
    ds = MotionTextDataset(records[:2], train=False)
    batch = Collator(tokenizer)([ds[0], ds[1]])
    assert (batch["labels"] == -100).any()  # two texts of different lengths
    model = make_captioner(tokenizer).eval()
    with torch.no_grad():
        loss = model(batch)
        embeds, attn = model.encode(batch)
        logits = model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"]).logits
    keep = batch["labels"] != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep])
    torch.testing.assert_close(loss, manual)


def test_label_smoothing_equals_a_hand_written_mixture(coach_data, tokenizer):
    """train.label_smoothing e: per real target token (1 - e) * -log p(target) + e * mean over the
    vocabulary of -log p(w), averaged over the real tokens; e = 0 is the plain loss."""
    records, _ = coach_data
    ds = MotionTextDataset(records[:3], train=False)
    batch = Collator(tokenizer)([ds[i] for i in range(3)])
    model = make_captioner(tokenizer).eval()
    with torch.no_grad():
        plain = model(batch)
        model.label_smoothing = 0.2
        smoothed = model(batch)
        embeds, attn = model.encode(batch)
        logp = model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"]).logits.double().log_softmax(-1)
    terms = []
    for n in range(batch["labels"].shape[0]):
        for t in range(batch["labels"].shape[1]):
            target = int(batch["labels"][n, t])
            if target == -100:
                continue
            terms.append(0.8 * -logp[n, t, target] + 0.2 * -logp[n, t].mean())
    torch.testing.assert_close(smoothed.double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)
    plain_terms = [-logp[n, t, int(y)] for n in range(logp.shape[0]) for t, y in enumerate(batch["labels"][n])
                   if int(y) != -100]
    torch.testing.assert_close(plain.double(), torch.stack(plain_terms).mean(), rtol=1e-5, atol=1e-6)


def test_tiny_captioner_overfits_eight_clips(coach_data, tokenizer):
    records, standards = coach_data
    ds = MotionTextDataset(records[:8], standards, segment="aligned", reference=True, train=False)
    batch = Collator(tokenizer)([ds[i] for i in range(8)])
    model = make_captioner(tokenizer, reference="subtract", channels=(32, 64),
                           t5=dict(T5_TINY, d_model=128, d_ff=256, d_kv=32, num_layers=2,
                                   num_decoder_layers=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    start = time.perf_counter()
    for step in range(400):
        loss = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    elapsed = time.perf_counter() - start
    print(f"overfit: final loss {loss.item():.4f} after {step + 1} steps, {elapsed:.1f} s")
    assert loss.item() < 0.1
    # BatchNorm's running statistics trail the fast-moving weights of this short, high-rate run:
    # set them to the training batch's own statistics (momentum 1, one pass) before eval.
    for bn in [m for m in model.modules() if hasattr(m, "running_mean")]:
        bn.momentum = 1.0
    with torch.no_grad():
        model(batch)
    model.eval()
    with torch.no_grad():
        assert model(batch).item() < 0.1  # eval mode reads the clips as training did
    generated = model.generate(batch, max_new_tokens=48)
    assert generated == [t.strip() for t in batch["texts"]]


def test_uncached_hub_name_offline_fails_with_a_clear_message(monkeypatch, tokenizer):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as a user offline would set it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelSourceError, match="train from scratch"):
        text.build_t5(tokenizer, name="motion2text-no-such-model/t5-nothing")
    with pytest.raises(ModelSourceError, match="model.tokenizer.name"):
        tok.load_tokenizer("motion2text-no-such-model/t5-nothing")


def test_trained_tokenizer_round_trips_and_ids_agree_with_t5(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    again = tok.load_tokenizer(str(tmp_path))
    sample = "the left elbow drops during the jab"
    assert again(sample)["input_ids"] == tokenizer(sample)["input_ids"]
    t5 = text.build_t5(again, config=T5_TINY)
    text.check_special_ids(t5, again)
    assert t5.config.decoder_start_token_id == again.pad_token_id
    assert again(sample)["input_ids"][-1] == again.eos_token_id


def test_reference_branch_normalises_alike_in_training_and_inference(coach_data, tokenizer):
    """Learner and standard share one BatchNorm normalisation: once the running statistics hold
    the training batch's own (momentum 1, one training pass), eval mode gives the tokens training
    gave. A standard pass of its own in train mode would leave the standard's statistics behind
    and normalise the learner with them at inference."""
    records, standards = coach_data
    ds = MotionTextDataset(records[:6], standards, segment="aligned", reference=True, train=False)
    batch = Collator(tokenizer)([ds[i] for i in range(6)])
    model = make_captioner(tokenizer, reference="subtract")  # no dropout anywhere
    for bn in [m for m in model.modules() if hasattr(m, "running_mean")]:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        trained, _ = model.encode(batch)  # (N, L, D); running statistics := this batch's
    model.eval()
    with torch.no_grad():
        inferred, _ = model.encode(batch)
    torch.testing.assert_close(inferred, trained, rtol=1e-2, atol=1e-2)  # unbiased running variance
