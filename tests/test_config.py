"""The typed config: defaults, overrides, and errors that name the dotted key."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs import schema
from configs.schema import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
TRAIN_CONFIGS = [p for p in CONFIGS if not p.name.startswith("carl_")]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert len(cfg.model.encoder.channels) == len(cfg.model.encoder.strides)


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.lr=3e-4", "model.encoder.channels=[16,32]",
                             "model.encoder.strides=[1,2]", "data.augmented_labels=true"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.encoder.channels == [16, 32]
    assert cfg.data.augmented_labels is True


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "model.t5.config={d_model: 64}"])
    path = tmp_path / "c.yaml"
    path.write_text(schema.to_yaml(cfg))
    again = load_config(path)
    assert schema.to_dict(again) == schema.to_dict(cfg)


@pytest.mark.parametrize("override, message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'; allowed keys here: epochs"),
    (["trian.lr=1"], "unknown config key 'trian'"),
    (["train.lr=abc"], "train.lr: expected float, found str 'abc'"),
    (["train.lr=-0.1"], "train.lr: expected a positive number"),
    (["train.amp=1"], "train.amp: expected true or false"),
    (["train.epochs=2.5"], "train.epochs: expected int, found float"),
    (["data.segment=middle"], "data.segment: expected one of none, gt, aligned, error"),
    (["model.encoder.channels=[8,x,16]"], "model.encoder.channels[1]: expected int"),
    (["model.encoder.strides=[1]"], "model.encoder.strides: expected 5 entries"),
    (["data.kind=pickle"], "data.root: expected the folder"),
    (["train.lr"], "expected dotted.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert message in str(err.value)


def test_choices_are_the_lists_of_the_modules_that_own_them():
    from dataloaders import dataset, features, records, synthetic
    from evaluation import metrics
    from models import captioner, graph, projection
    owners = {"data.synthetic.mode": synthetic.MODES, "data.segment": dataset.SEGMENT_CHOICES,
              "data.labels": dataset.LABEL_MODES, "data.normalise": features.NORMALISATIONS,
              "data.on_bad": records.ON_BAD, "model.projection.policy": projection.POLICIES,
              "model.reference": captioner.REFERENCE_MODES,
              "model.encoder.graph.layout": graph.LAYOUT_NAMES,
              "model.encoder.graph.strategy": graph.STRATEGIES, "eval.metric": metrics.METRIC_NAMES}
    for key, choices in owners.items():
        assert schema.CHOICES[key] is choices, key


def test_the_prompt_is_a_model_key():
    cfg = load_config(None, ['model.prompt="Motion Instruction : "'])
    assert cfg.model.prompt == "Motion Instruction : "
    with pytest.raises(ConfigError, match="unknown config key 'data.prefix'"):
        load_config(None, ["data.prefix=x"])


def test_typo_in_a_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  batch_szie: 8\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'train.batch_szie'"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(top)
