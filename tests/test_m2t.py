"""Motion-to-text evaluation as the HumanML3D papers report it (evaluation.m2t, evaluation.matching).

The released evaluator weights, its vocabulary and HumanML3D's texts are not available here:
the checkpoints below carry the released key names and shapes with random values, the
vocabulary is a few words written by the test, and the texts are lines written in the released
``caption#tokens#from#to`` format.  The motion is the released sample in
``../shared/data/HumanML3D-sample`` (tests that need it skip when it is absent).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation import m2t
from evaluation.m2t import (TextLine, parse_text_line, read_records, three_references, tokenised_reference)
from evaluation.matching import (POS_INDEX, EvaluatorError, Evaluator, Normalisation, Vocabulary, distance_matrix,
                                 find_evaluator_files, find_meta, matching_figures, motion_batch, pad_tokens,
                                 process_text, repeated_matching)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "HumanML3D-sample"
META = SAMPLE / "evaluator_meta"
needs_sample = pytest.mark.skipif(not (SAMPLE / "new_joint_vecs" / "012314.npy").is_file(),
                                  reason="the shared HumanML3D sample is absent")
needs_meta = pytest.mark.skipif(not (META / "mean_eval.npy").is_file(),
                                reason="the shared evaluator_meta files are absent")

# The released text_mot_match checkpoint's entries: key -> shape, written out here from the
# published modules (attribute names and the HumanML3D sizes), independently of evaluation.matching.
GRU = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _gru(hidden: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for suffix in ("", "_reverse"):
        for name in GRU:
            shapes[f"gru.{name}{suffix}"] = (3 * hidden, hidden) if name.startswith("weight") else (3 * hidden,)
    return shapes


RELEASED = {
    "text_encoder": {"pos_emb.weight": (300, 15), "pos_emb.bias": (300,), "input_emb.weight": (512, 300),
                     "input_emb.bias": (512,), **_gru(512), "output_net.0.weight": (512, 1024),
                     "output_net.0.bias": (512,), "output_net.1.weight": (512,), "output_net.1.bias": (512,),
                     "output_net.3.weight": (512, 512), "output_net.3.bias": (512,), "hidden": (2, 1, 512)},
    "movement_encoder": {"main.0.weight": (512, 259, 4), "main.0.bias": (512,), "main.3.weight": (512, 512, 4),
                         "main.3.bias": (512,), "out_net.weight": (512, 512), "out_net.bias": (512,)},
    "motion_encoder": {"input_emb.weight": (1024, 512), "input_emb.bias": (1024,), **_gru(1024),
                       "output_net.0.weight": (1024, 2048), "output_net.0.bias": (1024,),
                       "output_net.1.weight": (1024,), "output_net.1.bias": (1024,),
                       "output_net.3.weight": (512, 1024), "output_net.3.bias": (512,), "hidden": (2, 1, 1024)},
}


def released_state(seed: int = 0) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {name: {key: 0.05 * torch.randn(shape, generator=generator) for key, shape in keys.items()}
             for name, keys in RELEASED.items()}
    # what the released file holds besides the weights
    state.update({"epoch": 7, "iter": 1234,
                  "opt_text_encoder": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]}})
    return state


def save(state: dict, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# ------------------------------------------------------------------------------------------
# The checkpoint: strict loading
# ------------------------------------------------------------------------------------------
def test_the_released_key_names_and_shapes_load_strictly(tmp_path):
    import torch

    state = released_state()
    evaluator = Evaluator.load(save(state, tmp_path / "finest.tar"))
    assert evaluator.epoch == 7
    for name, keys in RELEASED.items():
        loaded = evaluator.encoders[name].state_dict()
        assert set(loaded) == set(keys)
        for key in keys:
            assert torch.equal(loaded[key], state[name][key]), f"{name}.{key}"


@pytest.mark.parametrize("change, named", [
    (lambda s: s["motion_encoder"].pop("gru.bias_hh_l0_reverse"), ["motion_encoder", "missing",
                                                                   "gru.bias_hh_l0_reverse"]),
    (lambda s: s["text_encoder"].__setitem__("extra.weight", __import__("torch").zeros(3)),
     ["text_encoder", "unexpected", "extra.weight"]),
    (lambda s: s["text_encoder"].__setitem__("hidden", __import__("torch").zeros(2, 1, 256)),
     ["text_encoder", "wrong shape", "hidden [2, 1, 256] (expected [2, 1, 512])"]),
    (lambda s: s["movement_encoder"].__setitem__("main.0.weight", __import__("torch").zeros(512, 263, 4)),
     ["movement_encoder", "main.0.weight [512, 263, 4]"]),
    (lambda s: s.pop("movement_encoder"), ["no movement_encoder entry"]),
])
def test_a_wrong_state_dict_is_refused_naming_the_key(tmp_path, change, named):
    state = released_state()
    change(state)
    with pytest.raises(EvaluatorError) as caught:
        Evaluator.load(save(state, tmp_path / "finest.tar"))
    message = str(caught.value)
    assert "\n" not in message
    for part in named:
        assert part in message


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    state = released_state()
    state["options"] = argparse.Namespace(lr=1)  # a pickled object, not plain data
    with pytest.raises(EvaluatorError, match="refused"):
        Evaluator.load(save(state, tmp_path / "finest.tar"))


# ------------------------------------------------------------------------------------------
# R-Precision and MM-Dist against loops
# ------------------------------------------------------------------------------------------
def naive_figures(motions, texts, order, direction, group=32, top_k=3):
    hits, total, used = [0] * top_k, 0.0, 0
    for g in range(len(order) // group):
        members = list(order[g * group:(g + 1) * group])
        rows, columns = (motions, texts) if direction == "motion-to-text" else (texts, motions)
        for i, a in enumerate(members):
            distances = [math.sqrt(sum((x - y) ** 2 for x, y in zip(rows[a], columns[b]))) for b in members]
            total += distances[i]
            used += 1
            # the partner's rank: how many are nearer, ties counted before it when their index is lower
            rank = sum(1 for j, d in enumerate(distances) if d < distances[i] or (d == distances[i] and j < i))
            for k in range(top_k):
                hits[k] += rank <= k
    return [h / used for h in hits], total / used, used


@pytest.mark.parametrize("direction", ["motion-to-text", "text-to-motion"])
def test_r_precision_and_mm_dist_equal_loops(direction):
    rng = np.random.default_rng(3)
    n, dim = 70, 6                                   # two groups of 32, 6 clips left out
    motions = rng.normal(size=(n, dim))
    texts = motions + rng.normal(scale=1.2, size=(n, dim))  # noisy partners: ranks spread over 1..32
    texts[5] = texts[9]                              # two identical texts: a tie in every row
    order = rng.permutation(n)
    figures = matching_figures(motions, texts, order, direction=direction)
    hits, mm_dist, used = naive_figures(motions, texts, order, direction)
    assert figures["clips"] == used == 64 and figures["left_out"] == 6
    assert [figures[f"R-Precision top-{k}"] for k in (1, 2, 3)] == pytest.approx(hits, abs=1e-12)
    assert figures["MM-Dist"] == pytest.approx(mm_dist, rel=1e-12)
    assert 0 < hits[0] < hits[1] < hits[2] < 1


def test_the_directions_differ_and_perfect_pairs_score_one():
    rng = np.random.default_rng(0)
    motions = rng.normal(size=(32, 4))
    figures = matching_figures(motions, motions.copy(), np.arange(32))
    assert figures["R-Precision top-1"] == 1.0 and figures["MM-Dist"] == 0.0
    texts = rng.normal(size=(32, 4))
    a = matching_figures(motions, texts, np.arange(32), direction="motion-to-text")
    b = matching_figures(motions, texts, np.arange(32), direction="text-to-motion")
    assert a["MM-Dist"] == pytest.approx(b["MM-Dist"])
    assert distance_matrix(motions, texts) == pytest.approx(distance_matrix(texts, motions).T)
    with pytest.raises(EvaluatorError, match="at least 32 clips"):
        matching_figures(motions[:31], texts[:31], np.arange(31))


def test_replications_use_seeded_orders_and_report_the_interval():
    rng = np.random.default_rng(1)
    motions = rng.normal(size=(80, 5))
    texts = motions + rng.normal(scale=1.0, size=(80, 5))
    result = repeated_matching(motions, texts, seed=4, replications=3, direction="motion-to-text")
    again = repeated_matching(motions, texts, seed=4, replications=3, direction="motion-to-text")
    assert result["mean"] == again["mean"]
    runs = [matching_figures(motions, texts, np.random.default_rng(4 + r).permutation(80)) for r in range(3)]
    top1 = np.array([run["R-Precision top-1"] for run in runs])
    assert result["mean"]["R-Precision top-1"] == pytest.approx(top1.mean())
    assert result["interval"]["R-Precision top-1"] == pytest.approx(1.96 * top1.std() / math.sqrt(3))


# ------------------------------------------------------------------------------------------
# The evaluator's input normalisation (the shared evaluator_meta files)
# ------------------------------------------------------------------------------------------
@needs_sample
@needs_meta
def test_motions_are_normalised_with_the_evaluators_own_statistics():
    assert find_meta(META) == (META / "mean_eval.npy", META / "std_eval.npy")
    norm = Normalisation.from_files(*find_meta(META))
    features = np.load(SAMPLE / "new_joint_vecs" / "012314.npy")        # (169 or 170, 263)
    inputs, steps = motion_batch([features, features[:50]], norm)
    expected = ((features.astype(np.float64) - np.load(META / "mean_eval.npy")) / np.load(META / "std_eval.npy"))
    n = len(features)
    assert inputs.shape == (2, 196, 259) and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs[0, :n], expected[:, :259], rtol=1e-6, atol=1e-6)
    assert not inputs[0, n:].any() and not inputs[1, 50:].any()          # zero padding to 196 frames
    assert list(steps) == [n // 4, 50 // 4]
    # the dataset's own Mean/Std differ (the evaluator's weight root and foot features differently)
    dataset = (features - np.load(SAMPLE / "Mean.npy")) / np.load(SAMPLE / "Std.npy")
    assert np.abs(dataset[:, :4] - expected[:, :4]).max() > 1.0
    # normalised with its own statistics the released motion is of the usual size
    assert np.abs(expected[:, :259]).mean() < 3.0


@needs_meta
def test_the_evaluator_folder_finds_the_shared_meta_through_the_flag(tmp_path):
    folder = evaluator_folder(tmp_path / "evaluator", meta=False)
    with pytest.raises(EvaluatorError, match="mean_eval.npy and std_eval.npy"):
        find_evaluator_files(folder)
    files = find_evaluator_files(folder, META)
    assert (files.mean, files.std) == (META / "mean_eval.npy", META / "std_eval.npy")
    assert files.checkpoint == folder / "text_mot_match" / "model" / "finest.tar"
    assert files.vocabulary == (folder / "glove").resolve()


# ------------------------------------------------------------------------------------------
# Reference conventions and text processing
# ------------------------------------------------------------------------------------------
EXAMPLE = ("a person walks forward, then turns left and sits down.#a/DET person/NOUN walk/VERB forward/ADV "
           "then/ADV turn/VERB left/ADV and/CCONJ sit/VERB down/ADP#0.0#0.0")


def test_the_reference_conventions_give_the_documented_tokens():
    line = parse_text_line(EXAMPLE)
    assert line.whole_clip
    assert line.reference("tokenised") == "a person walk forward then turn left and sit down"
    assert line.reference("raw") == "a person walks forward, then turns left and sits down."
    assert tokenised_reference(["jump/VERB", "up/ADP"]) == "jump up"
    sub = parse_text_line("he jumps#he/PRON jump/VERB#1.5#nan")
    assert (sub.start, sub.end, sub.whole_clip) == (1.5, 0.0, False)
    assert three_references(["a"]) == ["a", "a", "a"]
    assert three_references(["a", "b"]) == ["a", "b", "a"]
    assert three_references(["a", "b", "c", "d"]) == ["a", "b", "c"]
    with pytest.raises(m2t.M2TInputError, match="caption#tokens#from#to"):
        parse_text_line("no fields here")
    record = TextLine("Keep your guard up.", None)
    assert record.reference("raw") == "Keep your guard up."
    with pytest.raises(m2t.M2TInputError, match="--references tokenised"):
        record.reference("tokenised")


class FakeNlp:
    """Stands in for a spaCy pipeline: fixed (text, pos, lemma) per word; records its input."""

    TABLE = {"The": ("DET", "the"), "person": ("NOUN", "person"), "walks": ("VERB", "walk"),
             "left": ("VERB", "leave"), "quickly": ("ADV", "quickly"), "stairs": ("NOUN", "stair"),
             "upstairs": ("ADV", "upstairs"), "3": ("NUM", "3"), ",": ("PUNCT", ","), ".": ("PUNCT", "."),
             "don't": ("AUX", "do"), "kicks": ("VERB", "kick")}

    def __init__(self):
        self.seen = []

    def __call__(self, sentence):
        self.seen.append(sentence)
        words = sentence.replace(",", " ,").replace(".", " .").split()
        return [SimpleNamespace(text=w, pos_=self.TABLE.get(w, ("X", w))[0], lemma_=self.TABLE.get(w, ("X", w))[1])
                for w in words]


def test_predictions_are_tagged_as_humanml3d_tagged_its_captions():
    nlp = FakeNlp()
    tokens = process_text(nlp, " The person walks left, quickly up-stairs 3 times. ")
    assert nlp.seen == ["The person walks left, quickly upstairs 3 times."]  # hyphens removed first
    # punctuation and numbers dropped, nouns and verbs lemmatised except "left", case kept
    assert tokens == ["The/DET", "person/NOUN", "walk/VERB", "left/VERB", "quickly/ADV", "upstairs/ADV",
                      "times/X"]


def write_vocabulary(folder: Path, words=("sos", "eos", "unk", "a", "person", "walk", "left", "kick", "leg")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "our_vab_data.npy", rng.normal(size=(len(words), 300)).astype(np.float32))
    with open(folder / "our_vab_words.pkl", "wb") as f:
        pickle.dump(list(words), f, protocol=3)
    with open(folder / "our_vab_idx.pkl", "wb") as f:
        pickle.dump({w: i for i, w in enumerate(words)}, f, protocol=3)
    return folder


def test_the_vocabulary_gives_vectors_and_the_important_word_tags(tmp_path):
    vocabulary = Vocabulary.from_folder(write_vocabulary(tmp_path))
    index = {w: i for i, w in enumerate(("sos", "eos", "unk", "a", "person", "walk", "left", "kick", "leg"))}
    vector, tag = vocabulary.lookup("walk/VERB")
    assert tag == POS_INDEX["Act_VIP"] and np.array_equal(vector, vocabulary.vectors[index["walk"]])
    assert vocabulary.lookup("left/VERB")[1] == POS_INDEX["Loc_VIP"]
    assert vocabulary.lookup("leg/NOUN")[1] == POS_INDEX["Body_VIP"]
    assert vocabulary.lookup("person/NOUN")[1] == POS_INDEX["NOUN"]
    assert vocabulary.lookup("a/CCONJ")[1] == POS_INDEX["OTHER"]                  # a tag outside the 15
    unknown, tag = vocabulary.lookup("Walk/VERB")                                # case matters
    assert tag == POS_INDEX["OTHER"] and np.array_equal(unknown, vocabulary.vectors[index["unk"]])
    padded, length = pad_tokens(["a/DET"] * 25)
    assert len(padded) == 22 and length == 22 and padded[0] == "sos/OTHER" and padded[-1] == "eos/OTHER"
    padded, length = pad_tokens(["a/DET", "person/NOUN"])
    assert length == 4 and padded[4:] == ["unk/OTHER"] * 18
    words, tags, lengths = vocabulary.encode([["a/DET", "person/NOUN"]])
    assert words.shape == (1, 22, 300) and tags.shape == (1, 22, 15) and list(lengths) == [4]
    assert tags.sum() == 22 and tags[0, 0, POS_INDEX["OTHER"]] == 1


def test_a_vocabulary_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_vocabulary(tmp_path)
    with open(folder / "our_vab_idx.pkl", "wb") as f:
        pickle.dump(argparse.Namespace(x=1), f)
    with pytest.raises(EvaluatorError, match="refused to unpickle"):
        Vocabulary.from_folder(folder)


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------
def evaluator_folder(folder: Path, meta: bool = True) -> Path:
    save(released_state(), folder / "text_mot_match" / "model" / "finest.tar")
    write_vocabulary(folder / "glove")
    if meta:
        for name in ("mean_eval.npy", "std_eval.npy"):
            (folder / "meta").mkdir(exist_ok=True)
            (folder / "meta" / name).write_bytes((META / name).read_bytes())
    return folder


def humanml3d_folder(root: Path, n_clips: int = 34) -> tuple[Path, dict[str, str]]:
    """The sample motion as a HumanML3D folder: whole-clip lines and ``n_clips - 1`` sub-clips
    of 40 frames (named as the converter names them); returns the folder and predictions."""
    (root / "texts").mkdir(parents=True)
    (root / "new_joint_vecs").mkdir()
    (root / "new_joint_vecs" / "012314.npy").write_bytes((SAMPLE / "new_joint_vecs" / "012314.npy").read_bytes())
    lines = [EXAMPLE, "a person kicks with the left leg.#a/DET person/NOUN kick/VERB with/ADP the/DET left/ADJ "
                      "leg/NOUN#0.0#0.0"]
    predictions = {"012314": "a person walk forward then turn left and sit down"}
    for s in range(n_clips - 1):
        start, end = s * 3 / 20, (s * 3 + 40) / 20
        lines.append(f"a person walks#a/DET person/NOUN walk/VERB#{start}#{end}")
        predictions[f"012314#{int(start * 20)}-{int(end * 20)}"] = "a person walks"
    (root / "texts" / "012314.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "test.txt").write_text("012314\n000001\n", encoding="utf-8")
    return root, predictions


@needs_sample
def test_clip_ids_of_each_form_find_their_lines(tmp_path):
    root, _ = humanml3d_folder(tmp_path / "h")
    folder = m2t.HumanML3DFolder(root)
    whole = folder.clip("012314")
    assert [line.reference("tokenised") for line in whole.lines][0] == "a person walk forward then turn left and sit down"
    assert len(whole.lines) == 2 and folder.features(whole).shape[1] == 263
    sub = folder.clip("012314#3-43")
    assert sub.frames == (3, 43) and len(sub.lines) == 1 and folder.features(sub).shape == (40, 263)
    tm2t = folder.clip("012314_0.150000_2.150000")
    assert tm2t.frames == (3, 43) and tm2t.lines == sub.lines
    assert folder.clip("012314#4-44") is None and folder.clip("999999") is None


def run_command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation.m2t", *argv], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.fixture
def records(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "test.json"
    data.write_text(json.dumps([{"video_name": "a", "labels": ["Keep your guard up.", "Guard up!"]},
                                {"video_name": "b", "labels": ["Bend the knees."]}]), encoding="utf-8")
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps({"a": "Keep your guard up.", "b": "Bend your knees."}), encoding="utf-8")
    return predictions, data


def test_the_command_on_captions_only_prints_what_it_can_and_names_the_rest(records):
    predictions, data = records
    done = run_command("--predictions", str(predictions), "--data", str(data), "--references", "raw")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "references: raw" in out and "scorer: metricverse" in out
    for figure in ("BLEU@1", "BLEU@4", "ROUGE-L", "CIDEr"):
        assert figure in out
    assert "BERTScore: needs --bertscore-model DIR" in out
    assert "R-Precision, MM-Dist: needs --evaluator DIR" in out and "--spacy-model NAME" in out


@pytest.mark.parametrize("argv, flag", [
    (["--references", "tokenised"], "--references tokenised"),
    (["--references", "raw", "--evaluator", "/nonexistent/evaluator"], "--evaluator"),
    (["--references", "raw", "--bertscore-model", "/nonexistent/roberta-large"], "--bertscore-model"),
    (["--references", "raw", "--require-all"], "--require-all"),
    (["--references", "raw", "--data", "/nonexistent/data"], "--data"),
])
def test_missing_inputs_are_one_line_errors_with_status_2(records, argv, flag):
    predictions, data = records
    if "--data" not in argv:
        argv = ["--data", str(data), *argv]
    done = run_command("--predictions", str(predictions), *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], done.stderr


def test_the_spacy_error_is_one_line(records):
    if importlib.util.find_spec("spacy") is not None:
        pytest.skip("spaCy is installed here: the missing-package error cannot be seen")
    predictions, data = records
    done = run_command("--predictions", str(predictions), "--data", str(data), "--references", "raw",
                       "--spacy-model", "en_core_web_sm")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--spacy-model" in lines[0] and "requirements-m2t.txt" in lines[0]


@needs_sample
@needs_meta
def test_an_incomplete_evaluator_folder_names_the_missing_file(tmp_path):
    root, predictions = humanml3d_folder(tmp_path / "h")
    (tmp_path / "p.json").write_text(json.dumps(predictions), encoding="utf-8")
    folder = tmp_path / "evaluator"
    save({"x": 1}, folder / "text_mot_match" / "model" / "finest.tar")
    done = run_command("--predictions", str(tmp_path / "p.json"), "--data", str(root), "--references", "tokenised",
                       "--evaluator", str(folder), "--evaluator-meta", str(META))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--evaluator" in lines[0] and "our_vab_data.npy" in lines[0]
    write_vocabulary(folder / "glove")                   # now complete, but the checkpoint is not the evaluator
    done = run_command("--predictions", str(tmp_path / "p.json"), "--data", str(root), "--references", "tokenised",
                       "--evaluator", str(folder), "--evaluator-meta", str(META))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no text_encoder, movement_encoder, motion_encoder entries" in lines[0]


@needs_sample
@needs_meta
def test_the_command_with_an_evaluator_reports_both_rows(tmp_path, monkeypatch, capsys):
    """End to end on the sample motion (34 clips) with random weights of the released shapes;
    spaCy is replaced by a tagger that knows the few words of the predictions."""
    root, predictions = humanml3d_folder(tmp_path / "h")
    (tmp_path / "p.json").write_text(json.dumps(predictions), encoding="utf-8")
    folder = evaluator_folder(tmp_path / "evaluator")
    tags = {"a": ("DET", "a"), "person": ("NOUN", "person"), "walk": ("VERB", "walk"), "walks": ("VERB", "walk"),
            "forward": ("ADV", "forward"), "then": ("ADV", "then"), "turn": ("VERB", "turn"),
            "left": ("ADV", "left"), "and": ("CCONJ", "and"), "sit": ("VERB", "sit"), "down": ("ADP", "down")}
    nlp = lambda s: [SimpleNamespace(text=w, pos_=tags[w][0], lemma_=tags[w][1]) for w in s.split()]  # noqa: E731
    monkeypatch.setattr("evaluation.matching.load_spacy", lambda name: nlp)
    out_json = tmp_path / "m.json"
    status = m2t.main(["--predictions", str(tmp_path / "p.json"), "--data", str(root), "--references", "tokenised",
                       "--evaluator", str(folder), "--spacy-model", "fake", "--scorer", "nlgeval",
                       "--prediction-form", "tokenised", "--out", str(out_json)])
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(out_json.read_text())
    rows = document["matching"]["rows"]
    assert set(rows) == {"predictions", "references"}
    for row in rows.values():
        assert row["clips"] == 32 and row["left_out"] == 2
        assert 0 <= row["mean"]["R-Precision top-1"] <= row["mean"]["R-Precision top-3"] <= 1
        assert row["mean"]["MM-Dist"] > 0
    assert "text-motion matching (motion-to-text, groups of 32, seed 0" in out
    assert "the predictions name 1 of the 2 ids in test.txt" in out
    assert set(document["not_computed"]) == {"BERTScore"}
    # predictions equal to the first tokenised reference of every clip: unigram precision 1
    assert document["figures"]["BLEU@1"] == pytest.approx(1.0)


def test_dataset_records_become_clips_with_captions_only(records):
    _, data = records
    clips = read_records(data)
    assert [line.caption for line in clips["a"].lines] == ["Keep your guard up.", "Guard up!"]
    assert clips["b"].lines[0].tokens is None


def tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT with random weights and a word-level vocabulary, saved as a local model folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    words = "a person walk walks forward then turn turns left and sit sits down kick kicks with the leg".split()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), model_max_length=64).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words) + 7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@needs_sample
def test_bertscore_runs_with_idf_through_the_command(tmp_path, capsys):
    pytest.importorskip("bert_score", reason="bert-score is optional (requirements-m2t.txt)")
    root, predictions = humanml3d_folder(tmp_path / "h")
    predictions = {name: text.replace("walks", "walk") for name, text in predictions.items()}  # = a reference
    (tmp_path / "p.json").write_text(json.dumps(predictions), encoding="utf-8")
    model = tiny_bert(tmp_path / "tiny-bert")
    baseline = tmp_path / "baseline.tsv"
    baseline.write_text("LAYER,P,R,F\n0,0.5,0.5,0.5\n1,0.5,0.5,0.5\n2,0.5,0.5,0.5\n")
    out = tmp_path / "m.json"
    assert m2t.main(["--predictions", str(tmp_path / "p.json"), "--data", str(root), "--references", "tokenised",
                     "--bertscore-model", str(model), "--bertscore-baseline", str(baseline), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["bertscore"] == "BERTScore-F1 (idf, rescaled)"
    # every prediction equals its first tokenised reference: F1 1, and 1 after rescaling
    assert document["figures"]["BERTScore"] == pytest.approx(1.0, abs=1e-4)
    assert "BERTScore-F1 (idf, rescaled)" in capsys.readouterr().out


def test_a_spacy_pipeline_folder_loads_and_tags(tmp_path):
    spacy = pytest.importorskip("spacy", reason="spaCy is optional (requirements-m2t.txt)")
    from evaluation.matching import load_spacy

    spacy.blank("en").to_disk(tmp_path / "blank_en")   # a tokenizer only: no tags, so every tag is ""
    nlp = load_spacy(str(tmp_path / "blank_en"))
    assert process_text(nlp, "A well-known man walks, twice.") == ["A/", "wellknown/", "man/", "walks/", "twice/"]
    with pytest.raises(EvaluatorError, match="--spacy-model 'no_such_pipeline'"):
        load_spacy("no_such_pipeline")
