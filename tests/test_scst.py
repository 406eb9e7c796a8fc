"""Self-critical sequence training (training/scst.py, Captioner.self_critical_loss, the trainer's
stage): rewards against pycocoevalcap's CIDEr-D, the leave-one-out baseline by hand, sequence
log-probabilities against T5's own loss, the sign of the gradient, and a stop in the middle of the
stage resumed to the same weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

import train_t5_stagcn as trainer
from tests.test_train import assert_same_weights, model_state, tiny
from training import scst
from core.io import load_checkpoint


def test_rewards_equal_pycocoevalcap_with_the_end_word():
    rng = np.random.default_rng(0)
    words = ["guard", "up", "hips", "rotate", "more", "back", "foot", "lift", "keep", "your"]
    references = [[" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(3)] for _ in range(4)]
    samples = 3
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(4 * samples)]
    ended = [bool(i % 2) for i in range(len(texts))]
    got = scst.rewards(texts, ended, references, samples, scst.reward_corpus(references))  # (4, 3)
    for k in range(samples):  # pycocoevalcap: document frequencies from the 4 clips' references
        gts = {i: [f"{t} {scst.EOS_WORD}" for t in refs] for i, refs in enumerate(references)}
        res = {i: [texts[i * samples + k] + (f" {scst.EOS_WORD}" if ended[i * samples + k] else "")]
               for i in range(4)}
        _, expected = Cider().compute_score(gts, res)
        np.testing.assert_allclose(got[:, k], expected, rtol=0, atol=1e-9)


def test_leave_one_out_advantages_by_hand():
    adv = scst.leave_one_out_advantages(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]))
    np.testing.assert_allclose(adv, [[-1.5, 0.0, 1.5], [-2.0, -2.0, 4.0]])
    np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-12)


@pytest.fixture
def small_model():
    from configs import schema
    from dataloaders import tokenizer as text
    from models.build import build_model

    tok = text.train_tokenizer(["keep your guard up", "rotate the hips more", "lift the back foot"] * 20, 120)
    cfg = schema.load_config(None, ["model.encoder.channels=[8,16]", "model.encoder.strides=[1,2]",
                                    "model.encoder.num_attention_graphs=1", "model.projection.dropout=0",
                                    "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, "
                                    "num_decoder_layers: 1, num_heads: 4, dropout_rate: 0.0}"])
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    batch = {"x": torch.randn(2, 6, 12, 22), "mask": torch.ones(2, 12, dtype=torch.bool)}
    return model, batch


def test_sequence_log_probs_equal_t5s_own_loss_and_ignore_tokens_after_the_end(small_model):
    model, batch = small_model
    eos = model.t5.config.eos_token_id
    sampled = torch.tensor([[0, 7, 9, 11, eos], [0, 5, eos, 0, 0]])  # 1 sample per clip, start token first
    embeds, attn = model.encode(batch)
    with torch.no_grad():
        got = model.sequence_log_probs(embeds, attn, sampled)
        for i, n in enumerate((4, 2)):  # tokens through the first EOS
            labels = sampled[i:i + 1, 1:1 + n]
            loss = model.t5(inputs_embeds=embeds[i:i + 1], attention_mask=attn[i:i + 1], labels=labels).loss
            torch.testing.assert_close(got[i], -loss * n, rtol=1e-5, atol=1e-5)
        garbage = sampled.clone()
        garbage[1, 3:] = torch.tensor([8, 9])  # after the EOS: must not count
        torch.testing.assert_close(model.sequence_log_probs(embeds, attn, garbage), got)


def test_a_sample_above_its_baseline_gains_probability(small_model):
    model, batch = small_model
    eos = model.t5.config.eos_token_id
    sampled = torch.tensor([[0, 7, 9, eos], [0, 12, 13, eos]] * 2)  # 2 samples for each of the 2 clips
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        before = model.sequence_log_probs(*model.encode(batch), sampled)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = model({**batch, "sampled_ids": sampled, "advantages": advantages})
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model.sequence_log_probs(*model.encode(batch), sampled)
    change = (after - before).tolist()
    assert change[0] > 0 and change[2] > 0  # advantage +1: more probable
    assert change[1] < 0 and change[3] < 0  # advantage -1: less probable


def scst_args(tmp_path, name):
    return tiny(tmp_path, name, "train.epochs=1", "train.scst.epochs=2", "train.scst.batch_size=4",
                "train.scst.samples=3", "train.scst.max_new_tokens=6", "train.scst.lr=1e-3")


def test_the_stage_runs_from_best_and_a_stop_inside_it_resumes_exactly(tmp_path):
    trainer.main(scst_args(tmp_path, "straight"))
    straight = tmp_path / "straight"
    log_text = (straight / "train.log").read_text()
    assert "self-critical stage starts from best.pt" in log_text
    lines = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]  # cross-entropy epoch 1, self-critical 2 and 3
    state = load_checkpoint(straight / "checkpoints" / "last.pt")["state"]
    assert (state["stage"], state["scst_start"], state["epoch"]) == ("scst", 1, 3)
    # stopped at the second self-critical step, then resumed
    first = lines[0]["step"]  # steps of the cross-entropy epoch
    trainer.main(scst_args(tmp_path, "mid") + ["--stop_after_step", str(first + 2)])
    mid = load_checkpoint(tmp_path / "mid" / "checkpoints" / "last.pt")["state"]
    assert (mid["stage"], mid["step"]) == ("scst", first + 2)
    trainer.main(scst_args(tmp_path, "mid"))
    assert "resumed from" in (tmp_path / "mid" / "train.log").read_text()
    assert_same_weights(model_state(straight / "checkpoints" / "last.pt"),
                        model_state(tmp_path / "mid" / "checkpoints" / "last.pt"))
    assert (straight / "metrics.jsonl").read_text() == (tmp_path / "mid" / "metrics.jsonl").read_text()
