"""caption.py and inference.decode on a tiny synthetic run trained once for this module."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import caption
import train_t5_stagcn as trainer
from dataloaders import body_frame
from dataloaders.build import read_records
from dataloaders.collate import Collator
from dataloaders.dataset import MotionTextDataset
from dataloaders.records import DataError, load_records, load_standards
from inference import decode, inputs
from tests.test_train import tiny as train_tiny

REPO = Path(trainer.__file__).resolve().parent
MAX_NEW = 6


def tiny(results: Path, experiment: str, *extra: str) -> list[str]:
    """tests/test_train.py's run of a few seconds, with a prompt, evaluated at the end only."""
    return train_tiny(results, experiment, "train.lr=1e-2", "train.epochs=3", "train.batch_size=4", "eval.every=5",
                      "eval.num_logged_pictures=2",
                      'model.prompt="Motion Instruction : "', *extra)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("caption_runs")
    trainer.main(tiny(results, "cap"))  # reference: subtract, time_pool (configs/synthetic.yaml)
    return results / "cap"


@pytest.fixture(scope="module")
def trained(run):
    model, cfg, _ = decode.load_model(run=run, device="cpu")
    return model, cfg


@pytest.fixture(scope="module")
def test_records(run):
    return load_records(run / "data" / "test.pkl")


def caption_json(capsys, *args: str) -> tuple[dict, str]:
    """Run caption.main in-process with --json; (parsed stdout, stderr)."""
    assert caption.main([*args, "--json", "--max_new_tokens", str(MAX_NEW)]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def training_path_captions(model, cfg, run: Path, names: list[str] | None = None, **gen) -> dict[str, str]:
    """What evaluation during training writes: build_data's test set (read in the run's body
    frame), its Collator, model.generate."""
    raw_standards = load_standards(run / "data" / "standard.pkl")
    standards = body_frame.convert_standards(raw_standards, cfg.data.frame, "standard.pkl")
    records = read_records(cfg.data, run / "data" / "test.pkl", raw_standards)
    records = [r for r in records if names is None or r["video_name"] in names]
    test = MotionTextDataset(records, standards=standards, segment=cfg.data.segment,
                             normalise=cfg.data.normalise, reference=True, seed=cfg.seed, train=False)
    batch = Collator(model.tokenizer, cfg.data.max_target_len)([test[i] for i in range(len(test))])
    texts = model.generate(batch, num_beams=1, max_new_tokens=MAX_NEW, **gen)
    return dict(zip(batch["video_names"], texts))


# ------------------------------------------------------------------------------------------ npy
def test_npy_inputs_of_both_shapes_give_the_same_caption(run, trained, test_records, tmp_path, capsys):
    model, _ = trained
    rec = test_records[4]
    coords = rec["coordinates"]  # [T, 22, 3]
    np.save(tmp_path / "joints.npy", coords)
    np.save(tmp_path / "flat.npy", coords.reshape(len(coords), 66))
    got, err = caption_json(capsys, "--run", str(run), str(tmp_path / "joints.npy"), str(tmp_path / "flat.npy"))
    assert set(got) == {"joints", "flat"}
    assert got["joints"] == got["flat"] and len(got["joints"]) == 1
    assert err.count("first frame") == 1  # reference model, no standard: said once
    # independent path: the record itself, no standard (the first frame repeated stands in)
    ds = MotionTextDataset([rec], None, train=False, normalise=trained[1].data.normalise)
    expected = model.generate(Collator()([ds[0]]), max_new_tokens=MAX_NEW)
    assert got["joints"] == expected


def test_read_motion_accepts_66_columns_and_rejects_bad_arrays(tmp_path):
    coords = np.arange(4 * 66, dtype=np.float64).reshape(4, 66)
    np.save(tmp_path / "ok.npy", coords)
    read = inputs.read_motion(tmp_path / "ok.npy")
    assert read.dtype == np.float32 and read.shape == (4, 22, 3)
    assert read[2, 5].tolist() == [2 * 66 + 15, 2 * 66 + 16, 2 * 66 + 17]  # joint 5 = columns 15..17
    for name, array, found in (("one.npy", np.zeros((1, 22, 3)), "1 frame"),
                               ("nan.npy", np.full((3, 22, 3), np.nan), "non-finite"),
                               ("text.npy", np.array(["a", "b"]), "dtype")):
        np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=found) as info:
            inputs.read_motion(tmp_path / name)
        assert name in str(info.value)


# ------------------------------------------------------------------------------------ pickles
def test_dataset_pickle_all_clips_and_by_video_name(run, test_records, capsys):
    got, _ = caption_json(capsys, "--run", str(run), str(run / "data" / "test.pkl"))
    assert set(got) == {r["video_name"] for r in test_records}
    assert all(len(texts) == 1 and isinstance(texts[0], str) for texts in got.values())
    names = [test_records[1]["video_name"], test_records[6]["video_name"]]
    assert caption.main(["--run", str(run), str(run / "data" / "test.pkl"), "--video_name", names[0],
                         "--video_name", names[1], "--max_new_tokens", str(MAX_NEW)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == names  # plain text: name<TAB>text, input order
    assert [line.split("\t", 1)[1] for line in lines] == [got[n][0] for n in names]


def test_standard_pickle_captions_equal_the_training_path(run, trained, capsys):
    model, cfg = trained
    got, err = caption_json(capsys, "--ckpt", str(run / "checkpoints" / "best.pt"), str(run / "data" / "test.pkl"),
                            "--standard", str(run / "data" / "standard.pkl"), "--batch_size", "3")
    assert "first frame" not in err
    # the captions training itself wrote for the test split with best.pt (greedy, MAX_NEW tokens)
    written = json.loads((run / "predictions" / "test_best.json").read_text())
    assert cfg.eval.max_new_tokens == MAX_NEW and cfg.eval.num_beams == 1
    assert {k: v[0] for k, v in got.items()} == written
    # so small a model may write one greedy text for every clip: that the two paths read the same
    # features is test_inference_batches_hold_the_training_features's check; here, the decoding
    # sampling is sensitive to every logit: same seed, same batch, so the same texts
    sampled, _ = caption_json(capsys, "--run", str(run), str(run / "data" / "test.pkl"), "--standard",
                              str(run / "data" / "standard.pkl"), "--sample", "--temperature", "2", "--seed", "5")
    torch.manual_seed(5)
    expected = training_path_captions(model, cfg, run, do_sample=True, temperature=2.0)
    assert {k: v[0] for k, v in sampled.items()} == expected
    assert len(set(expected.values())) > 1  # ten different samples: equal dicts are not equal by accident


def test_inference_batches_hold_the_training_features(run, trained):
    """Features, standards and masks equal the ones training evaluates on (not only the texts)."""
    model, cfg = trained
    standards = load_standards(run / "data" / "standard.pkl")
    records = load_records(run / "data" / "test.pkl")[:3]
    ours = next(inputs.iter_batches(inputs.build_dataset(model, cfg, records, standards), 3))
    # the training path: build_data's reading (the run's body frame) of the test pickle and standards
    standards_read = body_frame.convert_standards(standards, cfg.data.frame, "standard.pkl")
    test = MotionTextDataset(read_records(cfg.data, run / "data" / "test.pkl", standards)[:3], standards_read,
                             segment=cfg.data.segment, normalise=cfg.data.normalise, reference=True, train=False)
    theirs = Collator(model.tokenizer)([test[i] for i in range(3)])
    for key in ("x", "mask", "std_x", "lengths"):
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["video_names"] == theirs["video_names"]


def test_npy_standard_with_motion_type_matches_the_pickle_standard(run, test_records, tmp_path, capsys):
    rec = test_records[4]  # a jab
    standards = load_standards(run / "data" / "standard.pkl")
    np.save(tmp_path / "clip.npy", rec["coordinates"])
    np.save(tmp_path / "std.npy", standards[rec["motion_type"]])
    from_npy, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "clip.npy"), "--standard",
                               str(tmp_path / "std.npy"))
    from_pkl, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "clip.npy"), "--standard",
                               str(run / "data" / "standard.pkl"), "--motion_type", rec["motion_type"])
    whole, _ = caption_json(capsys, "--run", str(run), str(run / "data" / "test.pkl"), "--video_name",
                            rec["video_name"], "--standard", str(run / "data" / "standard.pkl"))
    assert from_npy["clip"] == from_pkl["clip"] == whole[rec["video_name"]]


# --------------------------------------------------------------------------------- generation
def test_two_return_sequences_and_repeatable_sampling(run, capsys):
    data = str(run / "data" / "test.pkl")
    beams, _ = caption_json(capsys, "--run", str(run), data, "--num_beams", "2", "--num_return_sequences", "2")
    assert all(len(texts) == 2 for texts in beams.values())
    args = ("--run", str(run), data, "--sample", "--temperature", "1.5", "--top_p", "0.9",
            "--num_return_sequences", "2", "--seed", "3")
    first, _ = caption_json(capsys, *args)
    again, _ = caption_json(capsys, *args)
    assert first == again and all(len(texts) == 2 for texts in first.values())


# --------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kind", ["wrong_shape", "not_a_pickle", "missing", "unsupported"])
def test_bad_inputs_exit_2_with_a_message_naming_the_file(run, tmp_path, capsys, kind):
    path = {"wrong_shape": tmp_path / "wrong.npy", "not_a_pickle": tmp_path / "text.pkl",
            "missing": tmp_path / "absent.npy", "unsupported": tmp_path / "clip.csv"}[kind]
    if kind == "wrong_shape":
        np.save(path, np.zeros((10, 21, 3), dtype=np.float32))
    elif kind in ("not_a_pickle", "unsupported"):
        path.write_text("hello\n")
    assert caption.main(["--run", str(run), str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and err[0].startswith("caption.py: error:")
    expected = {"wrong_shape": "found shape (10, 21, 3)", "not_a_pickle": "not a readable dataset pickle",
                "missing": "not found", "unsupported": "expected a motion .npy"}[kind]
    assert expected in err[0]


def test_a_clip_shorter_than_the_temporal_kernel_is_refused_as_in_training(run, trained, test_records,
                                                                          tmp_path, capsys):
    kernel = trained[1].model.encoder.temporal_kernel  # 9 (configs/synthetic.yaml)
    rec = test_records[3]
    short = {"video_name": rec["video_name"], "coordinates": rec["coordinates"][:kernel - 1],
             "labels": rec["labels"], "motion_type": rec["motion_type"]}  # no segment fields to cut
    np.save(tmp_path / "short.npy", short["coordinates"])
    with open(tmp_path / "short.pkl", "wb") as f:
        pickle.dump([test_records[0], short], f)
    for path, clip in ((tmp_path / "short.npy", "short"), (tmp_path / "short.pkl", short["video_name"])):
        assert caption.main(["--run", str(run), str(path)]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("caption.py: error:")]
        assert len(errors) == 1, errors
        assert str(path) in errors[0] and repr(clip) in errors[0]
        assert f"at least {kernel} frames" in errors[0] and f"{kernel - 1} frame(s)" in errors[0]
    np.save(tmp_path / "short.npy", test_records[3]["coordinates"][:kernel])  # the kernel itself is enough
    assert caption.main(["--run", str(run), str(tmp_path / "short.npy"), "--max_new_tokens", "2"]) == 0


def test_option_conflicts_and_unknown_names_exit_2(run, tmp_path, capsys):
    data = str(run / "data" / "test.pkl")
    cases = [(["--num_return_sequences", "2"], "needs --sample or --num_beams >= 2"),
             (["--motion_type", "jab"], "give --standard too"),
             (["--video_name", "no_such_clip"], "no_such_clip"),
             (["--standard", str(run / "data" / "standard.pkl"), "--motion_type", "Salchow"], "Salchow")]
    for extra, message in cases:
        assert caption.main(["--run", str(run), data, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert caption.main(["--run", str(tmp_path / "no_run"), data]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_record_without_a_standard_is_named(run, test_records, tmp_path, capsys):
    rec = dict(test_records[0], motion_type="Salchow")
    with open(tmp_path / "odd.pkl", "wb") as f:
        pickle.dump([rec], f)
    assert caption.main(["--run", str(run), str(tmp_path / "odd.pkl"), "--standard",
                         str(run / "data" / "standard.pkl")]) == 2
    err = capsys.readouterr().err
    assert rec["video_name"] in err and "Salchow" in err


def test_command_line_exit_status_and_no_traceback(run, tmp_path):
    bad = tmp_path / "wrong.npy"
    np.save(bad, np.zeros((10, 3), dtype=np.float32))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "caption.py", "--run", str(run), str(bad)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and str(bad) in done.stderr and done.stdout == ""


def test_pictures_option_writes_the_clip_pictures(run, test_records, tmp_path, capsys):
    rec = test_records[2]
    np.save(tmp_path / "short.npy", rec["coordinates"][:12])
    got, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "short.npy"), "--pictures", str(tmp_path / "pics"))
    assert list(got) == ["short"]
    for name in ("short.gif", "short_frames.png", "short_node_attention.png", "short_cross_attention.png"):
        assert (tmp_path / "pics" / name).stat().st_size > 0, name


# ------------------------------------------------------------------------------------- HybrIK
def test_a_hybrik_result_captions_like_the_npy_it_converts_to(run, trained, test_records, tmp_path, capsys):
    """The synthetic run's clips are in the project's frame: a HybrIK file of the same motion
    (camera axes, 2.2 m units) is turned back into it (--hybrik_frame auto) and gets its caption."""
    rec = test_records[4]
    coords = rec["coordinates"] - rec["coordinates"][:, :1]  # HybrIK's joints are root-relative
    np.save(tmp_path / "clip.npy", coords)
    raw = coords * np.array([1.0, -1.0, -1.0], dtype=np.float32) / 2.2
    (tmp_path / "res_clip").mkdir()
    with open(tmp_path / "res_clip" / "res.pk", "wb") as f:
        pickle.dump({"pred_xyz_24_struct": np.concatenate([raw, raw[:, :2]], axis=1),
                     "img_path": np.array([f"{i}.jpg" for i in range(len(raw))])}, f)
    std = ["--standard", str(run / "data" / "standard.pkl"), "--motion_type", rec["motion_type"]]
    from_npy, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "clip.npy"), *std)
    from_hybrik, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "res_clip" / "res.pk"), *std)
    assert from_hybrik == {"res_clip": from_npy["clip"]}
    frame = inputs.data_frame(trained[1], run / "checkpoints" / "best.pt")
    (read,) = inputs.records_from_inputs([tmp_path / "res_clip" / "res.pk"], hybrik_frame=frame)
    assert frame == "project" and np.allclose(read["coordinates"], coords, atol=1e-5)
    as_is, _ = caption_json(capsys, "--run", str(run), str(tmp_path / "res_clip" / "res.pk"), *std,
                            "--hybrik_frame", "hybrik", "--max_new_tokens", str(MAX_NEW))
    assert list(as_is) == ["res_clip"]


def test_a_pickle_that_would_run_code_exits_2_in_one_line(run, tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    with open(tmp_path / "res.pk", "wb") as f:
        pickle.dump({"pred_xyz_29": RunsCode()}, f)
    assert caption.main(["--run", str(run), str(tmp_path / "res.pk")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused to unpickle" in err[0] and "system" in err[0]
    assert not (tmp_path / "ran").exists()
