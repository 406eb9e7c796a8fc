"""evaluation.baselines: each baseline recomputed independently (naive loops, pycocoevalcap
called directly), error handling, and the command on BX."""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from evaluation.baselines import (BASELINE_NAMES, BaselineInputError, bone_length_features, compute_baselines,
                                  format_table, main, motion_features, nearest_order)
from core.ptb_tokenizer import coco_tokenize_python

REPO_ROOT = Path(__file__).resolve().parents[1]
# SMPL-22 parents as docs/design.md lists them (written out here, not imported, to stay independent).
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]


# ------------------------------------------------------------------------------ naive references
def naive_motion_features(coords):
    """mean and std over frames of joint - joint 0, by loops."""
    n_frames = len(coords)
    rel = [[[coords[t][j][c] - coords[t][0][c] for c in range(3)] for j in range(22)] for t in range(n_frames)]
    mean = [sum(rel[t][j][c] for t in range(n_frames)) / n_frames for j in range(22) for c in range(3)]
    std = []
    for j in range(22):
        for c in range(3):
            m = mean[j * 3 + c]
            std.append(math.sqrt(sum((rel[t][j][c] - m) ** 2 for t in range(n_frames)) / n_frames))
    return mean + std


def naive_bone_lengths(coords):
    return [sum(math.dist(frame[j], frame[PARENTS[j]]) for frame in coords) / len(coords) for j in range(1, 22)]


def naive_nearest(train_feats, query, skip=None):
    """Indices of training rows by distance (ties: file order)."""
    dists = [(math.dist(query, f), i) for i, f in enumerate(train_feats) if i != skip]
    return [i for _, i in sorted(dists)]


def ngrams(tokens):
    words = tokens.split()
    return [Counter(tuple(words[i:i + k]) for i in range(len(words) - k + 1)) for k in range(1, 5)]


def naive_df(documents):
    df = Counter()
    for doc in documents:
        df.update({g for text in doc for order in ngrams(text) for g in order})
    return df, len(documents)


def naive_cider(hyp, refs, df_and_n):
    """CIDEr-D of one tokenised hypothesis against tokenised references, from its definition."""
    df, n_docs = df_and_n

    def vector(text):
        counts = ngrams(text)
        vec = [{g: c * (math.log(n_docs) - math.log(max(1, df[g]))) for g, c in order.items()} for order in counts]
        return vec, [math.sqrt(sum(v * v for v in order.values())) for order in vec], max(len(text.split()) - 1, 0)

    h_vec, h_norm, h_len = vector(hyp)
    total = 0.0
    for ref in refs:
        r_vec, r_norm, r_len = vector(ref)
        penalty = math.exp(-((h_len - r_len) ** 2) / 72.0)
        for k in range(4):
            dot = sum(min(v, r_vec[k].get(g, 0.0)) * r_vec[k].get(g, 0.0) for g, v in h_vec[k].items())
            if h_norm[k] and r_norm[k]:
                total += dot / (h_norm[k] * r_norm[k]) * penalty
    return total / 4 / len(refs) * 10


def coco_scores(predictions, references):
    """pycocoevalcap's Bleu, Rouge and Cider called directly on COCO-tokenised text."""
    ids = list(references)
    gts = {i: coco_tokenize_python(references[i]) for i in ids}
    res = {i: coco_tokenize_python([predictions[i]]) for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {"BLEU-1": bleu[0], "BLEU-4": bleu[3], "ROUGE-L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}


def naive_consensus(texts_of_neighbours, df_and_n):
    tokens = coco_tokenize_python(texts_of_neighbours)
    best, best_score = 0, -1.0
    for a, hyp in enumerate(tokens):
        score = sum(naive_cider(hyp, [ref], df_and_n) for b, ref in enumerate(tokens) if b != a)
        if score > best_score + 1e-12:
            best, best_score = a, score
    return texts_of_neighbours[best]


def zscore(rows):
    cols = list(zip(*rows))
    means = [sum(c) / len(c) for c in cols]
    stds = [math.sqrt(sum((x - m) ** 2 for x in c) / len(c)) for c, m in zip(cols, means)]
    stds = [s if s > 0 else 1.0 for s in stds]
    return lambda row: [(x - m) / s for x, m, s in zip(row, means, stds)]


# ------------------------------------------------------------------------------ toy records
def toy_record(name, offset, labels, seed, frames=6):
    rng = np.random.default_rng(seed)
    coords = rng.normal(size=(frames, 22, 3)).astype(np.float32) * 0.1 + offset
    coords[:, 1:] += offset * np.arange(1, 22)[:, None] * 0.1   # the offset shapes the skeleton
    return {"video_name": name, "coordinates": coords, "labels": list(labels),
            "augmented_labels": [labels[0] + " indeed"]}


def toy_sets():
    train = [toy_record("0_a_1", 0.0, ["Keep your guard up.", "Hands up."], 0),
             toy_record("1_a_1", 1.0, ["Rotate the hips.", "Turn the hips more."], 1),
             toy_record("2_a_1", 2.0, ["Hands up.", "Bend the knees."], 2),
             toy_record("3_a_1", 3.0, ["Lift the back foot.", "Hands up."], 3)]
    test = [toy_record("0_b_1", 0.05, ["Keep the guard up."], 10),
            toy_record("3_b_1", 2.95, ["Lift your back foot."], 11)]
    return train, test


def test_features_equal_naive_loops():
    coords = toy_record("x", 0.5, ["a"], 4)["coordinates"].astype(np.float64)
    np.testing.assert_allclose(motion_features(coords), naive_motion_features(coords.tolist()), atol=1e-12)
    np.testing.assert_allclose(bone_length_features(coords), naive_bone_lengths(coords.tolist()), atol=1e-12)
    assert motion_features(coords).shape == (132,) and bone_length_features(coords).shape == (21,)


def test_nearest_order_equals_a_naive_sort_with_chunks_and_exclusion(monkeypatch):
    import evaluation.baselines as baselines

    rng = np.random.default_rng(0)
    train = rng.integers(0, 3, size=(9, 2)).astype(float)   # small integers: many equal distances
    queries = np.vstack([train[:4], rng.random((3, 2))])
    monkeypatch.setattr(baselines, "NEAREST_CHUNK", 20)      # one query per block
    expected = [naive_nearest(train.tolist(), q) for q in queries.tolist()]
    assert nearest_order(train, queries).tolist() == expected
    assert nearest_order(train, queries, 2).tolist() == [row[:2] for row in expected]
    loo = nearest_order(train, train, exclude=range(9))
    assert loo.tolist() == [naive_nearest(train.tolist(), q, skip=i) for i, q in enumerate(train.tolist())]


def test_baselines_on_toy_records():
    train, test = toy_sets()
    results = compute_baselines(train, test, use_java=False)
    assert set(results) == {"most_frequent", "nearest_neighbour", "consensus", "bone_lengths", "paraphrase"}
    assert results["most_frequent"]["predictions"] == {"0_b_1": "Hands up.", "3_b_1": "Hands up."}
    assert results["nearest_neighbour"]["predictions"] == {"0_b_1": "Keep your guard up.",
                                                           "3_b_1": "Lift the back foot."}
    assert results["paraphrase"]["predictions"]["0_b_1"] == "Keep the guard up. indeed"
    assert results["paraphrase"]["reference_point"] is True
    assert results["most_frequent"]["distinct"] == 1 and results["nearest_neighbour"]["novelty"] == 0.0
    assert "leave-one-out" in results["consensus"]["k_selection"]
    assert set(results["consensus"]["k_scores"]) == {1, 2, 3}          # k <= 3 other clips
    for row in results.values():
        assert {"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "novelty", "distinct", "R@1", "R@3"} <= set(row)
        assert "METEOR" not in row


def test_consensus_k_is_chosen_on_validation_records_when_given():
    train, test = toy_sets()
    val = [toy_record("1_v_1", 1.02, ["Rotate the hips more."], 20)]
    row = compute_baselines(train, test, val, use_java=False)["consensus"]
    assert "validation" in row["k_selection"]
    assert set(row["k_scores"]) == {1, 2, 3}           # the listed k up to the 4 training clips
    assert row["k"] == min(k for k, v in row["k_scores"].items() if v == max(row["k_scores"].values()))


def test_a_single_training_clip_gives_its_labels():
    train, test = toy_sets()
    results = compute_baselines(train[1:2], test, use_java=False)
    assert results["consensus"]["k"] == 1 and results["consensus"]["k_scores"] == {}
    for name in BASELINE_NAMES:
        assert set(results[name]["predictions"].values()) <= set(train[1]["labels"]), name
    assert "default" in format_table(results)


def test_no_paraphrase_row_without_augmented_labels():
    train, test = toy_sets()
    for rec in test:
        rec["augmented_labels"] = []
    assert "paraphrase" not in compute_baselines(train, test, use_java=False)


def test_bad_inputs_raise_errors_naming_the_file():
    train, test = toy_sets()
    with pytest.raises(BaselineInputError, match="no training records"):
        compute_baselines([], test, use_java=False)
    with pytest.raises(BaselineInputError, match=r"S\.pkl: no test records"):
        compute_baselines(train, [], use_java=False, sources={"test": "S.pkl"})
    broken = [dict(r) for r in train]
    broken[2]["labels"] = []
    with pytest.raises(BaselineInputError, match=r"T\.pkl: record 2 \(video_name '2_a_1'\) has no usable labels"):
        compute_baselines(broken, test, use_java=False, sources={"train": "T.pkl"})


def write_pickle(path, records):
    with open(path, "wb") as handle:
        pickle.dump(records, handle)
    return path


def test_command_reports_a_file_without_labels_or_records(tmp_path, capsys):
    train, test = toy_sets()
    unlabeled = [{k: v for k, v in rec.items() if k != "labels"} for rec in test]
    train_path = write_pickle(tmp_path / "train.pkl", train)
    bad_test = write_pickle(tmp_path / "test_nolabels.pkl", unlabeled)
    assert main(["--train", str(train_path), "--test", str(bad_test), "--no-java"]) == 2
    err = capsys.readouterr().err
    assert "test_nolabels.pkl" in err and "labels" in err
    empty = write_pickle(tmp_path / "empty.pkl", [])
    assert main(["--train", str(empty), "--test", str(bad_test), "--no-java"]) == 2
    assert "empty.pkl" in capsys.readouterr().err


def test_command_with_validation_records_writes_json(tmp_path, capsys):
    train, test = toy_sets()
    val = [toy_record("1_v_1", 1.02, ["Rotate the hips more."], 20)]
    paths = [write_pickle(tmp_path / f"{name}.pkl", recs) for name, recs in
             (("train", train), ("test", test), ("val", val))]
    out = tmp_path / "deep" / "b.json"
    assert main(["--train", str(paths[0]), "--test", str(paths[1]), "--val", str(paths[2]), "--out", str(out),
                 "--no-java"]) == 0
    printed = capsys.readouterr().out
    assert "chosen on the validation records" in printed and "METEOR left out" in printed
    assert "no held-out reference figure" in printed          # one reference per test clip
    document = json.loads(out.read_text())
    assert document["clips"] == {"train": 4, "test": 2, "val": 1} and document["held_out_reference"] is None
    for name, row in document["baselines"].items():            # the ceiling still bounds every row
        assert row["R@1"] <= document["retrieval_ceiling"]["R@1"], name
    assert document["baselines"]["nearest_neighbour"]["predictions"]["3_b_1"] == "Lift the back foot."


# ------------------------------------------------------------------------------ BX
@pytest.fixture(scope="module")
def bx(bx_dir):
    from dataloaders.records import load_records

    train = load_records(bx_dir / "BX_train.pkl")
    test = load_records(bx_dir / "BX_test.pkl")
    return train, test, compute_baselines(train, test, use_java=False)


def references_of(records):
    return {r["video_name"]: r["labels"] for r in records}


def assert_scores_equal_pycocoevalcap(row, references):
    expected = coco_scores(row["predictions"], references)
    for metric, value in expected.items():
        assert row[metric] == pytest.approx(value, abs=1e-12), metric


def test_bx_nearest_neighbour_and_bone_lengths_equal_naive_retrieval(bx):
    train, test, results = bx
    for name, feature in (("nearest_neighbour", naive_motion_features), ("bone_lengths", naive_bone_lengths)):
        train_feats = [feature(r["coordinates"].astype(np.float64).tolist()) for r in train]
        expected = {}
        for rec in test:
            nearest = naive_nearest(train_feats, feature(rec["coordinates"].astype(np.float64).tolist()))[0]
            expected[rec["video_name"]] = train[nearest]["labels"][0]
        assert results[name]["predictions"] == expected, name
        assert_scores_equal_pycocoevalcap(results[name], references_of(test))
    assert results["nearest_neighbour"]["CIDEr"] == pytest.approx(0.557, abs=0.005)


def test_bx_most_frequent_and_paraphrase(bx):
    train, test, results = bx
    counts = Counter(t for r in train for t in r["labels"])
    top = counts.most_common(1)[0][0]
    assert set(results["most_frequent"]["predictions"].values()) == {top}
    assert results["paraphrase"]["predictions"] == {r["video_name"]: r["augmented_labels"][0] for r in test}
    for name in ("most_frequent", "paraphrase"):
        assert_scores_equal_pycocoevalcap(results[name], references_of(test))


def test_bx_consensus_equals_a_brute_force_loop(bx):
    train, test, results = bx
    row = results["consensus"]
    assert row["k"] == 3 and "leave-one-out" in row["k_selection"]
    standardise = zscore([naive_motion_features(r["coordinates"].astype(np.float64).tolist()) for r in train])
    train_feats = [standardise(naive_motion_features(r["coordinates"].astype(np.float64).tolist())) for r in train]
    train_df = naive_df([coco_tokenize_python(r["labels"]) for r in train])

    def predict(query_feats, k, skip=None):
        neighbours = naive_nearest(train_feats, query_feats, skip)[:k]
        return naive_consensus([t for i in neighbours for t in train[i]["labels"]], train_df)

    expected = {rec["video_name"]: predict(standardise(naive_motion_features(
        rec["coordinates"].astype(np.float64).tolist())), row["k"]) for rec in test}
    assert row["predictions"] == expected
    assert_scores_equal_pycocoevalcap(row, references_of(test))
    assert row["CIDEr"] == pytest.approx(1.06, abs=0.01)
    # the leave-one-out score of k = 1 and 3: each training clip queries the others
    train_refs = references_of(train)
    for k in (1, 3):
        loo = {r["video_name"]: predict(train_feats[i], k, skip=i) for i, r in enumerate(train)}
        assert row["k_scores"][k] == pytest.approx(coco_scores(loo, train_refs)["CIDEr"], abs=1e-9)


def test_bx_quality_columns_equal_direct_computations(bx):
    train, test, results = bx
    refs = references_of(test)
    seen = {" ".join(t.lower().split()).rstrip(".!? ") for r in train for t in r["labels"] + r["augmented_labels"]}
    ids = list(refs)
    gts = {i: coco_tokenize_python(refs[i]) for i in ids}
    for name, row in results.items():
        preds = row["predictions"]
        normalised = [" ".join(p.lower().split()).rstrip(".!? ") for p in preds.values()]
        assert row["novelty"] == pytest.approx(sum(p not in seen for p in normalised) / len(preds))
        assert row["distinct"] == len(set(normalised))
        if name not in ("nearest_neighbour", "consensus"):
            continue
        # R@1 from pycocoevalcap: one corpus call with clip q's caption on every clip
        hits = 0
        for q in ids:
            _, scores = Cider().compute_score(gts, {i: coco_tokenize_python([preds[q]]) for i in ids})
            own = scores[ids.index(q)]
            hits += sum(s >= own for s in scores) == 1
        assert row["R@1"] == pytest.approx(hits / len(ids)), name


def test_bx_ceiling_bounds_every_baseline_and_the_paraphrase(bx):
    from evaluation.baselines import ceiling_texts
    from evaluation.quality import held_out_reference, retrieval_ceiling

    train, test, results = bx
    ceiling = retrieval_ceiling(references_of(test), ceiling_texts(train, test), (1, 3))
    for name, row in results.items():
        assert row["R@1"] <= ceiling["R@1"] and row["R@3"] <= ceiling["R@3"], (name, row["R@1"], ceiling)
    assert ceiling["R@1"] >= max(row["R@1"] for row in results.values()) > 0.5  # the paraphrase: 0.63
    # a held-out reference is no ceiling on BX: a clip's three instructions share few words
    assert held_out_reference(references_of(test), (1,))["R@1"] < min(row["R@1"] for row in results.values()
                                                                      if row["R@1"] > 0)


def test_command_on_bx_prints_the_table_and_writes_json(bx_dir, tmp_path):
    out = tmp_path / "baselines.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "evaluation.baselines", "--train", str(bx_dir / "BX_train.pkl"),
                           "--test", str(bx_dir / "BX_test.pkl"), "--out", str(out), "--no-java"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header == ["baseline", "BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "novelty", "distinct", "R@1"]
    for name in ("most_frequent", "nearest_neighbour", "consensus", "bone_lengths", "paraphrase*"):
        assert any(line.startswith(name + " ") for line in done.stdout.splitlines()), name
    assert "consensus k = 3" in done.stdout and "ceiling" in done.stdout
    document = json.loads(out.read_text())
    assert document["baselines"]["consensus"]["k"] == 3
    assert document["clips"] == {"train": 163, "test": 41}
    assert len(document["baselines"]["nearest_neighbour"]["predictions"]) == 41
    ceiling = document["retrieval_ceiling"]
    assert all(row["R@1"] <= ceiling["R@1"] for row in document["baselines"].values())
    assert "held-out reference" in done.stdout and document["held_out_reference"]["R@1"] < ceiling["R@1"]
