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


# ---- retired options (model.annotators, eval.annotators, model.retrieval.copy / dropout) ---------
def as_written_before(cfg, **model_changes):
    """``cfg`` as a resolved config of commit 67d6cae holds it: the retired keys at their old
    defaults (``model_changes`` set model keys, e.g. annotators=3)."""
    import copy

    old = copy.deepcopy(schema.to_dict(cfg))
    old["model"]["retrieval"].update(copy=False, dropout=0.0)
    old["model"]["annotators"] = 0
    old["model"].update(model_changes)
    old["eval"]["annotators"] = []
    old["model"]["embedding"] = {"dim": 0, "temperature": 0.1, "weight": 1.0}  # retired in a later commit
    old["eval"].update(rerank_embedding=0.0, rerank_pool="statistics")
    return old


def test_retired_keys_at_their_old_defaults_are_dropped_silently(tmp_path):
    import yaml

    cfg = load_config("configs/boxing.yaml")
    old = as_written_before(cfg)
    assert schema.to_dict(schema.from_dict(old)) == schema.to_dict(cfg)  # a checkpoint's config
    assert old["model"]["annotators"] == 0  # the caller's dict is left as it was
    saved = tmp_path / "config.yaml"  # a run folder's config.yaml
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    assert schema.to_dict(load_config(saved)) == schema.to_dict(cfg)
    again = load_config("configs/boxing.yaml", ["model.annotators=0", "eval.annotators=[]",
                                                "model.retrieval.copy=false", "model.retrieval.dropout=0"])
    assert schema.to_dict(again) == schema.to_dict(cfg)
    assert "annotators" not in schema.to_dict(cfg)["model"] and "copy" not in schema.to_dict(cfg)["model"]["retrieval"]


@pytest.mark.parametrize("override, shown, commit", [
    ("model.annotators=3", "3", "67d6cae"), ("eval.annotators=[0]", "[0]", "67d6cae"),
    ("model.retrieval.copy=true", "True", "67d6cae"), ("model.retrieval.dropout=0.25", "0.25", "67d6cae"),
    ("model.retrieval.copy=0", "0", "67d6cae"), ("eval.rerank_pool=embedding", "'embedding'", "8261efd"),
    ("eval.rerank_embedding=1", "1", "8261efd"),
])
def test_retired_keys_at_other_values_are_refused_by_name(tmp_path, override, shown, commit):
    import yaml

    key, value = override.split("=")
    message = f"{key} was retired (last in commit {commit}); this config sets it to {shown}"
    with pytest.raises(ConfigError, match=r"configs/boxing.yaml: " + message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        load_config("configs/boxing.yaml", [override])
    old = schema.to_dict(load_config("configs/boxing.yaml"))
    node, *path, name = [old, *key.split(".")]
    for part in path:
        node = node[part]
    node[name] = yaml.safe_load(value)
    with pytest.raises(ConfigError) as err:
        schema.from_dict(old)
    assert str(err.value).startswith(message)


def test_a_run_folder_written_before_still_belongs_to_its_config(tmp_path):
    import yaml

    from training.run import prepare_run_dir

    cfg = load_config("configs/boxing.yaml")
    for name, old, refused in [("same", as_written_before(cfg), False),
                               ("other", as_written_before(cfg, annotators=3), True)]:
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
        prepare = lambda: prepare_run_dir(run_dir, Path("configs/boxing.yaml"), schema.to_dict(cfg),  # noqa: E731
                                          defaults=schema.to_dict(schema.Config()), retired=schema.RETIRED)
        if refused:
            with pytest.raises(SystemExit, match="differing keys: model.annotators: 3 -> retired"):
                prepare()
        else:
            prepare()
            assert yaml.safe_load((run_dir / "config.yaml").read_text()) == schema.to_dict(cfg)


def test_a_checkpoint_written_before_loads(tmp_path):
    from core.io import CheckpointError
    from dataloaders import tokenizer as text
    from dataloaders.tokenizer import tokenizer_files_of
    from models.build import build_model, model_from_payload

    cfg = load_config("configs/synthetic.yaml", ["model.encoder.channels=[8,8]", "model.encoder.strides=[1,2]",
                                                 "model.t5.config={d_model: 32, d_ff: 32, d_kv: 8, num_layers: 1, "
                                                 "num_decoder_layers: 1, num_heads: 2}"])
    tokenizer = text.train_tokenizer(["raise the left arm", "turn the hips", "keep the guard up"], vocab_size=60)
    model = build_model(cfg, tokenizer)
    payload = {"model": model.state_dict(), "config": as_written_before(cfg),
               "tokenizer": tokenizer_files_of(tokenizer)}
    loaded, loaded_cfg = model_from_payload(payload, "old.pt")
    assert schema.to_dict(loaded_cfg) == schema.to_dict(cfg)
    assert all(loaded.state_dict()[k].equal(v) for k, v in model.state_dict().items())
    payload["config"] = as_written_before(cfg, annotators=3)
    with pytest.raises(CheckpointError, match=r"old.pt: its config: model.annotators was retired \(last in commit "
                                              r"67d6cae\); this config sets it to 3"):
        model_from_payload(payload, "old.pt")
