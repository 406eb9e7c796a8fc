"""Reading and validating dataset pickles: every bad-input kind gives its specific error."""
from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from dataloaders.records import DataError, DataFileNotFound, load_records, load_standards, validate_records
from dataloaders.safe_pickle import UnsafePickleError

T = 10


def good_record(name: str = "clip_0", **overrides) -> dict:
    """A valid record in the released format (torch coordinates [T, 66])."""
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    rec = {
        "video_name": name,
        "motion_type": "Jab",
        "coordinates": torch.randn(T, 66, generator=gen),
        "labels": ["keep the guard up", "extend the arm"],
        "augmented_labels": ["hold the guard high"],
        "camera_view": "1",
        "original_seq_len": T,
        "aligned_start_frame": 0, "aligned_end_frame": T, "aligned_std_start_frame": 2,
        "aligned_std_end_frame": 12, "aligned_seq_len": T,
    }
    rec.update(overrides)
    return rec


def write(tmp_path, records, name="data.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(records, protocol=4))
    return path


STANDARDS = {"Jab": np.zeros((20, 22, 3), np.float32), "Cross": np.zeros((15, 22, 3), np.float32)}


def test_good_records_are_normalised(tmp_path):
    coords = np.random.default_rng(0).normal(size=(T, 22, 3))  # float64 [T, 22, 3] ndarray
    path = write(tmp_path, [good_record("a"), good_record("b", coordinates=coords, labels="one text",
                                                          motion_type=None, augmented_labels=None)])
    a, b = load_records(path)
    assert a["coordinates"].dtype == np.float32 and a["coordinates"].shape == (T, 22, 3)
    expected = good_record("a")["coordinates"].numpy().reshape(T, 22, 3)
    np.testing.assert_array_equal(a["coordinates"], expected)
    assert a["coordinates"][0, 1].tolist() == expected[0, 1].tolist()  # joint 1 = columns 3:6
    np.testing.assert_allclose(b["coordinates"], coords.astype(np.float32))
    assert b["labels"] == ["one text"] and b["augmented_labels"] == [] and b["motion_type"] is None
    assert a["augmented_labels"] == ["hold the guard high"] and a["motion_type"] == "Jab"
    assert a["camera_view"] == "1" and a["aligned_std_start_frame"] == 2  # metadata kept
    assert isinstance(a["aligned_std_start_frame"], int)


def test_numpy_ints_and_minus_one_segment_fields(tmp_path):
    rec = good_record(gt_start_frame=np.int64(1), gt_end_frame=np.int32(5), error_start_frame=-1,
                      error_end_frame=-1)
    (out,) = load_records(write(tmp_path, [rec]))
    assert out["gt_start_frame"] == 1 and type(out["gt_end_frame"]) is int
    assert out["error_start_frame"] is None and out["error_end_frame"] is None  # not annotated


BAD_CASES = [
    # (overrides, key named in the error, text of what was found)
    ({"coordinates": torch.zeros(T, 65)}, "'coordinates'", "shape (10, 65)"),
    ({"coordinates": torch.zeros(T, 21, 3)}, "'coordinates'", "shape (10, 21, 3)"),
    ({"coordinates": torch.zeros(1, 66)}, "'coordinates'", "1 frame"),
    ({"coordinates": torch.zeros(0, 66)}, "'coordinates'", "0 frame"),
    ({"coordinates": torch.full((T, 66), float("nan"))}, "'coordinates'", "non-finite value at frame 0"),
    ({"coordinates": np.where(np.arange(T * 66).reshape(T, 66) == 70, np.inf, 0.0)}, "'coordinates'",
     "non-finite value at frame 1, joint 1"),
    ({"coordinates": np.full((T, 66), 1e300)}, "'coordinates'", "non-finite"),  # float32 overflow
    ({"coordinates": "not an array"}, "'coordinates'", "str"),
    ({"coordinates": np.zeros((T, 66), dtype=object)}, "'coordinates'", "dtype object"),
    ({"coordinates": torch.zeros(T, 66, dtype=torch.bool)}, "'coordinates'", "bool"),
    ({"labels": ""}, "'labels[0]'", "str ''"),
    ({"labels": []}, "'labels'", "an empty list"),
    ({"labels": ["fine", "   "]}, "'labels[1]'", "str '   '"),
    ({"labels": ["fine", 3]}, "'labels[1]'", "int 3"),
    ({"labels": None}, "'labels'", "None"),
    ({"labels": {"a": 1}}, "'labels'", "dict"),
    ({"augmented_labels": [""]}, "'augmented_labels[0]'", "str ''"),
    ({"augmented_labels": 5}, "'augmented_labels'", "int 5"),
    ({"motion_type": 7}, "'motion_type'", "int 7"),
    ({"motion_type": ""}, "'motion_type'", "str ''"),
    ({"video_name": 12}, "'video_name'", "int 12"),
    ({"aligned_start_frame": 5, "aligned_end_frame": 5}, "'aligned_end_frame'", "found 5"),
    ({"aligned_end_frame": T + 1}, "'aligned_end_frame'", f"found {T + 1}"),
    ({"gt_start_frame": T}, "'gt_start_frame'", f"found {T}"),
    ({"gt_start_frame": -3}, "'gt_start_frame'", "found -3"),
    ({"gt_start_frame": 2.0}, "'gt_start_frame'", "float 2.0"),
    ({"gt_start_frame": True}, "'gt_start_frame'", "bool True"),
    ({"error_std_start_frame": 4, "error_std_end_frame": 3}, "'error_std_end_frame'", "found 3"),
    ({"gt_seq_len": 0}, "'gt_seq_len'", "found 0"),
]


@pytest.mark.parametrize("overrides,key,found", BAD_CASES, ids=[c[1] + ":" + c[2] for c in BAD_CASES])
def test_each_bad_field_names_file_record_key_and_found(tmp_path, overrides, key, found):
    path = write(tmp_path, [good_record("ok"), good_record("bad_one", **overrides)])
    with pytest.raises(DataError) as info:
        load_records(path)
    message = str(info.value)
    assert str(path) in message and "record 1" in message
    if overrides.get("video_name") is None:
        assert "'bad_one'" in message
    assert f"key {key}" in message and "expected" in message and found in message


def test_missing_keys(tmp_path):
    rec = good_record()
    del rec["coordinates"]
    with pytest.raises(DataError, match=r"record 0 .*key 'coordinates': expected present, found no such key"):
        load_records(write(tmp_path, [rec]))
    rec = good_record()
    del rec["labels"]
    with pytest.raises(DataError, match=r"key 'labels'.*found no such key"):
        load_records(write(tmp_path, [rec]))
    assert load_records(write(tmp_path, [rec]), need_labels=False)[0]["labels"] == []


def test_standards_checks(tmp_path):
    path = write(tmp_path, [good_record(motion_type="Hook")])
    with pytest.raises(DataError, match=r"key 'motion_type': expected a motion type with a standard "
                                        r"\(Cross, Jab\), found str 'Hook'"):
        load_records(path, standards=STANDARDS)
    load_records(path)  # without standards the motion type is free
    path = write(tmp_path, [good_record(motion_type=None)])
    with pytest.raises(DataError, match="key 'motion_type'.*NoneType"):
        load_records(path, standards=STANDARDS)
    path = write(tmp_path, [good_record(aligned_std_end_frame=21)])  # Jab standard has 20 frames
    with pytest.raises(DataError, match=r"key 'aligned_std_end_frame': expected an exclusive end "
                                        r"inside the standard \(<= 20\), found 21"):
        load_records(path, standards=STANDARDS)
    assert len(load_records(write(tmp_path, [good_record(aligned_std_end_frame=20)]),
                            standards=STANDARDS)) == 1


def test_duplicate_video_name_and_non_dict_record(tmp_path):
    with pytest.raises(DataError, match=r"record 1 \(video_name='a'\): key 'video_name': expected "
                                        r"a unique name, found a duplicate of record 0"):
        load_records(write(tmp_path, [good_record("a"), good_record("a")]))
    with pytest.raises(DataError, match=r"record 1 \(video_name='\?'\): key '<record>': expected a dict, found list"):
        load_records(write(tmp_path, [good_record("a"), [1, 2]]))


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="top level.*found dict"):
        load_records(write(tmp_path, {"video_name": "a"}))
    with pytest.raises(DataError, match="empty"):
        load_records(write(tmp_path, []))
    with pytest.raises(DataFileNotFound, match="nope.pkl: dataset file not found") as info:
        load_records(tmp_path / "nope.pkl")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="garbage.pkl: not a readable dataset pickle"):
        load_records(garbage)
    js = tmp_path / "refs.json"
    js.write_text(json.dumps([{"video_name": "a", "labels": ["x"]}]))
    with pytest.raises(DataError, match="JSON file carries no coordinates"):
        load_records(js)
    with pytest.raises(ValueError, match="on_bad"):
        load_records(write(tmp_path, [good_record()]), on_bad="ignore")


def test_malicious_dataset_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = write(tmp_path, [good_record(labels=[Evil()])])
    with pytest.raises(UnsafePickleError, match="data.pkl.*system"):
        load_records(path)
    assert not marker.exists()


def test_skip_mode_drops_bad_records_with_one_counted_warning(tmp_path, caplog):
    records = [good_record("a"), good_record("b", labels=[]), good_record("c"),
               good_record("d", coordinates=torch.zeros(1, 66)), good_record("a")]
    path = write(tmp_path, records)
    with caplog.at_level(logging.WARNING, logger="dataloaders.records"):
        out = load_records(path, on_bad="skip")
    assert [r["video_name"] for r in out] == ["a", "c"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "skipped 3 of 5 records" in text and "record 1 (video_name='b')" in text
    assert "record 4 (video_name='a')" in text and str(path) in text
    with pytest.raises(DataError, match="no valid records left"):
        load_records(write(tmp_path, [good_record(labels=[])]), on_bad="skip")


def test_warning_lists_only_the_first_reasons(tmp_path, caplog):
    records = [good_record("ok")] + [good_record(f"bad{i}", labels=[]) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="dataloaders.records"):
        load_records(write(tmp_path, records), on_bad="skip")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert "skipped 8 of 9" in text and "bad4" in text and "bad5" not in text and "and 3 more" in text


def test_load_standards(tmp_path):
    path = write(tmp_path, [{"video_name": "Jab", "coordinates": torch.ones(20, 66)},
                            {"video_name": "Cross", "coordinates": np.zeros((15, 22, 3))}])
    standards = load_standards(path)
    assert sorted(standards) == ["Cross", "Jab"]
    assert standards["Jab"].shape == (20, 22, 3) and standards["Jab"].dtype == np.float32
    bad = write(tmp_path, [{"video_name": "Jab", "coordinates": torch.ones(20, 60)}], "std.pkl")
    with pytest.raises(DataError, match="std.pkl: record 0 \\(video_name='Jab'\\): key 'coordinates'"):
        load_standards(bad)


def test_validate_records_in_memory():
    out = validate_records([good_record()], "<memory>")
    assert out[0]["coordinates"].shape == (T, 22, 3)
    with pytest.raises(DataError, match="<memory>: record 0"):
        validate_records([good_record(labels=[])], "<memory>")
