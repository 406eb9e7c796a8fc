"""DTW timing: our exact DTW (``alignment.dtw``) against the naive pure-Python reference and, when
installed, the fastest route each peer library offers for the same work: ``dtaidistance`` (C,
OpenMP) and ``tslearn`` (numba). Both peers are bench-only (``pip install dtaidistance tslearn``),
not in requirements.txt.

    python -m bench.dtw [--repeats 7] [--quick] [--peers dtaidistance,tslearn|none]
                        [--out bench/results/dtw.json]

Cases (random float64 frames, 66 dims = 22 joints x 3, squared-Euclidean local cost):

* ``single T1xT2``: one pair. Cost only against dtaidistance ``dtw_ndim.distance_fast`` and
  tslearn ``dtw``; cost and warping path against dtaidistance ``dtw.warping_path_fast`` and
  tslearn ``dtw_path`` (``same path`` says whether the paths are identical).
* ``pairs N``: N given pairs (x_k, y_k) of 80-120 frames, what alignment does (each clip against
  its own standard); ours is one ``dtw_batch`` call. Neither peer has a batch route for a list of
  pairs: dtaidistance's ``distance_matrix_fast`` computes a rectangular ``block`` of its series
  list, and tslearn's ``cdist_dtw`` every x against every y. Their exact routes are a loop of
  single-pair calls, and for dtaidistance also ``distance_matrix_fast`` with a 1x1 ``block`` per
  pair (the batch API restricted to exactly the wanted pairs; ``parallel=False``, as one pair per
  call leaves OpenMP nothing to share out and ``parallel=True`` only adds a thread team per call).
* ``cross MxM``: every pair between M clips and M standards (M*M pairs, 80-120 frames), where the
  peers' parallel batch routes compute exactly the wanted pairs: dtaidistance
  ``distance_matrix_fast(clips + standards, block=((0, M), (M, 2M)), parallel=True)`` and tslearn
  ``cdist_dtw(clips, standards, n_jobs=-1)``. Ours lays the M*M pairs out (``np.repeat`` /
  ``np.tile``, inside the timed call) and runs one ``dtw_batch``.

Every row's costs are compared pair by pair with ours (``rel. err``, the largest relative
difference); the peers return the square root of the summed squared-Euclidean cost, so their
values are squared first. ``vs ours`` is the row's best wall time over ours for the same case and
output (cost only, or cost and path; every row of a case computes the same DTW cells, T1 x T2
summed over its pairs, and ``ns/cell`` divides by them): above 1, ours is faster. ``CPU vs`` is
the same ratio of CPU times (the process's, every thread counted), which time spent waiting for a
busy machine does not inflate. Within a case every implementation runs once untimed (JIT
compilation, caches), then all of them run in turn for ``--repeats`` rounds, so a change in the
machine's load hits them alike; the table gives the best and the median round. The naive
reference runs once, on a few pairs of the batch cases (its time scaled to all of them). tslearn
is timed in a child process of its own (same cases, same seeds): its imports (numba,
scikit-learn) bring their own thread pools, which stay out of the process that times the other
rows.

Threads: by default every pool may use every core (OpenBLAS under our local-cost matrix product,
OpenMP under dtaidistance's ``parallel=True``, joblib threads under tslearn's ``n_jobs=-1``).
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m bench.dtw`` puts ours and dtaidistance on
one thread each (the per-core comparison, and steadier figures on a shared machine; tslearn's
``n_jobs=-1`` still starts one joblib thread per core). Prints a table and writes JSON. Timings
are never a test: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from alignment.dtw import dtw, dtw_batch
from alignment.reference import naive_dtw, naive_local_cost
from core.paths import shown

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PEERS = ("dtaidistance", "tslearn")
DIM = 66  # 22 joints x 3 coordinates
THREAD_ENV = ("OMP_", "OPENBLAS_", "MKL_", "NUMBA_")  # variables that size the thread pools


@dataclass
class Impl:
    """One timed implementation of a case.

    ``run`` is the timed call; ``convert`` turns its output into ``(costs, path)`` in our
    convention (summed squared-Euclidean cost, the case's pair order). ``kind`` is ``"cost"`` or
    ``"path"``: ratios compare a row with ours of the same kind.
    """

    name: str
    kind: str
    run: Callable[[], Any]
    convert: Callable[[Any], tuple[np.ndarray, Optional[np.ndarray]]]
    once: bool = False   # a single timed run, no warm-up (the naive reference)
    scale: float = 1.0   # the timed run covers 1/scale of the case's pairs


@dataclass
class Case:
    """Inputs and our reference values of one case."""

    name: str
    pairs: int
    cells: int                      # DTW cells, T1 x T2 summed over the pairs
    costs: np.ndarray               # (pairs,) our costs
    path: Optional[np.ndarray]      # our warping path (single pairs)
    impls: list[Impl]


# ============================================================================ inputs =========
def single_inputs(t1: int, t2: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(t1 * 1000 + t2)
    return rng.normal(size=(t1, DIM)), rng.normal(size=(t2, DIM))


def padded_inputs(n: int, lo: int, hi: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``n`` sequences of ``lo``..``hi`` frames: padded ``(n, hi, DIM)``, lengths, and the trimmed
    C-contiguous arrays the peers take."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n)
    padded = rng.normal(size=(n, hi, DIM))
    return padded, lengths, [np.ascontiguousarray(padded[k, :lengths[k]]) for k in range(n)]


def costs_only(out: Any) -> tuple[np.ndarray, None]:
    return np.atleast_1d(np.asarray(out, dtype=np.float64)), None


def squared(out: Any) -> tuple[np.ndarray, None]:
    """Peers return sqrt(summed squared cost): square to compare with ours."""
    return np.atleast_1d(np.asarray(out, dtype=np.float64)) ** 2, None


def squared_with_path(out: Any) -> tuple[np.ndarray, np.ndarray]:
    path, distance = out
    return np.array([float(distance) ** 2]), np.asarray(path, dtype=np.int64).reshape(-1, 2)


# ============================================================================ cases ==========
def single_case(t1: int, t2: int, peers: set[str], naive: bool) -> Case:
    x, y = single_inputs(t1, t2)
    ours = dtw(x, y)
    impls = [
        Impl("ours dtw (cost+path)", "path", lambda: dtw(x, y), lambda r: (np.array([r.cost]), r.path)),
        Impl("ours dtw (cost only)", "cost", lambda: dtw(x, y, return_path=False),
             lambda r: (np.array([r.cost]), None)),
    ]
    if naive:
        impls.append(Impl("naive Python (cost only)", "cost",
                          lambda: naive_dtw(naive_local_cost(x.tolist(), y.tolist()))[0],
                          costs_only, once=True))
    if "dtaidistance" in peers:
        from dtaidistance import dtw as dd_dtw, dtw_ndim
        impls.append(Impl("dtaidistance distance_fast (cost only)", "cost",
                          lambda: dtw_ndim.distance_fast(x, y), squared))
        impls.append(Impl("dtaidistance warping_path_fast (cost+path)", "path",
                          lambda: dd_dtw.warping_path_fast(x, y, include_distance=True, use_ndim=True),
                          squared_with_path))
    if "tslearn" in peers:
        from tslearn import metrics as ts
        impls.append(Impl("tslearn dtw (cost only)", "cost", lambda: ts.dtw(x, y), squared))
        impls.append(Impl("tslearn dtw_path (cost+path)", "path", lambda: ts.dtw_path(x, y),
                          squared_with_path))
    return Case(f"single {t1}x{t2}", 1, t1 * t2, np.array([ours.cost]), ours.path, impls)


def pairs_case(n: int, lo: int, hi: int, peers: set[str], naive_pairs: int) -> Case:
    x, len_x, xs = padded_inputs(n, lo, hi, seed=n)
    y, len_y, ys = padded_inputs(n, lo, hi, seed=n + 1)
    ours = dtw_batch(x, y, len_x, len_y)
    impls = [
        Impl("ours dtw_batch", "cost", lambda: dtw_batch(x, y, len_x, len_y), costs_only),
        Impl("ours dtw, pair loop", "cost",
             lambda: [dtw(a, b, return_path=False).cost for a, b in zip(xs, ys)], costs_only),
    ]
    if naive_pairs:
        k = min(naive_pairs, n)
        impls.append(Impl(f"naive Python ({k} pairs, scaled)", "cost",
                          lambda: [naive_dtw(naive_local_cost(a.tolist(), b.tolist()))[0]
                                   for a, b in zip(xs[:k], ys[:k])],
                          costs_only, once=True, scale=n / k))
    if "dtaidistance" in peers:
        from dtaidistance import dtw_ndim

        def one_block_per_pair() -> list[float]:
            out = []
            for a, b in zip(xs, ys):
                got = dtw_ndim.distance_matrix_fast([a, b], block=((0, 1), (1, 2)), compact=True,
                                                    parallel=False)
                assert len(got) == 1, "a 1x1 block must compute exactly one pair"
                out.append(got[0])
            return out

        impls.append(Impl("dtaidistance distance_fast, pair loop", "cost",
                          lambda: [dtw_ndim.distance_fast(a, b) for a, b in zip(xs, ys)], squared))
        impls.append(Impl("dtaidistance distance_matrix_fast, 1x1 block per pair", "cost",
                          one_block_per_pair, squared))
    if "tslearn" in peers:
        from tslearn import metrics as ts
        impls.append(Impl("tslearn dtw, pair loop", "cost",
                          lambda: [ts.dtw(a, b) for a, b in zip(xs, ys)], squared))
    cells = int(np.sum(len_x * len_y))
    return Case(f"pairs {n} x {lo}-{hi}", n, cells, ours, None, impls)


def cross_case(m: int, lo: int, hi: int, peers: set[str]) -> Case:
    x, len_x, xs = padded_inputs(m, lo, hi, seed=1000 + m)
    y, len_y, ys = padded_inputs(m, lo, hi, seed=2000 + m)

    def ours_cross() -> np.ndarray:  # pair (i, j) at row i * m + j
        return dtw_batch(np.repeat(x, m, axis=0), np.tile(y, (m, 1, 1)),
                         np.repeat(len_x, m), np.tile(len_y, m))

    ours = ours_cross()
    impls = [Impl("ours dtw_batch (pairs laid out)", "cost", ours_cross, costs_only)]
    if "dtaidistance" in peers:
        from dtaidistance import dtw_ndim

        def rectangle(parallel: bool) -> Callable[[], Any]:
            def run() -> Any:
                got = dtw_ndim.distance_matrix_fast(xs + ys, block=((0, m), (m, 2 * m)), compact=True,
                                                    parallel=parallel)
                assert len(got) == m * m, "the block must compute exactly the clip x standard pairs"
                return got  # row-major: clip i, standard j at i * m + j
            return run

        impls.append(Impl("dtaidistance distance_matrix_fast, parallel", "cost", rectangle(True), squared))
        impls.append(Impl("dtaidistance distance_matrix_fast, 1 thread", "cost", rectangle(False), squared))
    if "tslearn" in peers:
        from tslearn import metrics as ts
        impls.append(Impl("tslearn cdist_dtw, n_jobs=-1", "cost",
                          lambda: ts.cdist_dtw(xs, ys, n_jobs=-1).reshape(-1), squared))
        impls.append(Impl("tslearn cdist_dtw, 1 thread", "cost",
                          lambda: ts.cdist_dtw(xs, ys).reshape(-1), squared))
    cells = int(np.sum(np.outer(len_x, len_y)))
    return Case(f"cross {m}x{m} x {lo}-{hi}", m * m, cells, ours, None, impls)


# ============================================================================ timing =========
def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process (every thread) and the result of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def time_case(case: Case, repeats: int, skip: set[str] = frozenset()) -> list[dict]:
    """Time every implementation of ``case`` not named in ``skip`` (see the module docstring)."""
    impls = [i for i in case.impls if i.name not in skip]
    rounds = [i for i in impls if not i.once]
    walls: dict[str, list[float]] = {i.name: [] for i in impls}
    cpus: dict[str, list[float]] = {i.name: [] for i in impls}
    outputs: dict[str, Any] = {}
    for impl in rounds:  # warm-up
        impl.run()
    for _ in range(repeats):
        for impl in rounds:
            wall, cpu, outputs[impl.name] = timed(impl.run)
            walls[impl.name].append(wall)
            cpus[impl.name].append(cpu)
    for impl in impls:
        if impl.once:
            wall, cpu, outputs[impl.name] = timed(impl.run)
            walls[impl.name].append(wall * impl.scale)
            cpus[impl.name].append(cpu * impl.scale)
    rows = []
    for impl in impls:
        costs, path = impl.convert(outputs[impl.name])
        want = case.costs[:len(costs)]
        if impl.scale == 1.0 and len(costs) != case.pairs:
            raise AssertionError(f"{case.name}: {impl.name} returned {len(costs)} costs for {case.pairs} pairs")
        row = {"case": case.name, "impl": impl.name, "kind": impl.kind, "pairs": case.pairs,
               "cells": case.cells, "best_s": min(walls[impl.name]),
               "median_s": float(np.median(walls[impl.name])), "best_cpu_s": min(cpus[impl.name]),
               "runs": len(walls[impl.name]),
               "max_rel_err_vs_ours": float(np.max(np.abs(costs - want) / np.abs(want)))}
        if impl.kind == "path" and case.path is not None and not impl.name.startswith("ours"):
            row["same_path"] = bool(path is not None and np.array_equal(path, case.path))
        if impl.scale != 1.0:
            row["timed_pairs"] = len(costs)
        rows.append(row)
    return rows


def build_cases(args: argparse.Namespace, peers: set[str], naive: bool) -> list[Case]:
    sizes = [(20, 20), (50, 60)] if args.quick else [(20, 20), (50, 60), (100, 100), (200, 200)]
    pairs = (16, 20, 30) if args.quick else (256, 80, 120)
    cross = (4, 20, 30) if args.quick else (16, 80, 120)
    naive_pairs = (4 if args.quick else 8) if naive else 0
    return ([single_case(t1, t2, peers, naive) for t1, t2 in sizes]
            + [pairs_case(*pairs, peers, naive_pairs), cross_case(*cross, peers)])


def add_ratios(rows: list[dict]) -> None:
    """Per DTW cell, over ours (same case and kind; >1: ours faster): ``ratio_vs_ours`` from the best
    wall times, ``cpu_ratio_vs_ours`` from the best CPU times."""
    ours: dict[tuple[str, str], dict] = {}
    for row in rows:
        row["ns_per_cell"] = 1e9 * row["best_s"] / row["cells"]
        if row["impl"].startswith("ours"):
            ours.setdefault((row["case"], row["kind"]), row)
    for row in rows:
        base = ours[(row["case"], row["kind"])]
        row["ratio_vs_ours"] = row["best_s"] / base["best_s"]
        row["cpu_ratio_vs_ours"] = row["best_cpu_s"] / base["best_cpu_s"] if base["best_cpu_s"] > 0 else None


def tslearn_rows(args: argparse.Namespace) -> list[dict]:
    """The tslearn rows, timed in a child process (``python -m bench.dtw --tslearn-only``)."""
    with tempfile.TemporaryDirectory(prefix="m2t_bench_") as tmp:
        out = Path(tmp) / "tslearn.json"
        cmd = [sys.executable, "-m", "bench.dtw", "--tslearn-only", "--out", str(out),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
        if done.returncode != 0 or not out.is_file():
            print(f"tslearn timing failed: {done.stderr.strip().splitlines()[-1:]}")
            return []
        return json.loads(out.read_text(encoding="utf-8"))


def blas_info() -> list:
    """BLAS kernels and threads (needs threadpoolctl; empty without it)."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
            for i in threadpoolctl.threadpool_info()]


# ============================================================================ output =========
def print_table(rows: list[dict]) -> None:
    print(f"{'case':<20} {'implementation':<54} {'best ms':>9} {'median ms':>10} {'CPU ms':>9} "
          f"{'ns/cell':>8} {'vs ours':>8} {'CPU vs':>7} {'rel. err':>8} {'same path':>9}")
    for row in rows:
        same = {True: "yes", False: "NO", None: ""}[row.get("same_path")]
        cpu_ratio = "n/a" if row["cpu_ratio_vs_ours"] is None else f"{row['cpu_ratio_vs_ours']:.2f}x"
        print(f"{row['case']:<20} {row['impl']:<54} {1e3 * row['best_s']:>9.2f} "
              f"{1e3 * row['median_s']:>10.2f} {1e3 * row['best_cpu_s']:>9.2f} {row['ns_per_cell']:>8.2f} "
              f"{row['ratio_vs_ours']:>7.2f}x {cpu_ratio:>7} {row['max_rel_err_vs_ours']:>8.1e} {same:>9}")
    print("CPU ms: best CPU time of the process over every thread (time spent waiting for the machine\n"
          "does not count). vs ours / CPU vs: the row's best wall / CPU time over ours (same case, same\n"
          "output, every row of a case does the same DTW cells); >1: ours faster. rel. err: largest\n"
          "relative difference of the row's costs from ours, pair by pair.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dtw", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "dtw.json")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case (default 7)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="peer libraries to time, comma-separated, or none (default: both, when installed)")
    parser.add_argument("--tslearn-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    wanted = set() if args.peers.strip() == "none" else {p.strip() for p in args.peers.split(",") if p.strip()}
    if wanted - set(PEERS):
        parser.error(f"--peers: expected names out of {', '.join(PEERS)}, or none; got {args.peers!r}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.peers = wanted
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tslearn_only:  # the child process: tslearn's rows only
        cases = build_cases(args, {"tslearn"}, naive=False)
        rows = [r for case in cases
                for r in time_case(case, args.repeats, skip={i.name for i in case.impls if i.name.startswith("ours")})]
        args.out.write_text(json.dumps(rows), encoding="utf-8")
        return 0
    installed = {p for p in args.peers if importlib.util.find_spec(p) is not None}
    missing = sorted(args.peers - installed)
    rows = [r for case in build_cases(args, installed - {"tslearn"}, naive=True)
            for r in time_case(case, args.repeats)]
    if "tslearn" in installed:
        rows += tslearn_rows(args)
    order = list(dict.fromkeys(r["case"] for r in rows))
    rows.sort(key=lambda r: order.index(r["case"]))  # stable: the parent's rows first within a case
    add_ratios(rows)
    thread_env = {k: v for k, v in os.environ.items() if k.startswith(THREAD_ENV)}
    print(f"peers: {', '.join(sorted(installed)) or 'none'}"
          + (f" (not installed: {', '.join(missing)}; pip install {' '.join(missing)})" if missing else ""))
    print(f"{os.cpu_count()} CPUs; thread pools: "
          + (", ".join(f"{k}={v}" for k, v in sorted(thread_env.items())) or "every core (no thread variables set)"))
    print_table(rows)
    meta = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "repeats": args.repeats, "quick": args.quick,
            "peers": sorted(installed), "blas": blas_info(), "thread_env": thread_env}
    meta.update({f"{peer}_version": version(peer) for peer in sorted(installed)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
