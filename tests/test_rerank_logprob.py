"""Reranking with the retrieved texts as candidates and the model's log-probability in the score
(eval.rerank_candidates, eval.rerank_logprob): log-probabilities against T5's own loss and the
self-critical path, retrieved texts never scored against themselves, a hand-made choice, the
retrieved-only choice against a naive one, the trained run's test captions equal to caption.py's,
and the config's refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from configs.schema import ConfigError, load_config
from dataloaders.retrieval import candidate_lists, consensus_scores, rerank
from evaluation.quality import cider_d_matrix, document_frequency
from tests.test_retrieval import run_test_batch


def test_text_log_probs_equal_t5s_own_loss_and_the_self_critical_path(retrieval_run):
    model, _, _, batch = run_test_batch(retrieval_run, 2)
    model.eval()
    texts = [["keep your guard up", "rotate"], ["step forward and jab with the lead hand"]]
    got = model.text_log_probs(batch, texts)
    assert [g.shape for g in got] == [(2,), (1,)]
    embeds, attn = model.encode(batch)
    for i, clip_texts in enumerate(texts):
        for j, text in enumerate(clip_texts):
            ids = torch.tensor([model.tokenizer(text)["input_ids"]])  # (1, T), the end-of-sequence token last
            assert ids[0, -1].item() == model.tokenizer.eos_token_id
            with torch.no_grad():
                loss = model.t5(inputs_embeds=embeds[i:i + 1], attention_mask=attn[i:i + 1], labels=ids).loss
                start = torch.full((1, 1), model.t5.config.decoder_start_token_id)
                scst = model.sequence_log_probs(embeds[i:i + 1], attn[i:i + 1], torch.cat([start, ids], dim=1))
            # T5's loss is the mean cross-entropy over the text's tokens: the sum is -loss * T
            assert got[i][j].item() == pytest.approx(-loss.item() * ids.shape[1], rel=1e-5, abs=1e-5)
            assert got[i][j].item() == pytest.approx(scst.item(), rel=1e-5, abs=1e-5)


def test_retrieved_texts_are_scored_against_the_others_only():
    pool = ["keep your guard up", "keep your guard up high", "rotate your hips", "keep the guard up"]
    df = document_frequency([[t] for t in pool] + [["step forward"]])
    generated = ["keep your guard up now", "step forward"]
    scores = consensus_scores(generated + pool, pool, df, retrieved=True)
    assert scores.shape == (6,)
    np.testing.assert_allclose(scores[:2], cider_d_matrix(generated, [pool], df)[:, 0])
    for j, text in enumerate(pool):
        others = pool[:j] + pool[j + 1:]
        assert scores[2 + j] == pytest.approx(cider_d_matrix([text], [others], df)[0, 0], abs=1e-12)
    # scored against itself too, a retrieved text would gain its own exact match
    assert cider_d_matrix([pool[0]], [pool], df)[0, 0] > scores[2]
    assert consensus_scores(["a b"], ["a b"], df, retrieved=True).tolist() == [0.0]  # nothing to agree with
    assert candidate_lists([["g1"], ["g2"]], [["p", "q"], ["r"]], True) == [["g1", "p", "q"], ["g2", "r"]]
    assert candidate_lists([["g1"]], [["p"]], False) == [["g1"]]


def test_rerank_with_the_retrieved_texts_and_log_probabilities_by_hand():
    pool = ["keep your guard up", "keep your guard up high", "keep the guard up", "rotate your hips"]
    df = document_frequency([[t] for t in pool] + [["step forward"]])
    generated = [["step forward"]]
    cons = consensus_scores(generated[0] + pool, pool, df, retrieved=True)
    central = int(np.argmax(cons))
    assert central in (1, 2, 3)  # a retrieved text, not the unrelated generated one
    assert rerank(generated, [pool], df) == ["step forward"]  # alone it is the only candidate
    assert rerank(generated, [pool], df, retrieved=True) == [(generated[0] + pool)[central]]
    # a log-probability that favours "rotate your hips" by more than the consensus gap wins at weight 1
    log_probs = np.full(5, -10.0)
    log_probs[4] = -10.0 + (cons[central] - cons[4]) + 0.5
    assert rerank(generated, [pool], df, retrieved=True, log_probs=[log_probs], weight=1.0) == ["rotate your hips"]
    # ... and loses at a weight too small to close the gap
    assert rerank(generated, [pool], df, retrieved=True, log_probs=[log_probs], weight=0.1) == \
        [(generated[0] + pool)[central]]


def test_reranked_captions_score_every_candidate_under_the_model(retrieval_run, monkeypatch):
    import dataloaders.retrieval as retrieval
    from inference.decode import reranked_captions

    model, _, _, batch = run_test_batch(retrieval_run, 2)
    model.eval()
    seen = {}

    def spy(groups, pools, df, **kw):
        seen.update(groups=groups, **kw)
        return [g[0] for g in groups]

    monkeypatch.setattr(retrieval, "rerank", spy)
    reranked_captions(model, batch, candidates=2, samples=1, max_new_tokens=6, source="both", logprob_weight=0.5)
    assert seen["retrieved"] == [True, True] and seen["weight"] == 0.5  # one flag a clip
    for i, group in enumerate(seen["groups"]):
        assert len(group) == 3  # 2 beams + 1 sample; rerank adds the pool itself
        texts = group + list(batch["pools"][i])
        assert len(seen["log_probs"][i]) == len(texts)
        expected = model.text_log_probs(batch, [[] for _ in range(i)] + [texts])[i]
        np.testing.assert_allclose(seen["log_probs"][i].numpy(), expected.numpy(), rtol=1e-5)


def test_retrieved_only_generates_nothing_and_picks_like_a_naive_search(retrieval_run, monkeypatch):
    from inference.decode import reranked_captions

    model, _, _, batch = run_test_batch(retrieval_run, 3)
    model.eval()
    df = model.retriever.df
    weight = 0.2
    expected = []
    embeds, attn = model.encode(batch)
    for i, pool in enumerate(batch["pools"]):
        scores = []
        for j, text in enumerate(pool):  # consensus with the other retrieved texts + weight * log p, by hand
            others = [t for k, t in enumerate(pool) if k != j]
            ids = torch.tensor([model.tokenizer(text)["input_ids"]])
            with torch.no_grad():
                loss = model.t5(inputs_embeds=embeds[i:i + 1], attention_mask=attn[i:i + 1], labels=ids).loss
            scores.append(cider_d_matrix([text], [others], df)[0, 0] - weight * loss.item() * ids.shape[1])
        expected.append(pool[int(np.argmax(scores))])
    monkeypatch.setattr(model, "generate", lambda *a, **kw: pytest.fail("retrieved-only reranking generated text"))
    got = reranked_captions(model, batch, candidates=2, samples=1, source="retrieved", logprob_weight=weight)
    assert got == expected
    assert all(text in pool for text, pool in zip(got, batch["pools"]))


def test_a_run_trained_with_them_captions_its_test_split_like_caption_py(tmp_path, capsys):
    import caption
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    trainer.main(tiny(tmp_path, "lp", "train.lr=1e-2", "train.epochs=2", "eval.every=2", "model.retrieval.k=2",
                      "eval.rerank=2", "eval.rerank_samples=1", "eval.max_new_tokens=8",
                      "eval.rerank_candidates=both", "eval.rerank_logprob=0.05"))
    run = tmp_path / "lp"
    written = json.loads((run / "predictions" / "test_best.json").read_text())
    data = run / "data"
    assert caption.main(["--run", str(run), str(data / "test.pkl"), "--standard", str(data / "standard.pkl"),
                         "--max_new_tokens", "8", "--json"]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == written


@pytest.mark.parametrize("overrides, match", [
    (["eval.rerank=0", "eval.rerank_samples=0", "eval.rerank_candidates=both"], "eval.rerank_candidates: only used when reranking"),
    (["eval.rerank=3", "eval.rerank_candidates=pool"], "eval.rerank_candidates: expected one of generated, both, retrieved, gated"),
    (["eval.rerank=0", "eval.rerank_samples=0", "eval.rerank_candidates=generated", "eval.rerank_logprob=0.1"],
     "eval.rerank_logprob: only used when reranking"),
    (["eval.rerank=3", "eval.rerank_logprob=-1"], "eval.rerank_logprob: expected a number >= 0"),
])
def test_config_refuses_them_where_they_mean_nothing(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("configs/boxing.yaml", ["model.retrieval.k=3", *overrides])


def test_the_web_page_says_what_was_reranked():
    from types import SimpleNamespace

    from inference.page import DemoRun

    def said(**ev):
        cfg = SimpleNamespace(eval=SimpleNamespace(**{"rerank_samples": 10, "rerank_candidates": "generated",
                                                      "rerank_logprob": 0.0, **ev}))
        return DemoRun.candidates_text(SimpleNamespace(cfg=cfg, model=SimpleNamespace()), 5)

    assert said() == "5 beam candidates and 10 sampled ones"
    assert said(rerank_candidates="both") == "5 beam candidates and 10 sampled ones and the nearest training clips' texts"
    assert said(rerank_candidates="retrieved", rerank_logprob=0.005) == \
        "the nearest training clips' texts (plus 0.005 x the model's log-probability)"
    assert said(rerank_candidates="gated", rerank_logprob=0.005) == \
        ("the nearest training clips' texts (plus 0.005 x the model's log-probability) when the nearest clip is "
         "likely of the same learner, else 5 beam candidates and 10 sampled ones")


def test_retrieved_only_without_the_model_is_the_consensus_retrieval_baseline(bx_dir):
    """Weight 0, retrieved texts alone: the pick of evaluation.baselines.ConsensusRetrieval (an
    independent implementation: summed single-reference CIDEr-D from one precomputed matrix)."""
    from dataloaders.records import load_records
    from dataloaders.retrieval import Retriever
    from evaluation.baselines import ConsensusRetrieval

    records = load_records(bx_dir / "BX_train.pkl")
    train, queries = records[:120], records[120:]
    retriever, baseline = Retriever.from_records(train), ConsensusRetrieval(train)
    pools = retriever.texts(queries, 3, "self")
    expected = [baseline.pick(row, 3) for row in baseline.neighbours(queries, 3)]
    got = rerank([[] for _ in queries], pools, retriever.df, retrieved=True)
    assert got == expected
    assert len(set(got)) > 5  # not one text for every clip
