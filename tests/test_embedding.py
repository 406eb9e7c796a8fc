"""The motion-text embedding (models/embedding.py): the InfoNCE loss against a naive per-pair
computation, the training loss as cross-entropy plus that loss, the reranking term by hand, the
split's motion-to-text retrieval figures against naive loops, a run with seed 3 whose test
captions caption.py, the web page and an export reproduce, and the config's refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from configs.schema import ConfigError, load_config
from dataloaders.retrieval import consensus_scores, rerank
from evaluation.quality import cider_d_matrix, document_frequency
from models.embedding import info_nce, same_text
from tests.test_retrieval import run_test_batch


def naive_info_nce(motion, text, texts, temperature):
    """Per pair, in float64: each motion against every text, each text against every motion."""
    m, t = motion.double().tolist(), text.double().tolist()
    n = len(m)

    def sim(i, j):
        return sum(a * b for a, b in zip(m[i], t[j])) / temperature

    to_text = to_motion = 0.0
    for i in range(n):
        positive = sum(math.exp(sim(i, j)) for j in range(n) if texts[j] == texts[i])
        to_text -= math.log(positive / sum(math.exp(sim(i, j)) for j in range(n)))
        positive = sum(math.exp(sim(j, i)) for j in range(n) if texts[j] == texts[i])
        to_motion -= math.log(positive / sum(math.exp(sim(j, i)) for j in range(n)))
    return 0.5 * (to_text / n + to_motion / n)


def test_info_nce_equals_a_naive_per_pair_computation():
    gen = torch.Generator().manual_seed(0)
    motion = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=-1)
    texts = ["jab", "cross", "jab", "guard up", "cross", "hook"]  # repeated texts are positives of each other
    assert same_text(texts).tolist()[0] == [True, False, True, False, False, False]
    for temperature in (0.1, 1.0):
        got = info_nce(motion, text, same_text(texts), temperature)
        assert got.item() == pytest.approx(naive_info_nce(motion, text, texts, temperature), rel=1e-5)
    # with all texts distinct it is the textbook (CLIP) loss: cross-entropy against the diagonal
    distinct = [str(i) for i in range(6)]
    logits = motion @ text.T / 0.1
    clip = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(6))
                  + torch.nn.functional.cross_entropy(logits.T, torch.arange(6)))
    torch.testing.assert_close(info_nce(motion, text, same_text(distinct), 0.1), clip)


@pytest.fixture(scope="session")
def embedding_run(tmp_path_factory):
    """A synthetic retrieval run with the embedding, seed 3, reranking 2 beams, 1 sample and the
    texts of the 3 training clips nearest in the embedding, with the embedding's cosine in the score."""
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    results = tmp_path_factory.mktemp("embedding_runs")
    trainer.main(tiny(results, "emb", "seed=3", "train.lr=1e-2", "train.epochs=2", "eval.every=2",
                      "model.retrieval.k=2", "model.embedding.dim=16", "eval.rerank=2", "eval.rerank_samples=1",
                      "eval.max_new_tokens=8", "eval.rerank_candidates=both", "eval.rerank_embedding=2",
                      "eval.rerank_pool=embedding"))
    return results / "emb"


def test_the_training_loss_is_cross_entropy_plus_the_weighted_info_nce(embedding_run):
    model, cfg, dataset, batch = run_test_batch(embedding_run, 4)
    assert model.embedding is not None and model.embedding.weight == 1.0
    batch["texts"] = ["jab", "cross", "jab", "hook"]
    batch["labels"] = model.tokenizer(batch["texts"], padding=True, return_tensors="pt")["input_ids"]
    batch["labels"][batch["labels"] == model.tokenizer.pad_token_id] = -100
    model.train()
    torch.manual_seed(0)
    total = model(batch)
    torch.manual_seed(0)
    feats, mask = model.motion_features(batch)
    embeds, attn = model.to_tokens(feats, mask, batch)
    ce = model.t5(inputs_embeds=embeds, attention_mask=attn, labels=batch["labels"]).loss
    motion = model.embedding.motion(feats, mask)
    words = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch["texts"]]
    text = torch.stack([torch.nn.functional.normalize(
        model.embedding.text_head(model.embedding.token_vectors(torch.tensor(w)).mean(dim=0)), dim=-1) for w in words])
    expected = ce + naive_info_nce(motion.detach(), text.detach(), batch["texts"], cfg.model.embedding.temperature)
    assert total.item() == pytest.approx(expected.item(), rel=1e-4)
    total.backward()  # the heads and the encoder learn from it
    assert model.embedding.token_vectors.weight.grad.abs().sum() > 0
    assert model.embedding.motion_head.weight.grad.abs().sum() > 0
    model.eval()


def test_rerank_with_the_embedding_term_by_hand():
    pool = ["keep your guard up", "keep your guard up high", "keep the guard up", "rotate your hips"]
    df = document_frequency([[t] for t in pool] + [["step forward"]])
    generated = [["step forward"]]
    cons = consensus_scores(generated[0] + pool, pool, df, retrieved=True)
    central = int(np.argmax(cons))
    cosines = np.zeros(5)
    cosines[0] = 0.9  # the clip says "step forward"
    gap = cons[central] - cons[0]
    assert rerank(generated, [pool], df, retrieved=True, similarities=[cosines],
                  similarity_weight=gap / 0.9 + 0.1) == ["step forward"]
    assert rerank(generated, [pool], df, retrieved=True, similarities=[cosines],
                  similarity_weight=gap / 0.9 - 0.1) == [(generated[0] + pool)[central]]


def test_reranked_captions_pass_the_embedding_cosines(embedding_run, monkeypatch):
    import dataloaders.retrieval as retrieval
    from inference.decode import reranked_captions

    model, _, _, batch = run_test_batch(embedding_run, 2)
    seen = {}

    def spy(groups, pools, df, **kw):
        seen.update(groups=groups, **kw)
        return [g[0] for g in groups]

    monkeypatch.setattr(retrieval, "rerank", spy)
    reranked_captions(model, batch, candidates=2, samples=1, max_new_tokens=6, source="both", embedding_weight=2.0)
    assert seen["similarity_weight"] == 2.0
    clips = model.clip_vectors(batch)
    for i, group in enumerate(seen["groups"]):
        texts = group + list(batch["pools"][i])
        expected = [float(model.text_vectors([t])[0] @ clips[i]) for t in texts]
        np.testing.assert_allclose(seen["similarities"][i], expected, rtol=1e-5, atol=1e-6)
        assert all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for c in expected)


def test_split_retrieval_figures_against_naive_loops(embedding_run):
    from dataloaders.build import Data
    from training.evaluate import embedding_retrieval

    model, cfg, dataset, batch = run_test_batch(embedding_run, 100)
    data = Data.__new__(Data)
    from inference.inputs import collator_for

    data.collate = collator_for(model, cfg)
    got = embedding_retrieval(model, dataset, data, cfg, torch.device("cpu"))
    names, refs = batch["video_names"], [dataset.references()[n] for n in batch["video_names"]]
    clips = model.clip_vectors(batch)

    def text_vector(texts):
        v = model.text_vectors(texts).sum(dim=0)
        return v / v.norm()

    def recall(score):  # rank of the own clip, ties counted against it
        ranks = []
        for q in range(len(names)):
            own = score(q, q)
            ranks.append(1 + sum(1 for j in range(len(names)) if j != q and score(q, j) >= own - 1e-9 * max(1, abs(own))))
        return {k: float(np.mean([r <= k for r in ranks])) for k in (1, 3)}

    vectors = [text_vector(r) for r in refs]
    emb = recall(lambda q, j: float(clips[q] @ vectors[j]))
    stats = recall(lambda q, j: float(np.mean([cider_d_matrix([t], [batch["pools"][q]], model.retriever.df)[0, 0]
                                               for t in refs[j]])))
    assert got["embedding R@1"] == pytest.approx(emb[1]) and got["embedding R@3"] == pytest.approx(emb[3])
    assert got["statistics R@1"] == pytest.approx(stats[1]) and got["statistics R@3"] == pytest.approx(stats[3])
    written = json.loads((embedding_run / "test_best_metrics.json").read_text())
    assert written["embedding R@1"] == pytest.approx(got["embedding R@1"])


def test_a_seed_3_run_captions_its_test_split_like_caption_py_the_page_and_its_export(embedding_run, tmp_path, capsys):
    import caption
    from inference import page as db
    from models.export import export_run
    from tests.test_demo import command_texts

    written = json.loads((embedding_run / "predictions" / "test_best.json").read_text())
    data = embedding_run / "data"
    assert caption.main(["--run", str(embedding_run), str(data / "test.pkl"), "--standard", str(data / "standard.pkl"),
                         "--max_new_tokens", "8", "--json"]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == written
    page = db.DemoRun(run=embedding_run, device="cpu", work_dir=tmp_path / "work")
    try:
        assert page.rerank_of(db.Decoding()) == 2
        for name in page.clip_names()[:2]:
            result = page.caption(page.test_clip(name), decoding=db.Decoding(max_new_tokens=8))
            assert "2 x the clip-caption cosine" in " ".join(result.notes)
            assert result.texts == [written[name]] and command_texts(capsys, result) == result.texts
    finally:
        page.close()
    exported = export_run(embedding_run, tmp_path / "export")
    assert caption.main(["--run", str(exported), str(data / "test.pkl"), "--standard", str(data / "standard.pkl"),
                         "--max_new_tokens", "8", "--json"]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == written


def test_embedding_retrieval_never_returns_the_clip_or_its_learner_on_bx(bx_dir):
    """Training clips as queries, each with its own training row's vector: unchecked, every query's
    nearest clip would be itself and the next ones its learner's."""
    from dataloaders.records import load_records
    from dataloaders.retrieval import Retriever
    from dataloaders.splits import learner_of

    records = load_records(bx_dir / "BX_train.pkl")
    retriever = Retriever.from_records(records)
    gen = torch.Generator().manual_seed(0)
    by_learner = {l: torch.randn(8, generator=gen) for l in set(retriever.learners)}
    vectors = torch.nn.functional.normalize(torch.stack(
        [5 * by_learner[l] + torch.randn(8, generator=gen) for l in retriever.learners]), dim=-1)  # (M, 8)
    scores = (vectors @ vectors.T).double().numpy()  # the clips as their own queries
    names, learners = [r["video_name"] for r in records], [learner_of(r) for r in records]
    assert (np.argmax(scores, axis=1) == np.arange(len(records))).all()
    unchecked = retriever.best_rows(scores, names, learners, 5, "none")
    assert all(row[0] == q for q, row in enumerate(unchecked))
    assert np.mean([learners[row[1]] == learners[q] for q, row in enumerate(unchecked)]) > 0.9
    for exclude in ("self", "learner"):
        rows = retriever.best_rows(scores, names, learners, 5, exclude)
        assert all(len(row) == 5 for row in rows)
        assert not any(names[i] == names[q] for q, row in enumerate(rows) for i in row)
        if exclude == "learner":
            assert not any(learners[i] == learners[q] for q, row in enumerate(rows) for i in row)
    # the motion statistics' neighbours are best_rows of minus the distance (what they were before)
    assert retriever.neighbours(records[:20], 3, "learner") == retriever.best_rows(
        -np.sqrt(((((retriever.raw[:20] - retriever.mean) / retriever.std)[:, None] - retriever.features[None]) ** 2)
                 .sum(-1)), names[:20], learners[:20], 3, "learner")


def test_the_embedding_pool_is_the_nearest_texts_by_hand(embedding_run):
    from inference.decode import embedding_pools

    model, _, _, batch = run_test_batch(embedding_run, 3)
    retriever = model.retriever
    clips = model.clip_vectors(batch)
    got = embedding_pools(model, batch, 2, "self")
    for q, name in enumerate(batch["video_names"]):
        scores = []
        for j, labels in enumerate(retriever.labels):
            v = model.text_vectors(list(labels)).sum(dim=0)
            scores.append(-np.inf if retriever.names[j] == name else float(clips[q] @ (v / v.norm())))
        best = sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:2]
        assert sorted(got[q]) == sorted(t for j in best for t in retriever.labels[j])


@pytest.mark.parametrize("overrides, match", [
    (["model.retrieval.k=3", "eval.rerank=3", "eval.rerank_pool=embedding"], "eval.rerank_pool: embedding needs"),
    (["model.retrieval.k=3", "eval.rerank=3", "eval.rerank_embedding=1"], "eval.rerank_embedding: needs the motion-text"),
    (["model.retrieval.k=3", "eval.rerank=0", "eval.rerank_samples=0", "model.embedding.dim=8", "eval.rerank_embedding=1"],
     "eval.rerank_embedding: only used when reranking"),
    (["model.embedding.dim=8", "model.embedding.weight=0"], "model.embedding.weight: expected a positive number"),
    (["model.embedding.dim=8", "model.embedding.temperature=0"], "model.embedding.temperature: expected a positive"),
    (["model.embedding.dim=8", "train.scst.epochs=2"], "model.embedding: not trained in the self-critical stage"),
    (["model.embedding.dim=-1"], "model.embedding.dim: expected a number >= 0"),
])
def test_config_refuses_what_means_nothing(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("configs/boxing.yaml", overrides)
