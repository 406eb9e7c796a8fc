"""Property-based tests (hypothesis) of the record validator and the collate function."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataloaders.collate import IGNORE_INDEX, Collator
from dataloaders.records import SEGMENT_FIELDS, SEGMENTS, DataError, validate_records

# more examples for a deeper search: MOTION2TEXT_HYPOTHESIS_EXAMPLES=5000 pytest tests/test_data_properties.py
MAX_EXAMPLES = int(os.environ.get("MOTION2TEXT_HYPOTHESIS_EXAMPLES", "120"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STANDARDS = {"Jab": np.zeros((30, 22, 3), np.float32), "Cross": np.zeros((12, 22, 3), np.float32)}
SEGMENT_KEYS = [f"{s}_{f}" for s in SEGMENTS for f in SEGMENT_FIELDS]


# ---------------------------------------------------------------------------------- records ----
@st.composite
def arrays(draw):
    """Coordinates of every kind: good and bad shapes, dtypes, values, containers."""
    n = draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(n, 66), (n, 22, 3), (n, 65), (n,), (), (n, 22, 2), (n, 66, 1)]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.bool_, np.complex64,
                                  np.float16]))
    fill = draw(st.sampled_from([0.0, 1.5, np.nan, np.inf, -np.inf, 1e300]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    array = rng.normal(size=shape)
    if draw(st.booleans()) and array.size:
        array.flat[draw(st.integers(0, array.size - 1))] = fill
    with np.errstate(all="ignore"):
        array = array.astype(dtype)
    kind = draw(st.sampled_from(["numpy", "torch", "list", "object"]))
    if kind == "torch" and dtype not in (np.uint8, np.complex64, np.float16) and array.ndim:
        return torch.from_numpy(np.ascontiguousarray(array))
    if kind == "list":
        return array.tolist()
    if kind == "object":
        return array.astype(object)
    return array


texts = st.one_of(st.text(max_size=6), st.integers(), st.none(), st.floats())
label_values = st.one_of(texts, st.lists(texts, max_size=3), st.dictionaries(st.text(max_size=2), texts, max_size=2))
segment_values = st.one_of(st.integers(-3, 40), st.floats(-2, 40), st.booleans(), st.none(), st.text(max_size=2),
                           st.builds(np.int64, st.integers(-2, 40)), st.builds(torch.tensor, st.integers(-2, 40)))


@st.composite
def any_record(draw):
    rec = {}
    if draw(st.booleans()):
        rec["video_name"] = draw(st.one_of(st.text(max_size=5), st.integers(), st.none()))
    if draw(st.integers(0, 4)):
        rec["coordinates"] = draw(st.one_of(arrays(), texts))
    for key in ("labels", "augmented_labels"):
        if draw(st.booleans()):
            rec[key] = draw(label_values)
    if draw(st.booleans()):
        rec["motion_type"] = draw(st.one_of(st.sampled_from(["Jab", "Cross", "Hook", ""]), texts))
    for key in draw(st.lists(st.sampled_from(SEGMENT_KEYS), max_size=6, unique=True)):
        rec[key] = draw(segment_values)
    return rec


@SETTINGS
@given(records=st.one_of(st.lists(st.one_of(any_record(), texts), max_size=3), any_record(), texts),
       need_labels=st.booleans(), with_standards=st.booleans(),
       on_bad=st.sampled_from(["strict", "skip"]))
def test_validator_never_fails_with_anything_but_data_error(records, need_labels, with_standards, on_bad):
    standards = STANDARDS if with_standards else None
    try:
        out = validate_records(records, "prop.pkl", need_labels=need_labels, standards=standards,
                               on_bad=on_bad)
    except DataError as err:
        assert str(err).startswith("prop.pkl: ")
        return
    for rec in out:  # whatever passes is normalised
        assert rec["coordinates"].dtype == np.float32 and rec["coordinates"].shape[1:] == (22, 3)
        assert np.isfinite(rec["coordinates"]).all() and len(rec["coordinates"]) >= 2
        assert all(isinstance(t, str) and t.strip() for t in rec["labels"] + rec["augmented_labels"])


good_text = st.text(alphabet="abc xyz", min_size=1, max_size=8).filter(str.strip)


@st.composite
def good_record(draw, index: int):
    n = draw(st.integers(2, 30))
    motion_type = draw(st.sampled_from(sorted(STANDARDS)))
    std_n = len(STANDARDS[motion_type])
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    shape = draw(st.sampled_from([(n, 66), (n, 22, 3)]))
    coords = rng.normal(size=shape).astype(draw(st.sampled_from([np.float32, np.float64])))
    rec = {"video_name": f"clip{index}", "motion_type": motion_type,
           "coordinates": torch.from_numpy(coords) if draw(st.booleans()) else coords,
           "labels": draw(st.one_of(good_text, st.lists(good_text, min_size=1, max_size=3)))}
    if draw(st.booleans()):
        rec["augmented_labels"] = draw(st.lists(good_text, max_size=3))
    for seg in draw(st.lists(st.sampled_from(SEGMENTS), unique=True)):
        start = draw(st.integers(0, n - 1))
        std_start = draw(st.integers(0, std_n - 1))
        rec.update({f"{seg}_start_frame": start, f"{seg}_end_frame": draw(st.integers(start + 1, n)),
                    f"{seg}_std_start_frame": std_start,
                    f"{seg}_std_end_frame": draw(st.integers(std_start + 1, std_n)),
                    f"{seg}_seq_len": draw(st.integers(1, 200))})
    return rec


@SETTINGS
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(*[good_record(i) for i in range(k)])))
def test_good_records_always_pass(records):
    out = validate_records(list(records), "good.pkl", standards=STANDARDS)
    assert [r["video_name"] for r in out] == [r["video_name"] for r in records]
    for raw, rec in zip(records, out):
        coords = np.asarray(raw["coordinates"], dtype=np.float32).reshape(-1, 22, 3)
        np.testing.assert_array_equal(rec["coordinates"], coords)
        labels = raw["labels"] if isinstance(raw["labels"], list) else [raw["labels"]]
        assert rec["labels"] == labels
        assert rec["augmented_labels"] == raw.get("augmented_labels", [])
        assert all(rec[k] == raw[k] for k in SEGMENT_KEYS if k in raw)


# ---------------------------------------------------------------------------------- collate ----
WORDS = ["raise", "the", "left", "arm", "jump", "too", "low", "keep", "guard", "up", "punch"]


@functools.lru_cache(maxsize=1)
def tokenizer():
    from transformers import T5TokenizerFast

    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return T5TokenizerFast(extra_ids=0).train_new_from_iterator(corpus * 3, vocab_size=100)


@SETTINGS
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
       words=st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12), min_size=6, max_size=6),
       with_standard=st.booleans(), max_len=st.integers(2, 16))
def test_collate_masks_padding_and_labels(lengths, words, with_standard, max_len):
    tok = tokenizer()
    items = []
    for i, n in enumerate(lengths):
        feats = torch.rand(6, n, 22) + 0.5  # never zero on real frames
        items.append({"video_name": f"c{i}", "features": feats, "text": " ".join(words[i]),
                      "standard": feats + 1 if with_standard else None, "references": ["r"],
                      "motion_type": None})
    batch = Collator(tok, max_target_len=max_len)(items)
    n_max = max(lengths)
    assert batch["x"].shape == (len(lengths), 6, n_max, 22)
    assert batch["mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert (batch["x"][i, :, :n] != 0).all() and (batch["x"][i, :, n:] == 0).all()
        assert batch["mask"][i, :n].all() and not batch["mask"][i, n:].any()
        if with_standard:
            assert (batch["std_x"][i, :, n:] == 0).all()
            assert torch.equal(batch["std_x"][i, :, :n], items[i]["standard"])
        ids = tok(items[i]["text"], truncation=True, max_length=max_len)["input_ids"]
        assert batch["labels"][i, : len(ids)].tolist() == ids
        assert (batch["labels"][i, len(ids):] == IGNORE_INDEX).all()
    assert (batch["std_x"] is None) == (not with_standard)
