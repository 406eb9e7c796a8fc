"""model.annotators: texts told apart by who wrote them.

Each training text carries its annotator (labels[i] and augmented_labels[i] are annotator i's),
the retrieved texts a training item reads are that annotator's texts of the nearest clips
(checked against a naive search), the collator batches them by hand-computed ids, the captioner
puts the annotator's embedding before the motion tokens, evaluation writes as each annotator and
reranks all candidates together, and a trained run's captions are what caption.py and the export
write.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import DataError
from dataloaders.retrieval import Retriever
from tests.test_retrieval import FakeTokenizer, naive_neighbours, record, run_test_batch


def coach_records() -> list[dict]:
    """Four clips of two learners; annotator i's text names the annotator and the clip."""
    recs = []
    for j, (learner, base) in enumerate((("a", 0.0), ("a", 0.05), ("b", 1.0), ("b", 1.05))):
        name = f"{learner}_clip_{j}"
        rec = record(name, base, [f"coach {a} on left {name}" for a in range(3)], seed=j)
        rec["augmented_labels"] = [f"coach {a} again on {name}" for a in range(3)]
        recs.append(rec)
    return recs


# ------------------------------------------------------------------------------ data
def test_each_training_text_carries_its_annotator():
    ds = MotionTextDataset(coach_records(), augmented_labels=True, annotators=3)
    seen = {(ds[i]["text"], ds[i]["annotator"]) for i in range(len(ds))}
    assert len(seen) == len(ds) == 4 * 6
    assert all(text.startswith(f"coach {a} ") for text, a in seen)
    plain = MotionTextDataset(coach_records(), augmented_labels=True)
    assert "annotator" not in plain[0]  # off: items as before
    evaluation = MotionTextDataset(coach_records(), train=False, annotators=3)
    assert "annotator" not in evaluation[0]  # evaluation: the caller says whose caption to write


def test_more_texts_than_annotators_is_an_error_naming_the_key():
    with pytest.raises(DataError, match=r"a_clip_0.*'labels'.*at most 2 texts.*found 3"):
        MotionTextDataset(coach_records(), annotators=2)


def test_by_annotator_retrieval_equals_a_naive_search_and_never_returns_the_clip():
    recs = coach_records()
    retriever = Retriever.from_records(recs)
    got = retriever.texts_by_annotator(recs, 2, 3, "self")
    for rec, rows, nearest in zip(recs, got, naive_neighbours(recs, recs, 2, "self")):
        assert rows == [[recs[i]["labels"][a] for i in nearest] for a in range(3)]
        assert not any(rec["video_name"] in t for texts in rows for t in texts)


def test_a_training_item_reads_its_own_annotators_retrieved_texts_mirrored_alike():
    recs = coach_records()
    by_annotator = dict(zip([r["video_name"] for r in recs],
                            Retriever.from_records(recs).texts_by_annotator(recs, 2, 3, "self")))
    ds = MotionTextDataset(recs, annotators=3)
    ds.set_retrieved(by_annotator, "retrieved_by_annotator")
    for i in range(len(ds)):
        item = ds[i]
        assert item["retrieved"] == by_annotator[item["video_name"]][item["annotator"]]
    mirrored = MotionTextDataset(recs, annotators=3, mirror=1.0)
    mirrored.set_retrieved(by_annotator, "retrieved_by_annotator")
    item = mirrored[0]
    assert item["retrieved"] == [t.replace("left", "right") for t in by_annotator[item["video_name"]][item["annotator"]]]
    assert all("right" in t for texts in item["retrieved_by_annotator"] for t in texts)


def test_collated_annotators_and_each_annotators_retrieved_ids_by_hand():
    feats = torch.zeros(6, 10, 22)

    def item(name, **extra):
        return {"video_name": name, "features": feats, "standard": None, "text": "a", "references": ["a"], **extra}

    collate = Collator(FakeTokenizer(), retrieved_texts=2, retrieved_max_tokens=3, annotators=2)
    train = collate([item("x", annotator=1, retrieved=["ab"]), item("y", annotator=0, retrieved=["abc"])])
    assert train["annotators"].tolist() == [1, 0] and train["retrieved_ids"].tolist() == [[12, 1], [13, 1]]
    assert "annotator_inputs" not in train
    evaluation = collate([item("x", retrieved_by_annotator=[["ab"], ["one two"]]),
                          item("y", retrieved_by_annotator=[["abc"], ["a"]])])
    # annotator 0: "ab" -> 12 eos, "abc" -> 13 eos; annotator 1: "one two" -> 13 13 eos, "a" -> 11 eos
    assert [x["retrieved_ids"].tolist() for x in evaluation["annotator_inputs"]] == \
        [[[12, 1], [13, 1]], [[13, 13, 1], [11, 1, 0]]]
    assert evaluation["annotator_inputs"][1]["retrieved_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert "annotators" not in evaluation
    assert "annotator_inputs" not in Collator(FakeTokenizer(), retrieved_texts=2)(
        [item("x", retrieved_by_annotator=[["ab"], ["cd"]])])  # off: nothing added


def test_for_annotator_fills_in_whose_caption_and_that_annotators_texts():
    from evaluation.inference import for_annotator

    inputs = [{"retrieved_ids": torch.full((2, 3), a), "retrieved_mask": torch.ones(2, 3)} for a in range(3)]
    batch = {"video_names": ["x", "y"], "x": torch.zeros(2, 6, 4, 22), "annotator_inputs": inputs}
    two = for_annotator(batch, 2)
    assert two["annotators"].tolist() == [2, 2] and two["retrieved_ids"].eq(2).all()
    assert "annotator_inputs" not in two and "annotator_inputs" in batch  # the batch itself is untouched
    assert for_annotator(batch, None) == batch


# ------------------------------------------------------------------------------ the captioner
def small_captioner(annotators: int):
    from configs import schema
    from models.build import build_model
    from dataloaders.tokenizer import train_tokenizer

    cfg = schema.load_config("configs/synthetic.yaml", [
        "model.encoder.channels=[8,16]", "model.encoder.strides=[1,2]", "model.encoder.num_attention_graphs=1",
        "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}",
        f"model.annotators={annotators}"])
    tokenizer = train_tokenizer([r["labels"][0] for r in coach_records()] * 5, 120)
    return build_model(cfg, tokenizer).eval()


def test_the_annotator_embedding_comes_first_and_changes_the_caption_scores():
    model = small_captioner(3)
    ds = MotionTextDataset(coach_records(), annotators=3, augmented_labels=False)
    batch = Collator(model.tokenizer, annotators=3)([ds[i] for i in (0, 4)])  # two clips, annotators of their texts
    embeds, mask = model.encode(batch)
    torch.testing.assert_close(embeds[:, 0], model.annotator(batch["annotators"]))
    motion, motion_mask = small_captioner(0).encode(batch)
    assert embeds.shape[1] == motion.shape[1] + 1 and mask[:, 0].tolist() == [1, 1]
    other = dict(batch, annotators=(batch["annotators"] + 1) % 3)
    with torch.no_grad():
        assert not torch.allclose(model(batch), model(other))
    with pytest.raises(ValueError, match=r"one of 3 annotators \(model.annotators\).*batch\['annotators'\]"):
        model.encode({k: v for k, v in batch.items() if k != "annotators"})


def test_eval_annotators_must_be_the_models():
    from configs import schema

    with pytest.raises(schema.ConfigError, match=r"eval.annotators.*0 to 2"):
        schema.load_config("configs/synthetic.yaml", ["model.annotators=3", "eval.annotators=[3]"])
    with pytest.raises(schema.ConfigError, match="eval.annotators"):
        schema.load_config("configs/synthetic.yaml", ["eval.annotators=[0]"])


class WhoWrites:
    """generate(): texts that say which annotator wrote them and whether they were sampled."""
    retriever = type("R", (), {"df": None})()

    def generate(self, batch, num_return_sequences=1, do_sample=False, **kw):
        who = batch["annotators"].tolist()
        return [f"{name} by {a} {'sample %.6f' % torch.rand(1).item() if do_sample else f'beam {j}'}"
                for name, a in zip(batch["video_names"], who) for j in range(num_return_sequences)]


def test_reranking_pools_every_annotators_candidates_with_their_own_samples(monkeypatch):
    import dataloaders.retrieval as retrieval
    from evaluation.inference import clip_slice, reranked_captions

    seen = []
    monkeypatch.setattr(retrieval, "rerank", lambda groups, pools, df, **kw: seen.extend(groups) or [g[-1] for g in groups])
    batch = {"video_names": ["a", "b"], "x": torch.zeros(2, 2), "pools": [["p"], ["q"]]}
    together = reranked_captions(WhoWrites(), batch, candidates=2, samples=1, seed=5, annotators=[2, 0])
    assert [[t.split(" ", 1)[1].rsplit(" ", 1)[0] for t in g] for g in seen] == \
        [["by 2 beam", "by 2 beam", "by 2 sample", "by 0 beam", "by 0 beam", "by 0 sample"]] * 2
    samples = [t for g in seen for t in g if "sample" in t]
    assert len(set(s.rsplit(" ", 1)[1] for s in samples)) == 4  # each (clip, annotator) its own draw
    alone = reranked_captions(WhoWrites(), clip_slice(batch, 1), candidates=2, samples=1, seed=5, annotators=[2, 0])
    assert alone == together[1:]


# ------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def annotator_run(tmp_path_factory):
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    results = tmp_path_factory.mktemp("annotator_runs")
    trainer.main(tiny(results, "ann", "train.lr=1e-2", "train.epochs=2", "eval.every=2", "model.retrieval.k=2",
                      "model.annotators=3", "eval.rerank=2", "eval.rerank_samples=1", "eval.max_new_tokens=8"))
    return results / "ann"


def test_caption_py_and_the_export_write_the_trained_runs_captions(annotator_run, tmp_path, capsys):
    import caption
    from evaluation.inference import load_model
    from models.export import export_run, load_export

    data = annotator_run / "data"
    args = [str(data / "test.pkl"), "--standard", str(data / "standard.pkl"), "--max_new_tokens", "8", "--json"]
    assert caption.main(["--run", str(annotator_run), *args]) == 0
    got = {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()}
    assert got == json.loads((annotator_run / "predictions" / "test_best.json").read_text())
    out = export_run(annotator_run, tmp_path / "export")
    exported, _ = load_export(out)
    trained, _, _ = load_model(run=annotator_run, device="cpu")
    torch.testing.assert_close(exported.annotator.weight, trained.annotator.weight)
    assert caption.main(["--run", str(out), *args]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == got


def test_attention_pictures_of_an_annotator_model_keep_the_motion_tokens_only(annotator_run):
    from evaluation import inference, pictures

    model, _, _, batch = run_test_batch(annotator_run, 2)
    written = inference.for_annotator(batch, 0)
    embeds = model.encode(written)[0]
    motion_tokens = embeds.shape[1] - 1 - written["retrieved_ids"].shape[1]
    for attn in pictures.clip_attention(model, batch, max_new_tokens=4):
        assert attn.cross.shape[1] == motion_tokens
        np.testing.assert_allclose(attn.cross.sum(axis=1), 1.0, atol=1e-5)


def test_the_web_page_captions_as_training_did_and_says_whose_candidates(annotator_run, tmp_path):
    from evaluation import demo_backend as db

    page = db.DemoRun(run=annotator_run, device="cpu", work_dir=tmp_path / "work")
    name = page.clip_names()[0]
    result = page.caption(page.test_clip(name), decoding=db.Decoding(max_new_tokens=8))
    assert "2 beam candidates and 1 sampled ones of each of 3 annotators" in " ".join(result.notes)
    assert result.texts == [json.loads((annotator_run / "predictions" / "test_best.json").read_text())[name]]
