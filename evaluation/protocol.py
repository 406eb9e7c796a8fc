"""The quality protocol: train a config several times on honest splits and compare the test
figures with the baselines on the same splits.

    python -m evaluation.protocol --cfg_file configs/boxing.yaml --protocol official --seeds 3
    python -m evaluation.protocol --cfg_file configs/boxing.yaml --protocol new-learner --folds 5

``official``: the config's own train / test files, one run per seed (the seed also draws the
validation split). ``new-learner``: train and test merged and cut into folds that each hold out
whole learners; per fold a validation split by learner inside the training part.
Every run chooses its checkpoint on validation and scores the test split once (see
``train_t5_stagcn.py``). Runs live in ``results/<experiment>/protocol/<protocol>/<run>/``; the
command run again skips finished runs and resumes an interrupted one. It prints one table
(mean ± std over runs of the model and of every baseline, computed on the same splits) and 95%
bootstrap intervals over test clips of the model's CIDEr and BLEU-4 and of their difference from
consensus retrieval; ``summary.json`` and ``summary.md`` are written beside the runs.

``--decode-from EXPERIMENT`` trains nothing: each run takes the ``best.pt`` (and tokenizer) of the
same run of an earlier experiment and captions its validation and test splits again with the
``eval.*`` keys of the config given (file and overrides), e.g. another reranking:

    python -m evaluation.protocol --cfg_file configs/boxing.yaml --protocol official \
        --decode-from boxing experiment=boxing_redecoded eval.rerank_candidates=retrieved

The checkpoints were chosen on validation under the earlier experiment's decoding; the new
decoding's validation figures are printed beside the test table, to choose by. With
``--val-only`` only the validation splits are captioned, so decoding settings are compared before
the chosen one scores the test split once.
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from configs import schema
from dataloaders import body_frame
from dataloaders.records import load_records
from dataloaders.splits import learner_folds, learner_of, split_off

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("official", "new-learner")
COLUMNS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "novelty", "distinct", "R@1")
STRONGEST = "consensus"  # the baseline every result is compared with (docs/design.md, "Quality protocol")


@dataclass
class Run:
    name: str
    folder: Path
    overrides: list[str]
    train: list = field(repr=False)  # the records the run trains on (validation removed)
    val: list = field(repr=False)
    test: list = field(repr=False)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg_file", "--cfg-file", required=True, help="the training config to measure")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True)
    parser.add_argument("--seeds", type=int, default=None,
                        help="runs per split (default: 3 for official, 1 per fold for new-learner)")
    parser.add_argument("--folds", type=int, default=5, help="new-learner: folds of whole learners (default 5)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--no-java", action="store_true", help="score without Java (no METEOR)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="train nothing: the baselines on the protocol's splits (seconds)")
    parser.add_argument("--decode-from", metavar="EXPERIMENT", default=None,
                        help="train nothing: caption each run's validation and test splits again with the "
                             "best.pt of the same run of EXPERIMENT (results/EXPERIMENT/protocol/...) and "
                             "the eval.* overrides given")
    parser.add_argument("--val-only", action="store_true",
                        help="with --decode-from: caption the validation splits only and print their figures "
                             "(to choose decoding settings by, before the test split is scored once)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides for every run")
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after the options
    if args.val_only and not args.decode_from:
        parser.error("--val-only captions trained checkpoints again: give --decode-from EXPERIMENT")
    return args


# ============================================================================ the runs ========
def source_records(cfg: schema.Config, folder: Path) -> tuple[list, list, Path | None]:
    """(train, test, standard file) of the config; synthetic data are generated into ``folder``."""
    if cfg.data.kind == "synthetic":
        from dataloaders import synthetic
        s = cfg.data.synthetic
        if not (folder / "test.pkl").is_file():
            synthetic.write(folder, seed=s.seed, mode=s.mode, train_per_kind=s.train_per_kind,
                            test_per_kind=s.test_per_kind)
        return load_records(folder / "train.pkl"), load_records(folder / "test.pkl"), folder / "standard.pkl"
    root = Path(cfg.data.root) if Path(cfg.data.root).is_absolute() else REPO_ROOT / cfg.data.root
    standard = root / cfg.data.standard if cfg.data.standard else None
    return load_records(root / cfg.data.train), load_records(root / cfg.data.test), standard


def config_path(path: Path) -> str:
    """A path for a run's config: relative to the repository root when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def write_split(folder: Path, train: list, test: list, standard: Path | None) -> list[str]:
    """Write a split's pickles (once) and return the overrides that point a run at them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (("train.pkl", train), ("test.pkl", test)):
        if not (folder / name).is_file():
            tmp = folder / f".tmp-{name}"
            tmp.write_bytes(pickle.dumps(records, protocol=4))
            tmp.replace(folder / name)
    overrides = ["data.kind=pickle", f"data.root={config_path(folder)}", "data.train=train.pkl", "data.test=test.pkl",
                 "data.val="]
    if standard is not None:
        if not (folder / "standard.pkl").is_file():
            shutil.copyfile(standard, folder / "standard.pkl")
        overrides.append("data.standard=standard.pkl")
    return overrides


def plan_runs(cfg: schema.Config, args: argparse.Namespace, root: Path) -> list[Run]:
    train, test, standard = source_records(cfg, root / "source")
    seeds = args.seeds or (3 if args.protocol == "official" else 1)
    splits = []  # (name, train, test, group_by)
    if args.protocol == "official":
        splits.append(("official", train, test, cfg.data.val_split.group_by))
    else:
        merged = train + test
        for i, learners in enumerate(learner_folds(merged, args.folds, seed=cfg.seed)):
            held = set(learners)
            splits.append((f"fold_{i}", [r for r in merged if learner_of(r) not in held],
                           [r for r in merged if learner_of(r) in held], "learner"))
    runs = []
    fraction = cfg.data.val_split.fraction or 0.15
    for split_name, split_train, split_test, group_by in splits:
        data_overrides = write_split(root / "data" / split_name, split_train, split_test, standard)
        for seed in range(seeds):
            name = f"seed_{seed}" if args.protocol == "official" else f"{split_name}_seed_{seed}"
            rest, val = split_off(split_train, fraction, group_by, seed)
            overrides = [*data_overrides, f"seed={seed}", f"data.val_split.seed={seed}",
                         f"data.val_split.fraction={fraction}", f"data.val_split.group_by={group_by}",
                         f"results_dir={config_path(root)}", f"experiment={name}"]
            if args.protocol == "new-learner":  # retrieval, like the test clips, never sees the clip's learner
                overrides.append("model.retrieval.exclude=learner")
            runs.append(Run(name, root / name, overrides, rest, val, split_test))
    return runs


# set per run by the protocol, or free to change when captioning again (--decode-from)
PER_RUN_KEYS = ("eval.", "experiment", "results_dir", "seed", "data.kind", "data.root", "data.train", "data.test",
                "data.val", "data.standard", "data.val_split.", "model.retrieval.exclude")


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_model(cfg: schema.Config, source: schema.Config, source_config: Path) -> None:
    """``--decode-from`` reuses trained checkpoints: outside ``eval.*`` (and what the protocol sets
    per run), the config given must be the one the source runs were trained with."""
    mine, theirs = _flat(schema.to_dict(cfg)), _flat(schema.to_dict(source))
    differ = sorted(k for k in mine.keys() | theirs.keys()
                    if not k.startswith(PER_RUN_KEYS) and mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"{k} ({mine.get(k)!r} here, {theirs.get(k)!r} in {source_config})" for k in differ[:4])
        raise SystemExit(f"error: --decode-from captions trained checkpoints again, so only eval.* keys may "
                         f"differ from the source run's config; these do: {shown}"
                         + (f" and {len(differ) - 4} more" if len(differ) > 4 else ""))


def prepare_decode(run: Run, source: Path, cfg: schema.Config) -> Path:
    """Put the source run's best.pt and tokenizer into ``run.folder``; return the source's config.yaml
    (the model the checkpoint holds). Hard links where the file system allows them."""
    import os

    needed = [source / "config.yaml", source / "checkpoints" / "best.pt", source / "tokenizer"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"error: --decode-from: {', '.join(missing)} missing (is {source} a finished protocol run "
                         f"with a validation split?)")
    source_cfg = schema.load_config(needed[0])
    check_same_model(cfg, source_cfg, needed[0])
    check_same_split(run, source_cfg, needed[0])
    (run.folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    best = run.folder / "checkpoints" / "best.pt"
    if not best.exists():
        try:
            os.link(needed[1], best)
        except OSError:
            shutil.copyfile(needed[1], best)
    if not (run.folder / "tokenizer").exists():
        shutil.copytree(needed[2], run.folder / "tokenizer")
    (run.folder / "decoded_from.txt").write_text(f"{config_path(source)}\n", encoding="utf-8")
    return needed[0]


def check_same_split(run: Run, src: schema.Config, source_config: Path) -> None:
    """The source run was trained and tested on this run's split (same test and validation clips)."""
    root = Path(src.data.root) if Path(src.data.root).is_absolute() else REPO_ROOT / src.data.root
    train = load_records(root / src.data.train)
    _, val = split_off(train, src.data.val_split.fraction, src.data.val_split.group_by, src.data.val_split.seed)
    got = ({r["video_name"] for r in load_records(root / src.data.test)}, {r["video_name"] for r in val})
    want = ({r["video_name"] for r in run.test}, {r["video_name"] for r in run.val})
    for what, a, b in zip(("test", "validation"), got, want):
        if a != b:
            raise SystemExit(f"error: --decode-from: {source_config.parent} has other {what} clips than this run "
                             f"({len(a ^ b)} differ); give the --cfg_file and data overrides it was trained with")


def decoding_overrides(cfg: schema.Config) -> list[str]:
    """Every ``eval.*`` key of the config given (its file and its overrides) as an override line,
    so that ``--decode-from`` captions with this config's decoding, not the source run's."""
    return [f"{key}={json.dumps(value)}" for key, value in _flat({"eval": schema.to_dict(cfg)["eval"]}).items()]


def decode(run: Run, config: Path, overrides: list[str], splits: Sequence[str] = ("val", "test")) -> None:
    """Caption the run's validation and test splits (or ``splits``) with its best.pt in a child process."""
    command = [sys.executable, str(REPO_ROOT / "train_t5_stagcn.py"), "--cfg_file", str(config), *overrides,
               *run.overrides, "--eval_only", "--ckpt", "best", "--eval_splits", *splits, "--allow_config_change"]
    with open(run.folder / "protocol.log", "a", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or finished(run, "test" in splits) is None:
        raise SystemExit(f"error: decoding {run.folder} failed (exit {done.returncode}); see "
                         f"{run.folder / 'protocol.log'}")


def validation_line(runs: list[Run]) -> str | None:
    """The validation CIDEr-D of each run's best.pt where it was written (``--decode-from``)."""
    scores = []
    for run in runs:
        path = run.folder / "val_best_metrics.json"
        if not path.is_file():
            return None
        scores.append(json.loads(path.read_text(encoding="utf-8"))["CIDEr"])
    return (f"- validation CIDEr-D of best.pt by run: {', '.join(f'{s:.3f}' for s in scores)} "
            f"(mean {np.mean(scores):.3f})")


def finished(run: Run, test: bool = True) -> Path | None:
    path = run.folder / ("test_best_metrics.json" if test else "val_best_metrics.json")
    return path if path.is_file() else None


def train(run: Run, cfg_file: str, overrides: list[str]) -> None:
    """Train (or resume) one run in a child process; its output goes to ``<run>/protocol.log``."""
    run.folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO_ROOT / "train_t5_stagcn.py"), "--cfg_file", cfg_file,
               *overrides, *run.overrides]
    with open(run.folder / "protocol.log", "a", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or finished(run) is None:
        raise SystemExit(f"error: run {run.folder} failed (exit {done.returncode}); see "
                         f"{run.folder / 'protocol.log'}. Run the same command to resume it.")


# ============================================================================ the table =======
def run_scores(run: Run, use_java: bool | None, with_model: bool = True, frame: str = "canonical") -> dict[str, Any]:
    """The model's and the baselines' figures and predictions on one run's split. The model's
    figures (novelty, distinct and R@1 included) are the ones its training run wrote; the
    baselines' motion statistics are those of the clips in the body frame the runs read
    (``data.frame``)."""
    from evaluation.baselines import compute_baselines

    train, test, val = (body_frame.convert_records(records, frame, f"{run.name} {part}")
                        for part, records in (("train", run.train), ("test", run.test), ("val", run.val)))
    baselines = compute_baselines(train, test, val or None, use_java=use_java)
    if not with_model:
        return baselines
    test_metrics = json.loads(finished(run).read_text(encoding="utf-8"))
    predictions = json.loads((run.folder / "predictions" / "test_best.json").read_text(encoding="utf-8"))
    model = {k: v for k, v in test_metrics.items() if isinstance(v, (int, float)) and k != "epoch"}
    model.update(predictions=predictions, epoch=test_metrics.get("epoch"))
    return {"model": model, **baselines}


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def bootstrap(per_run: list[dict], runs: list[Run], protocol: str, n: int) -> dict[str, Any]:
    """95% intervals over test clips: the model's CIDEr and BLEU-4 and model minus consensus.

    official: one test set, the statistic averaged over the seeds' runs on each resample;
    new-learner: the folds' test clips pooled (each clip is in exactly one fold's test)."""
    from evaluation.quality import bootstrap_ci, corpus_statistic, paired_difference

    out = {}
    for metric in ("CIDEr", "BLEU-4"):
        if protocol == "official":
            refs = {r["video_name"]: list(r["labels"]) for r in runs[0].test}
            ids = list(refs)
            stats = {who: [corpus_statistic(s[who]["predictions"], refs, metric, ids) for s in per_run]
                     for who in ("model", STRONGEST)}
            model_stat, base_stat = (lambda idx, f=stats[w]: np.mean([g(idx) for g in f], axis=0)
                                     for w in ("model", STRONGEST))
        else:
            refs = {r["video_name"]: list(r["labels"]) for run in runs for r in run.test}
            ids = list(refs)
            pooled = {who: {k: v for s in per_run for k, v in s[who]["predictions"].items()}
                      for who in ("model", STRONGEST)}
            model_stat = corpus_statistic(pooled["model"], refs, metric, ids)
            base_stat = corpus_statistic(pooled[STRONGEST], refs, metric, ids)
        out[metric] = bootstrap_ci(model_stat, len(ids), n=n).as_dict()
        out[f"{metric} - {STRONGEST}"] = bootstrap_ci(paired_difference(model_stat, base_stat), len(ids), n=n).as_dict()
    return out


def summarise(per_run: list[dict]) -> dict[str, dict[str, list[float]]]:
    rows: dict[str, dict[str, list[float]]] = {}
    for scores in per_run:
        for who, figures in scores.items():
            for col in COLUMNS:
                if isinstance(figures.get(col), (int, float)):
                    rows.setdefault(who, {}).setdefault(col, []).append(float(figures[col]))
    return rows


def format_table(rows: dict[str, dict[str, list[float]]], intervals: dict[str, Any], title: str) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows.values())]
    lines = [f"### {title}", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for who, figures in rows.items():
        label = who + (" (reference point)" if who == "paraphrase" else "")
        cells = []
        for c in cols:
            if c not in figures:
                cells.append("")
                continue
            mean, std = mean_std(figures[c])
            cells.append(f"{mean:.0f} ± {std:.0f}" if c == "distinct" else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, ci in intervals.items():
        lines.append(f"- 95% bootstrap interval, {name}: {ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = schema.load_config(args.cfg_file, args.overrides)
    experiment = cfg.experiment or Path(args.cfg_file).stem
    root = (REPO_ROOT / cfg.results_dir / experiment / "protocol" / args.protocol).resolve()
    if args.decode_from and not (REPO_ROOT / cfg.results_dir / args.decode_from / "protocol" / args.protocol).is_dir():
        print(f"evaluation.protocol: error: --decode-from {args.decode_from}: no such experiment "
              f"({Path(cfg.results_dir) / args.decode_from / 'protocol' / args.protocol} is missing)", file=sys.stderr)
        return 2
    runs = plan_runs(cfg, args, root)
    started = time.monotonic()
    for i, run in enumerate([] if args.baselines_only else runs, 1):
        if finished(run, not args.val_only):
            print(f"[{i}/{len(runs)}] {run.name}: finished earlier, skipped", flush=True)
            continue
        t0 = time.monotonic()
        if args.decode_from:
            source = REPO_ROOT / cfg.results_dir / args.decode_from / "protocol" / args.protocol / run.name
            print(f"[{i}/{len(runs)}] {run.name}: captioning again with {source}'s best.pt ...", flush=True)
            decode(run, prepare_decode(run, source, cfg), decoding_overrides(cfg),
                   ("val",) if args.val_only else ("val", "test"))
        else:
            print(f"[{i}/{len(runs)}] {run.name}: training in {run.folder} ...", flush=True)
            train(run, args.cfg_file, args.overrides)
        print(f"[{i}/{len(runs)}] {run.name}: done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    if args.val_only:
        print(f"{experiment}, {args.protocol} protocol, validation only\n{validation_line(runs)}")
        return 0
    use_java = False if args.no_java else None
    per_run = [run_scores(run, use_java, with_model=not args.baselines_only, frame=cfg.data.frame) for run in runs]
    rows = summarise(per_run)
    intervals = {} if args.baselines_only else bootstrap(per_run, runs, args.protocol, args.bootstrap)
    what = "seeds" if args.protocol == "official" else "folds"
    title = (f"{experiment}, {args.protocol} protocol: mean ± std over {len(runs)} runs ({what}); "
             + ("baselines only" if args.baselines_only else "test split, checkpoints chosen on validation"))
    table = format_table(rows, intervals, title)
    line = None if args.baselines_only else validation_line(runs)
    if line:
        table += "\n" + line
    print(table)
    summary = {"config": args.cfg_file, "protocol": args.protocol, "runs": [r.name for r in runs],
               "decoded_from": args.decode_from,
               "rows": rows, "bootstrap": intervals, "wall_time_s": time.monotonic() - started,
               "per_run": [{who: {k: v for k, v in f.items() if k != "predictions"} for who, f in s.items()}
                           for s in per_run]}
    stem = "baselines" if args.baselines_only else "summary"
    (root / f"{stem}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (root / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
