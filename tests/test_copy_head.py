"""The copy head (models/copy_head.py): its mixture against a naive loop, and a trained copy run's
decoding, reloads and export."""
from __future__ import annotations

import json
import math

import pytest
import torch

from configs import schema
from models.copy_head import CopyHead


def naive_mixture(head: CopyHead, hidden, logits, memory, ids, mask, per_clip: int):
    """p(w) = g p_vocab(w) + (1 - g) sum_{r: ids[r] = w} a_r, one decoder row and step at a time."""
    rows, steps, vocab = logits.shape
    out = torch.zeros(rows, steps, vocab, dtype=torch.float64)
    for m in range(rows):
        clip = m // per_clip
        real = [r for r in range(ids.shape[1]) if mask[clip, r]]
        for t in range(steps):
            h = hidden[m, t].double()
            q = head.attend.weight.double() @ h
            scores = [float(q @ memory[clip, r].double()) / math.sqrt(memory.shape[-1]) for r in real]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            a = [w / sum(weights) for w in weights]
            context = sum(a_r * memory[clip, r].double() for a_r, r in zip(a, real))
            g_in = torch.cat([h, context])
            g = 1 / (1 + math.exp(-float(head.gate.weight.double()[0] @ g_in + head.gate.bias.double()[0])))
            out[m, t] = g * torch.softmax(logits[m, t].double(), dim=0)
            for a_r, r in zip(a, real):
                out[m, t, int(ids[clip, r])] += (1 - g) * a_r
    return out


def test_mixture_equals_a_naive_loop_and_sums_to_one():
    torch.manual_seed(0)
    n, per_clip, r, d, v, t = 2, 3, 5, 8, 11, 4
    head = CopyHead(d)
    ids = torch.tensor([[3, 3, 7, 1, 0], [2, 9, 9, 9, 4]])  # repeated tokens add up; padding below
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    memory = torch.randn(n, r, d)
    head.expect(ids, mask)
    head._remember_states(torch.cat([torch.randn(n, 6, d), memory], dim=1))  # motion tokens, then the texts
    hidden, logits = torch.randn(n * per_clip, t, d), torch.randn(n * per_clip, t, v)
    with torch.no_grad():
        got = head.log_probs(hidden, logits).double().exp()
        want = naive_mixture(head, hidden, logits, memory, ids, mask, per_clip)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(n * per_clip, t, dtype=torch.float64), atol=1e-6, rtol=0)
    # a padded position's token (0 in clip 0, 4 in clip 1) gets nothing from the copy part
    vocab_only = head.gate.bias.detach().clone()
    with torch.no_grad():
        head.gate.bias.fill_(-50.0)  # copy only
        copied = head.log_probs(hidden, logits).exp()
        head.gate.bias.copy_(vocab_only)
    assert copied[:per_clip, :, 0].max() < 1e-9 and copied[per_clip:, :, 4].max() < 1e-9
    torch.testing.assert_close(copied[:per_clip].sum(-1), torch.ones(per_clip, t), atol=1e-5, rtol=0)


def test_a_gradient_reaches_the_gate_the_query_and_the_encoder_memory():
    torch.manual_seed(1)
    head = CopyHead(4)
    states = torch.randn(1, 3, 4, requires_grad=True)
    head.expect(torch.tensor([[1, 2]]), torch.tensor([[1, 1]]))
    head._remember_states(states)
    loss = -head.log_probs(torch.randn(1, 2, 4), torch.randn(1, 2, 5))[0, :, 2].sum()
    loss.backward()
    assert head.gate.weight.grad.abs().sum() > 0 and head.attend.weight.grad.abs().sum() > 0
    assert states.grad[0, 1:].abs().sum() > 0 and states.grad[0, 0].abs().sum() == 0  # only the text positions


def test_copy_needs_retrieval():
    with pytest.raises(schema.ConfigError, match="model.retrieval.copy"):
        schema.validate(schema.from_dict({"model": {"retrieval": {"copy": True}}}))


# ------------------------------------------------------------------------------ with a trained run
@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    results = tmp_path_factory.mktemp("copy_runs")
    trainer.main(tiny(results, "copy", "train.lr=1e-2", "train.epochs=2", "eval.every=2", "model.retrieval.k=2",
                      "model.retrieval.copy=true", "eval.num_beams=3", "eval.max_new_tokens=8"))
    return results / "copy"


def loaded_batch(run):
    from dataloaders.records import load_records, load_standards
    from inference import decode, inputs

    model, cfg, _ = decode.load_model(run=run, device="cpu")
    standards = load_standards(run / "data" / "standard.pkl")
    records = load_records(run / "data" / "test.pkl", standards=standards)[:4]
    dataset = inputs.build_dataset(model, cfg, records, standards, source="test")
    return model, inputs.collator_for(model, cfg)([dataset[i] for i in range(len(dataset))])


def test_the_log_counts_the_copy_heads_parameters(copy_run):
    line = next(l for l in (copy_run / "train.log").read_text().splitlines() if "trainable of" in l)
    d = 32  # the tiny run's d_model: attend d x d, gate 2d + 1
    assert f"copy head {d * d + 2 * d + 1:,}/{d * d + 2 * d + 1:,}" in line


def test_sampled_scores_equal_teacher_forced_log_probs(copy_run):
    """generate runs the encoder on N clips and the decoder on N x 3 rows; teacher forcing runs both
    on N x 3 rows: the copy memory must line up in both."""
    model, batch = loaded_batch(copy_run)
    assert model.copy is not None
    torch.manual_seed(0)
    embeds, attn = model.encode(batch)
    out = model.t5.generate(inputs_embeds=embeds, attention_mask=attn, do_sample=True, top_k=0, num_return_sequences=3,
                            max_new_tokens=6, output_scores=True, return_dict_in_generate=True)
    steps = torch.stack(out.scores, dim=1).log_softmax(-1)  # (N * 3, T, V)
    seq = out.sequences  # (N * 3, 1 + T)
    generated = steps.gather(-1, seq[:, 1:, None]).squeeze(-1)  # (N * 3, T)
    embeds, attn = model.encode(batch)
    logits = model.t5(inputs_embeds=embeds.repeat_interleave(3, 0), attention_mask=attn.repeat_interleave(3, 0),
                      decoder_input_ids=seq[:, :-1], use_cache=False).logits
    forced = logits.log_softmax(-1).gather(-1, seq[:, 1:, None]).squeeze(-1)
    alive = torch.cat([torch.ones_like(seq[:, :1]), (seq[:, 1:-1] != model.t5.config.eos_token_id).cumprod(1)], 1)
    alive = alive.bool() & (seq[:, 1:] != model.t5.config.pad_token_id)
    torch.testing.assert_close(generated[alive], forced[alive], atol=1e-4, rtol=1e-4)


def test_copying_only_writes_the_clips_own_retrieved_tokens(copy_run):
    """With the gate closed on the vocabulary, beam search can only write tokens of each clip's own
    retrieved texts: the memory follows its clip through the beams."""
    model, batch = loaded_batch(copy_run)
    with torch.no_grad():
        model.copy.gate.bias.fill_(-60.0)
        embeds, attn = model.encode(batch)
        ids = model.t5.generate(inputs_embeds=embeds, attention_mask=attn, num_beams=3, max_new_tokens=8)
    for row, clip_ids, clip_mask in zip(ids, batch["retrieved_ids"], batch["retrieved_mask"]):
        allowed = set(clip_ids[clip_mask.bool()].tolist()) | {model.t5.config.pad_token_id}
        assert set(row.tolist()) <= allowed
    # the clips' retrieved texts differ, so a shared memory would have broken this for some clip
    assert len({tuple(sorted(set(r[m.bool()].tolist()))) for r, m in
                zip(batch["retrieved_ids"], batch["retrieved_mask"])}) > 1


def test_caption_py_and_the_export_caption_like_training(copy_run, tmp_path, capsys):
    import caption
    from models.export import export_run

    data = copy_run / "data"
    args = [str(data / "test.pkl"), "--standard", str(data / "standard.pkl"), "--max_new_tokens", "8",
            "--num_beams", "3", "--json"]
    assert caption.main(["--run", str(copy_run), *args]) == 0
    got = {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()}
    assert got == json.loads((copy_run / "predictions" / "test_best.json").read_text())
    out = export_run(copy_run, tmp_path / "export")
    assert caption.main(["--run", str(out), *args]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == got


def test_copy_head_with_lora_trains_reloads_and_captions_alike(tmp_path, capsys):
    """LoRA wraps T5 in peft; the copy head's hooks sit on the wrapped model's encoder and lm_head."""
    import caption
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    trainer.main(tiny(tmp_path, "copy_lora", "train.lr=1e-2", "train.epochs=1", "model.retrieval.k=2",
                      "model.retrieval.copy=true", "eval.rerank=2", "model.t5.lora.r=4"))
    run = tmp_path / "copy_lora"
    assert "copy head" in next(l for l in (run / "train.log").read_text().splitlines() if "trainable of" in l)
    model, batch = loaded_batch(run)
    with torch.no_grad():
        model.copy.gate.bias.fill_(-60.0)  # copy only: the hooks act on the wrapped model too
        embeds, attn = model.encode(batch)
        ids = model.t5.generate(inputs_embeds=embeds, attention_mask=attn, max_new_tokens=6)
    for row, clip_ids, clip_mask in zip(ids, batch["retrieved_ids"], batch["retrieved_mask"]):
        assert set(row.tolist()) <= set(clip_ids[clip_mask.bool()].tolist()) | {model.t5.config.pad_token_id}
    data = run / "data"
    assert caption.main(["--run", str(run), str(data / "test.pkl"), "--standard", str(data / "standard.pkl"),
                         "--max_new_tokens", "6", "--json"]) == 0
    got = {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()}
    assert got == json.loads((run / "predictions" / "test_best.json").read_text())
