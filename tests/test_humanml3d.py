"""HumanML3D converter: a hand-made folder in the HumanML3D layout -> records checked by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataloaders import humanml3d
from dataloaders.humanml3d import ConversionError, Options, convert, convert_split, main
from dataloaders.records import load_records
from dataloaders.safe_pickle import safe_load
from dataloaders.splits import split_off

REPO_ROOT = Path(__file__).resolve().parents[1]
TOK = "a/DET person/NOUN walk/VERB"  # the tokens field is ignored by the converter


def _line(caption: str, start: str = "0.0", end: str = "0.0") -> str:
    return f"{caption}#{TOK}#{start}#{end}"


def _motion(seed: int, frames: int, joints: int = 22) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(frames, joints, 3))  # float64, as released


# id -> (motion frames or a marker, caption lines or None for no text file)
TRAIN = {
    "000001": (80, [
        _line("a person walks forward."),
        _line("  someone walks  "),                      # stripped
        _line("a man strolls.", "nan", "nan"),            # NaN times: whole clip
        _line("sub one", "0.5", "2.75"),                  # frames [10, 55)
        _line("sub two", "0.5", "2.75"),                  # same span, grouped
        _line("sub three", "1.0", "3.04"),                # 3.04 * 20 = 60.8: int -> 60
        _line("sub four", "0.0", "2.5"),                  # [0, 50)
        _line("sub five", "1.0", "9.0"),                  # [20, 180) cut to [20, 80)
    ]),
    "000002": (100, [
        _line("a person jumps."),
        "no hashes on this line",                         # bad line 2
        _line("   "),                                     # empty caption, line 3
        _line("a person hops up"),
        "",                                               # blank: ignored
    ]),
    "M000002": (100, [_line("a person jumps (mirrored).")]),
    "000003": ("missing", [_line("text without motion")]),
    "000004": (60, None),                                 # no text file
    "000005": (30, [_line("too short")]),
    "000006": ("nan", [_line("has NaN")]),
    "000007": ("21 joints", [_line("KIT-like skeleton")]),
    "000008": ("garbage", [_line("unreadable")]),
    "000009": (60, [_line("short sub-clip only", "0.5", "1.0")]),  # [10, 20): 10 frames
    "000010": (60, ["only#a#bad line"]),                  # 3 fields
    "000011": (250, [_line("long motion"), _line("long sub", "1.0", "4.0")]),
    "000012": (50, [_line("turns around"), _line("backwards span", "3.0", "1.0"),
                    _line("bad time", "soon", "2.0")]),
}
VAL = {"000013": (45, [_line("waves the right hand.")])}
TEST = {"000014": (120, [_line("sits down."), _line("stands up", "nan", "5.0")])}  # [0, 100)


def _write_id(root: Path, motion_id: str, spec, seed: int) -> np.ndarray | None:
    motion, lines = spec
    npy = root / "new_joints" / f"{motion_id}.npy"
    array = None
    if motion == "nan":
        array = _motion(seed, 60)
        array[17, 3, 1] = np.nan
    elif motion == "21 joints":
        array = _motion(seed, 60, joints=21)
    elif motion == "garbage":
        npy.write_bytes(b"this is not a numpy file")
    elif isinstance(motion, int):
        array = _motion(seed, motion)
    if array is not None:
        np.save(npy, array)
    if lines is not None:
        (root / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return array


@pytest.fixture()
def hml(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A HumanML3D-like folder; returns (root, {id: the array saved})."""
    root = tmp_path / "HumanML3D"
    (root / "new_joints").mkdir(parents=True)
    (root / "texts").mkdir()
    arrays = {}
    for split, ids in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        for seed, (motion_id, spec) in enumerate(ids.items()):
            array = _write_id(root, motion_id, spec, seed + 100 * len(split))
            if array is not None:
                arrays[motion_id] = array
        listed = list(ids) + (["000001"] if split == "train" else [])  # one duplicate
        (root / f"{split}.txt").write_text("\n".join(listed) + "\n\n", encoding="utf-8")
    return root, arrays


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], 66).astype(np.float32)


EXPECTED_TRAIN_LABELS = {
    "000001": ["a person walks forward.", "someone walks", "a man strolls."],
    "000001#0-50": ["sub four"],
    "000001#10-55": ["sub one", "sub two"],
    "000001#20-60": ["sub three"],
    "000001#20-80": ["sub five"],
    "000002": ["a person jumps.", "a person hops up"],
    "M000002": ["a person jumps (mirrored)."],
    "000012": ["turns around"],
}
EXPECTED_TRAIN_SKIPS = {
    "duplicate_id": 1, "missing_npy": 1, "missing_text": 1, "unreadable_npy": 1,
    "wrong_shape": 1, "nan_coordinates": 1,
    "too_short": 2,            # 000005 (30 frames), 000009#10-20
    "too_long": 1,             # 000011 (250 frames) with its sub-clip
    "bad_caption_line": 3,     # 000002:2, 000010:1, 000012:3
    "empty_caption": 1,        # 000002:3
    "empty_span": 1,           # 000012:2
    "no_whole_clip_captions": 1,  # 000009
    "no_captions": 1,          # 000010
}


def test_train_records_labels_and_skips(hml):
    root, arrays = hml
    records, report = convert_split(root, "train")
    assert {r["video_name"]: r["labels"] for r in records} == EXPECTED_TRAIN_LABELS
    assert [r["video_name"] for r in records] == list(EXPECTED_TRAIN_LABELS)  # file order
    assert all(r["motion_type"] is None for r in records)
    learners = {r["video_name"]: r["learner"] for r in records}
    assert learners["M000002"] == learners["000002"] == "000002"
    assert learners["000001#10-55"] == "000001"
    summary = report.to_dict()
    assert summary["skipped"] == EXPECTED_TRAIN_SKIPS
    assert (summary["ids"], summary["clips"], summary["subclips"], summary["records"]) \
        == (14, 4, 4, 8)
    assert summary["texts"] == 8 + 2 + 1 + 1  # 000001 (3 whole + 5 sub), 000002, M000002, 000012
    assert summary["subclip_lines_cut"] == 1
    examples = summary["examples"]
    assert examples["bad_caption_line"][0].startswith("texts/000002.txt:2:")
    assert examples["bad_caption_line"][1].startswith("texts/000010.txt:1:")
    assert examples["bad_caption_line"][2].startswith("texts/000012.txt:3: start time 'soon'")
    assert examples["empty_caption"][0].startswith("texts/000002.txt:3:")
    assert examples["empty_span"][0].startswith("texts/000012.txt:2: frames [60, 20)")
    assert examples["missing_npy"] == ["000003 (new_joints/000003.npy)"]
    assert examples["missing_text"] == ["000004 (texts/000004.txt)"]
    assert examples["too_short"] == ["000005 (30 frames)", "000009#10-20 (10 frames)"]
    assert examples["too_long"] == ["000011 (250 frames)"]
    assert examples["nan_coordinates"] == ["000006 (new_joints/000006.npy) (first at frame 17)"]
    assert "shape (60, 21, 3)" in examples["wrong_shape"][0]
    assert examples["duplicate_id"] == ["000001"]


def test_coordinates_equal_source_frames(hml):
    root, arrays = hml
    records, _ = convert_split(root, "train")
    by_name = {r["video_name"]: r["coordinates"] for r in records}
    for name, coords in by_name.items():
        assert coords.dtype == np.float32 and coords.ndim == 2 and coords.shape[1] == 66
    np.testing.assert_array_equal(by_name["000001"], _flat(arrays["000001"]))
    np.testing.assert_array_equal(by_name["M000002"], _flat(arrays["M000002"]))
    source = arrays["000001"]
    for name, start_s, end_s in (("000001#10-55", 0.5, 2.75), ("000001#20-60", 1.0, 3.04),
                                 ("000001#0-50", 0.0, 2.5), ("000001#20-80", 1.0, 9.0)):
        expected = source[int(start_s * 20):int(end_s * 20)]  # HumanML3D's own slice
        np.testing.assert_array_equal(by_name[name], _flat(expected))
    assert by_name["000001#20-60"].shape[0] == 40  # truncation, not rounding (61)


def test_convert_writes_loadable_pickles_and_summary(hml, tmp_path):
    root, arrays = hml
    out = tmp_path / "out"
    summary = convert(root, out)
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "test.pkl", "train.pkl",
                                                     "val.pkl"]
    train = load_records(out / "train.pkl")
    assert {r["video_name"]: r["labels"] for r in train} == EXPECTED_TRAIN_LABELS
    val = load_records(out / "val.pkl")
    assert [(r["video_name"], r["labels"]) for r in val] == [("000013", ["waves the right hand."])]
    np.testing.assert_allclose(val[0]["coordinates"], arrays["000013"].astype(np.float32))
    test = load_records(out / "test.pkl")
    assert [(r["video_name"], r["labels"]) for r in test] == [
        ("000014", ["sits down."]), ("000014#0-100", ["stands up"])]
    np.testing.assert_array_equal(test[1]["coordinates"],
                                  arrays["000014"][:100].astype(np.float32))
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["splits"]["train"]["skipped"] == EXPECTED_TRAIN_SKIPS
    assert on_disk["splits"]["val"]["skipped"] == {}
    assert on_disk["options"]["min_frames"] == 40 and on_disk["options"]["max_frames"] == 199
    raw = safe_load(out / "train.pkl")  # raw records: [T, 66] float32
    assert all(r["coordinates"].shape[1] == 66 and r["coordinates"].dtype == np.float32
               for r in raw)
    text = humanml3d.format_summary(summary)
    assert "bad_caption_line" in text and "texts/000002.txt:2" in text


def test_options_change_filtering(hml):
    root, _ = hml
    records, report = convert_split(root, "train", Options(keep_subclips_of_filtered=True))
    names = [r["video_name"] for r in records]
    assert "000011#20-80" in names and "000011" not in names
    assert report.to_dict()["skipped"]["too_long"] == 1
    records, report = convert_split(root, "train", Options(mirrored=False, max_frames=0,
                                                           min_frames=10))
    names = [r["video_name"] for r in records]
    assert "M000002" not in names and report.skipped["mirrored_excluded"] == 1
    assert {"000011", "000011#20-80", "000005", "000009#10-20"} <= set(names)
    records, report = convert_split(root, "train", Options(limit=2))
    assert report.ids == 2
    assert {r["video_name"] for r in records} == {"000001", "000001#0-50", "000001#10-55",
                                                  "000001#20-60", "000001#20-80", "000002"}


def test_cli_main_and_module_entry(hml, tmp_path, capsys):
    root, _ = hml
    out = tmp_path / "cli"
    assert main(["--root", str(root), "--out", str(out), "--splits", "val", "test"]) == 0
    printed = capsys.readouterr().out
    assert "wrote val.pkl, test.pkl" in printed and "nothing skipped" in printed
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "test.pkl", "val.pkl"]
    # existing pickles are kept unless --overwrite
    assert main(["--root", str(root), "--out", str(out), "--splits", "val"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, "-m", "dataloaders.humanml3d", "--root", str(root), "--out", str(out),
         "--splits", "val", "--overwrite", "--min-frames", "50"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # 000013 has 45 frames: no val record left
    assert "val.txt: no records left from 1 id(s) (skipped: too_short 1)" in done.stderr


def test_errors_name_the_missing_path(hml, tmp_path, capsys):
    root, _ = hml
    missing = tmp_path / "nowhere"
    with pytest.raises(ConversionError, match="nowhere: HumanML3D root folder not found"):
        convert(missing, tmp_path / "o1")
    (root / "val.txt").unlink()
    with pytest.raises(ConversionError, match=r"val\.txt: split file not found"):
        convert(root, tmp_path / "o2")
    assert main(["--root", str(root), "--out", str(tmp_path / "o3")]) == 2
    assert "val.txt: split file not found" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()  # nothing written
    (root / "texts").rename(root / "texts_moved")
    (root / "texts.zip").write_bytes(b"")
    with pytest.raises(ConversionError, match="texts: folder not found.*texts.zip"):
        convert(root, tmp_path / "o4", splits=["train"])


@pytest.mark.parametrize("line, expected", [
    (_line("whole"), ("whole", None)),
    (_line("nan whole", "nan", "nan"), ("nan whole", None)),
    (_line("open start", "nan", "2.0"), ("open start", (0, 40))),
    ("cap#with#extra#tokens#0.1#0.2", ("cap", (2, 4))),
])
def test_parse_caption_line(line, expected):
    assert humanml3d.parse_caption_line(line) == expected


@pytest.mark.parametrize("line", ["caption only", "a#b#c", _line("neg", "-1.0", "2.0"),
                                  _line("inf", "0.0", "inf"), _line("x", "one", "2")])
def test_parse_caption_line_rejects(line):
    with pytest.raises(humanml3d._BadLine):
        humanml3d.parse_caption_line(line)


# ---------------------------------------------------------------------------------------------
# The released layout with the real sample motion (../shared/data/HumanML3D-sample; skipped when
# absent). The captions are written here in the release's format: the release's texts cannot be
# had here. In the release every M<id> (the motion mirrored left-right) has its own caption file
# texts/M<id>.txt with "left" and "right" swapped, and is listed in the split files like any id.

REAL_TEXTS = [
    "a person walks forward and turns around.#a/DET person/NOUN walk/VERB forward/ADV and/CCONJ "
    "turn/VERB around/ADV#0.0#0.0",
    "someone walks and turns to their left.#someone/PRON walk/VERB and/CCONJ turn/VERB to/ADP "
    "their/DET left/NOUN#0.0#0.0",
    "a person takes a few steps.#a/DET person/NOUN take/VERB a/DET few/ADJ step/NOUN#0.5#3.0",
    # 1.18 s * 20 = 23.6: frame 23 (truncated, as HumanML3D's loader does); 8.5 s: frame 170
    "the person turns to the left.#the/DET person/NOUN turn/VERB to/ADP the/DET left/NOUN#1.18#8.5",
]
# ids made up for the test, cut from the sample so that val and test hold a motion too
CUT_IDS = {"900001": ("val", slice(0, 120)), "900002": ("test", slice(50, 170))}


def _swap_sides(line: str) -> str:
    return line.replace("left", "\0").replace("right", "left").replace("\0", "right")


@pytest.fixture()
def real_layout(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The released folder layout around the sample motion 012314 and its mirrored twin."""
    from dataloaders.humanml3d_vecs import mirror_joints
    from tests.test_humanml3d_vecs import SAMPLE_ID, sample_files

    joints = np.load(sample_files()[0])  # (170, 22, 3) float32, as released
    root = tmp_path / "HumanML3D"
    (root / "new_joints").mkdir(parents=True)
    (root / "texts").mkdir()
    np.save(root / "new_joints" / f"{SAMPLE_ID}.npy", joints)
    np.save(root / "new_joints" / f"M{SAMPLE_ID}.npy", mirror_joints(joints))
    (root / "texts" / f"{SAMPLE_ID}.txt").write_text("\n".join(REAL_TEXTS) + "\n", encoding="utf-8")
    (root / "texts" / f"M{SAMPLE_ID}.txt").write_text(
        "\n".join(_swap_sides(line) for line in REAL_TEXTS) + "\n", encoding="utf-8")
    splits = {"train": [SAMPLE_ID, f"M{SAMPLE_ID}"], "val": [], "test": []}
    for motion_id, (split, frames) in CUT_IDS.items():
        np.save(root / "new_joints" / f"{motion_id}.npy", joints[frames])
        (root / "texts" / f"{motion_id}.txt").write_text(
            "a person walks.#a/DET person/NOUN walk/VERB#0.0#0.0\n", encoding="utf-8")
        splits[split].append(motion_id)
    for split, ids in splits.items():  # the release's split files end with a newline
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return root, joints


def test_real_layout_converts_with_mirrored_ids_and_trains(real_layout, tmp_path):
    from dataloaders.humanml3d_vecs import mirror_joints

    root, joints = real_layout
    out = tmp_path / "converted"
    done = subprocess.run([sys.executable, "-m", "dataloaders.humanml3d", "--root", str(root),
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train: nothing skipped" in done.stdout
    train = load_records(out / "train.pkl")
    whole = [line.split("#")[0] for line in REAL_TEXTS[:2]]
    mirrored_whole = [_swap_sides(text) for text in whole]
    assert {r["video_name"]: r["labels"] for r in train} == {
        "012314": whole,
        "012314#10-60": ["a person takes a few steps."],
        "012314#23-170": ["the person turns to the left."],
        "M012314": mirrored_whole,
        "M012314#10-60": ["a person takes a few steps."],
        "M012314#23-170": ["the person turns to the right."],
    }
    by_name = {r["video_name"]: r["coordinates"] for r in train}
    mirrored = mirror_joints(joints)
    for prefix, motion in (("", joints), ("M", mirrored)):
        np.testing.assert_array_equal(by_name[f"{prefix}012314"], motion)  # (170, 22, 3)
        np.testing.assert_array_equal(by_name[f"{prefix}012314#10-60"], motion[10:60])
        np.testing.assert_array_equal(by_name[f"{prefix}012314#23-170"], motion[23:170])
    assert [(r["video_name"], len(r["coordinates"])) for r in load_records(out / "val.pkl")] \
        == [("900001", 120)]
    assert [(r["video_name"], len(r["coordinates"])) for r in load_records(out / "test.pkl")] \
        == [("900002", 120)]
    summary = json.loads((out / "summary.json").read_text())["splits"]["train"]
    assert (summary["ids"], summary["clips"], summary["subclips"], summary["texts"]) == (2, 2, 4, 8)

    # a motion, its mirrored twin and their sub-clips share one learner (the source motion), so a
    # validation part carved by learner takes them together; carved by name it splits them
    assert {r["learner"] for r in train} == {"012314"}
    records = train + load_records(out / "val.pkl")
    for seed in range(4):
        rest, held = split_off(records, 0.15, "learner", seed=seed)
        assert {r["learner"] for r in held}.isdisjoint(r["learner"] for r in rest)
    rest, held = split_off(records, 0.15, "none", seed=0)
    assert len(held) == 1 and held[0]["learner"] in {r["learner"] for r in rest}

    # the records train: a tiny run on them (tests/test_train.py's settings)
    import train_t5_stagcn as trainer
    from tests.test_train import tiny

    metrics = trainer.main(tiny(tmp_path / "runs", "hml", "data.kind=pickle", f"data.root={out}",
                                "data.train=train.pkl", "data.val=val.pkl", "data.test=test.pkl",
                                "data.labels=random", "train.batch_size=4"))
    run = tmp_path / "runs" / "hml"
    assert (run / "checkpoints" / "best.pt").is_file()
    predictions = json.loads((run / "predictions" / "test_best.json").read_text())
    assert set(predictions) == {"900002"}
    assert all(0.0 <= metrics[key] <= 10.0 for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert all(np.isfinite(x["train_loss"]) for x in lines)
    assert lines[1]["train_loss"] < lines[0]["train_loss"]  # 4.56 -> 4.01 (deterministic run)
    assert "6 train samples from 6 clips" in (run / "train.log").read_text()


def test_pretrain_on_humanml3d_format_then_finetune_on_bx(real_layout, tmp_path, bx_dir):
    """The path of the field on what exists here: the released sample (and its mirrored twin) with
    synthetic clips written in HumanML3D's layout, all in the canonical body frame, converted and
    pretrained on; then finetuned on BX (HybrIK's axes, put in the same frame) with
    ``train.init_from``. The runs record their frame and the finetuning its key report."""
    import shutil

    import yaml

    import train_t5_stagcn as trainer
    from dataloaders.synthetic import write_humanml3d_layout
    from tests.test_train import tiny

    sample_root, _ = real_layout
    root = tmp_path / "hml"
    write_humanml3d_layout(root, seed=0, mode="describe", train_per_kind=2, test_per_kind=2)
    for folder in ("new_joints", "texts"):
        for path in (sample_root / folder).iterdir():
            shutil.copy(path, root / folder / path.name)
    for split in ("train", "val", "test"):
        ids = (sample_root / f"{split}.txt").read_text().split()
        with open(root / f"{split}.txt", "a", encoding="utf-8") as f:
            f.write("".join(f"{i}\n" for i in ids))
    out = tmp_path / "converted"
    assert humanml3d.main(["--root", str(root), "--out", str(out), "--min-frames", "24"]) == 0
    train = load_records(out / "train.pkl")
    assert {"012314", "M012314"} <= {r["video_name"] for r in train} and len(train) > 20

    runs = tmp_path / "runs"
    model_size = ("data.kind=pickle", "data.labels=random", "train.batch_size=4", "data.segment=none")
    trainer.main(tiny(runs, "pretrain", *model_size, f"data.root={out}", "data.train=train.pkl",
                      "data.val=val.pkl", "data.test=test.pkl",
                      f"model.tokenizer.also_train_on=[{bx_dir / 'BX_train.pkl'}]"))
    trainer.main(tiny(runs, "finetune", *model_size, f"data.root={bx_dir}", "data.train=BX_train.pkl",
                      "data.test=BX_test.pkl", "data.standard=BX_standard.pkl", "train.epochs=1",
                      "train.limit_steps=2", f"train.init_from={runs / 'pretrain' / 'checkpoints' / 'best.pt'}"))

    for name in ("pretrain", "finetune"):
        assert yaml.safe_load((runs / name / "config.yaml").read_text())["data"]["frame"] == "canonical"
    pretrain_log = (runs / "pretrain" / "train.log").read_text()
    assert f"train.pkl: {len(train)} clip(s) put in the canonical body frame ({len(train)} in metres, y up)" \
        in pretrain_log
    log = (runs / "finetune" / "train.log").read_text()
    assert "BX_train.pkl: 163 clip(s) put in the canonical body frame (163 in HybrIK's camera axes" in log
    assert "BX_standard.pkl: 2 clip(s) put in the canonical body frame (2 in HybrIK's camera axes" in log
    assert "the source's clips and this run's are in the canonical body frame" in log
    assert "finetune: skipped (shape differs): none" in log and "finetune: missing (kept at init): none" in log
    assert "using the tokenizer stored in the checkpoint being finetuned from" in log
    assert (runs / "finetune" / "checkpoints" / "last.pt").is_file()
