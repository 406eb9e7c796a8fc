"""Gated decoding (eval.rerank_candidates: gated): the gate's space (motion statistics and bone
lengths) and the familiar threshold against naive loops and a hand-made case, the familiar flags
against a naive nearest-distance search (on BX when present), an old retrieval state's refusal,
each clip captioned as the retrieved-only or the generated decoding would caption it, a trained
run of seed 1 whose test captions caption.py and the web page reproduce, and the config's word."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from dataloaders.retrieval import Retriever, per_clip
from dataloaders.splits import learner_of
from tests.test_retrieval import naive_features, record, run_test_batch, toy_records


def naive_bones(rec) -> np.ndarray:
    """Mean over frames of each non-root bone's length, one joint and frame at a time."""
    from dataloaders.skeleton import SMPL22_PARENTS

    joints = np.asarray(rec["coordinates"], dtype=np.float64).reshape(-1, 22, 3)
    return np.array([np.mean([np.sqrt(sum((joints[t, j, c] - joints[t, p, c]) ** 2 for c in range(3)))
                              for t in range(len(joints))])
                     for j, p in enumerate(SMPL22_PARENTS) if p >= 0])


def naive_gate_space(train, queries):
    """(train rows, query rows) of the gate's space by hand: each block z-scored with the training
    clips' mean and population std, the 21 bone columns scaled by sqrt(132 / 21)."""
    def z(rows, mean, std):
        return [(r - mean) / np.where(std > 0, std, 1.0) for r in rows]
    motion = [naive_features(r) for r in train]
    bones = [naive_bones(r) for r in train]
    m_mean, m_std, b_mean, b_std = np.mean(motion, 0), np.std(motion, 0), np.mean(bones, 0), np.std(bones, 0)
    w = np.sqrt(132 / 21)
    space = lambda recs: [np.concatenate([mz, w * bz]) for mz, bz in zip(  # noqa: E731
        z([naive_features(r) for r in recs], m_mean, m_std), z([naive_bones(r) for r in recs], b_mean, b_std))]
    return np.array(space(train)), np.array(space(queries))


def naive_threshold(features: np.ndarray, learners: list[str]) -> float:
    """The threshold by a loop over every candidate: balanced accuracy of 'nearest other clip'
    distances (<= t) against 'nearest clip of another learner' distances (> t)."""
    n = len(learners)
    seen, unseen = [], []
    for i in range(n):
        others = [float(np.linalg.norm(features[i] - features[j])) for j in range(n) if j != i]
        seen.append(min(others))
        unseen.append(min(float(np.linalg.norm(features[i] - features[j])) for j in range(n)
                          if learners[j] != learners[i]))
    best, best_t = -1, None
    for t in sorted(set(seen) | set(unseen)):
        correct = sum(s <= t for s in seen) + sum(u > t for u in unseen)  # balanced accuracy x 2n
        if correct > best:
            best, best_t = correct, t
    return best_t


def test_threshold_by_hand_on_two_learners_far_apart():
    """Learner a at 0 and 1, learner b at 10 and 12 (one dimension, already standardised): the
    nearest other clip is 1, 1, 2, 2 away; the nearest clip of the other learner 9, 9, 8, 10 away.
    Every threshold in [2, 8) separates them; the smallest candidate is 2."""
    features = np.array([[0.0], [1.0], [10.0], [12.0]])
    retriever = Retriever(features, [["x"]] * 4, ["a_0", "a_1", "b_0", "b_1"], ["a", "a", "b", "b"],
                          mean=np.zeros(1), std=np.ones(1), bones=np.ones((4, 21)))  # equal bones: no say
    assert retriever.gate_features()[:, 1:].tolist() == [[0.0] * 21] * 4
    assert retriever.familiar_threshold() == pytest.approx(2.0)
    assert naive_threshold(features, ["a", "a", "b", "b"]) == pytest.approx(2.0)


def test_threshold_equals_a_naive_loop_on_toy_and_bx_clips(bx_dir_or_none, monkeypatch):
    import dataloaders.retrieval as retrieval
    from dataloaders.records import load_records

    records = toy_records() if bx_dir_or_none is None else load_records(bx_dir_or_none / "BX_train.pkl")[:60]
    space, _ = naive_gate_space(records, [])
    np.testing.assert_allclose(Retriever.from_records(records).gate_features(), space, rtol=1e-9, atol=1e-9)
    expected = naive_threshold(space, [learner_of(r) for r in records])
    assert Retriever.from_records(records).familiar_threshold() == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(retrieval, "FAMILIAR_BLOCK", 1)  # one row a block: the same threshold
    assert Retriever.from_records(records).familiar_threshold() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("exclude", ["none", "self", "learner"])
def test_familiar_flags_equal_a_naive_nearest_distance(exclude):
    train = toy_records()
    queries = [dict(train[0], video_name="a_copy"), record("z_far", 7.0, ["q"], seed=8), *train[:2], train[-1]]
    retriever = Retriever.from_records(train)
    train_space, query_space = naive_gate_space(train, queries)
    expected = []
    for q, z in zip(queries, query_space):
        allowed = [i for i, r in enumerate(train)
                   if not (exclude != "none" and r["video_name"] == q["video_name"])
                   and not (exclude == "learner" and learner_of(r) == learner_of(q))]
        nearest = min(np.linalg.norm(z - train_space[i]) for i in allowed)
        expected.append(bool(nearest <= retriever.familiar_threshold()))
    assert retriever.familiar(queries, exclude) == expected
    if exclude != "learner":
        assert expected[0] and not expected[1]  # a copy of a training clip, and a clip far from every one
    for scale in (0.5, 2.0):
        nearest = retriever.distances(queries, exclude, space="gate").min(axis=1)
        assert retriever.familiar(queries, exclude, scale) == \
            [bool(d <= scale * retriever.familiar_threshold()) for d in nearest]


def test_familiar_on_bx_tells_seen_learners_from_held_out_ones(bx_dir):
    """Two BX learners held out of the retriever, and one clip of each other learner: the clips of
    seen learners are marked familiar more often than the held-out learners' clips."""
    from dataloaders.records import load_records

    records = load_records(bx_dir / "BX_train.pkl")
    held = sorted({learner_of(r) for r in records})[:2]
    queries_seen, train, firsts = [], [], set()
    for rec in records:
        if learner_of(rec) in held:
            continue
        if learner_of(rec) not in firsts:
            firsts.add(learner_of(rec))
            queries_seen.append(rec)
        else:
            train.append(rec)
    unseen = [r for r in records if learner_of(r) in held]
    retriever = Retriever.from_records(train)
    seen_rate = np.mean(retriever.familiar(queries_seen, "self"))
    unseen_rate = np.mean(retriever.familiar(unseen, "self"))
    assert seen_rate > unseen_rate, (seen_rate, unseen_rate)


def test_a_retrieval_state_without_bone_lengths_is_refused_for_the_gate_only():
    train = toy_records()
    state = Retriever.from_records(train).state_dict()
    assert len(state["bones"]) == len(train) and len(state["bones"][0]) == 21
    old = Retriever.from_state({k: v for k, v in state.items() if k != "bones"})
    assert old.neighbours(train, 2) == Retriever.from_state(state).neighbours(train, 2)  # retrieval as before
    with pytest.raises(ValueError, match="needs the training clips' bone lengths"):
        old.familiar(train)


def test_per_clip_flags_and_their_refusal():
    assert per_clip(True, 3) == [True, True, True] and per_clip([1, 0], 2) == [True, False]
    with pytest.raises(ValueError, match="one retrieved flag per clip"):
        per_clip([True], 2)


def test_each_clip_is_captioned_as_its_branch_would_caption_it(retrieval_run):
    """With flags set by hand, a familiar clip gets the retrieved-only pick and the others the
    generated decoding's, both computed by reranked_captions' own other sources."""
    from inference.decode import UsageError, reranked_captions

    model, _, _, batch = run_test_batch(retrieval_run, 3)
    model.eval()
    kw = dict(candidates=3, samples=2, max_new_tokens=8, seed=1)
    generated = reranked_captions(model, batch, source="generated", **kw)  # the weight scores retrieved texts only
    retrieved = reranked_captions(model, batch, source="retrieved", logprob_weight=0.1, **kw)
    assert generated != retrieved  # the two branches differ here, so the check below can fail
    for flags in ([True, False, True], [False, True, False]):
        got = reranked_captions(model, {**batch, "familiar": flags}, source="gated", logprob_weight=0.1, **kw)
        assert got == [r if f else g for f, r, g in zip(flags, retrieved, generated)]
    with pytest.raises(UsageError, match="familiar flag"):
        reranked_captions(model, {**batch, "familiar": [None] * 3}, source="gated", **kw)
    # a weight big enough to change some generated pick, were it applied to the generated candidates
    heavy = reranked_captions(model, batch, source="generated", logprob_weight=100.0, **kw)
    flags = [False, False, False]
    assert reranked_captions(model, {**batch, "familiar": flags}, source="gated", logprob_weight=100.0, **kw) == \
        generated
    if heavy == generated:
        pytest.skip("no generated pick changes with the weight here: the last check could not fail")


def test_a_gated_run_of_seed_1_captions_like_caption_py_and_the_page(tmp_path, capsys):
    import caption
    import train_t5_stagcn as trainer
    from dataloaders import synthetic
    from dataloaders.records import load_records
    from inference import page as db
    from tests.test_train import tiny

    data = tmp_path / "data"
    synthetic.write(data, seed=0, train_per_kind=3, test_per_kind=2)
    for name in ("train", "test"):  # three learners shared by both splits
        records = load_records(data / f"{name}.pkl")
        for i, rec in enumerate(records):
            rec["learner"] = f"L{i % 3}"
        (data / f"{name}.pkl").write_bytes(pickle.dumps(records, protocol=4))
    trainer.main(tiny(tmp_path, "gated", "seed=1", "data.kind=pickle", f"data.root={data}",
                      "data.standard=standard.pkl", "train.lr=1e-2", "train.epochs=2", "eval.every=2",
                      "model.retrieval.k=2", "eval.rerank=2", "eval.rerank_samples=2", "eval.max_new_tokens=8",
                      "eval.rerank_candidates=gated", "eval.rerank_logprob=0.05"))
    run = tmp_path / "gated"
    written = json.loads((run / "predictions" / "test_best.json").read_text())
    assert caption.main(["--run", str(run), str(data / "test.pkl"), "--standard", str(data / "standard.pkl"),
                         "--max_new_tokens", "8", "--json"]) == 0
    assert {k: v[0] for k, v in json.loads(capsys.readouterr().out).items()} == written
    from dataloaders.records import load_standards
    from inference import decode, inputs

    model, cfg, _ = decode.load_model(run=run, device="cpu")
    standards = load_standards(data / "standard.pkl")
    dataset = inputs.build_dataset(model, cfg, load_records(data / "test.pkl", standards=standards), standards,
                                   source="test")
    flags = [dataset[i]["familiar"] for i in range(len(dataset))]
    assert True in flags and False in flags  # both branches caption some test clip
    page = db.DemoRun(run=run, device="cpu", work_dir=tmp_path / "work")
    assert "likely of the same learner" in page.candidates_text(2)
    for name in page.clip_names()[:6]:
        result = page.caption(page.test_clip(name), decoding=db.Decoding(max_new_tokens=8))
        assert result.texts == [written[name]], name
    page.close()


def test_config_takes_gated_only_when_reranking():
    from configs.schema import ConfigError, load_config

    cfg = load_config("configs/boxing.yaml", ["eval.rerank_candidates=gated"])
    assert cfg.eval.rerank_candidates == "gated"
    with pytest.raises(ConfigError, match="eval.rerank_candidates: only used when reranking"):
        load_config("configs/boxing.yaml", ["eval.rerank=0", "eval.rerank_samples=0", "eval.rerank_candidates=gated"])
    assert load_config("configs/boxing.yaml", ["eval.rerank_candidates=gated", "eval.rerank_gate=0.7"]).eval.rerank_gate == 0.7
    with pytest.raises(ConfigError, match=r"eval.rerank_gate: expected a number > 0 \(the familiar threshold's scale\), found 0"):
        load_config("configs/boxing.yaml", ["eval.rerank_gate=0"])
