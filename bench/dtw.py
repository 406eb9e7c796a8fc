"""DTW timing: our vectorised DTW against the naive pure-Python reference and, when installed,
``dtaidistance`` (C) and ``tslearn`` (bench-only dependencies, not in requirements.txt).

    python bench/dtw.py [--out results/bench/dtw.json] [--repeats 7] [--quick]

Cases (random float64 data, 66 dims = 22 joints x 3):

* ``single 200x200``: one pair of 200 and 200 frames (our ``dtw`` with path and our cost only);
* ``batch 256 x 80-120``: 256 pairs of 80-120 frames (our ``dtw_batch``, cost only, padded);
* a few smaller single pairs, where the naive reference is affordable.

Each time is the best and the median of ``--repeats`` runs (the naive reference runs once on the
large cases). Costs are checked against the other implementations (dtaidistance returns the square
root of the squared-Euclidean DTW cost; tslearn likewise). Prints a table and writes JSON.
Timings are never a test: they depend on the machine and its load.
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
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from alignment.dtw import dtw, dtw_batch  # noqa: E402
from alignment.reference import naive_dtw, naive_local_cost  # noqa: E402


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Best and median wall time (seconds) of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def optional_libraries(tslearn: bool) -> dict[str, object]:
    """dtaidistance, or tslearn alone: tslearn's imports (numba, scikit-learn) bring their own
    OpenMP / OpenBLAS thread pools, which spin on this 2-core machine and slow every later BLAS
    call in the process, so tslearn is timed in a child process of its own."""
    libs: dict[str, object] = {}
    try:
        if tslearn:
            from tslearn import metrics as ts_metrics
            libs["tslearn"] = ts_metrics
        else:
            from dtaidistance import dtw_ndim
            libs["dtaidistance"] = dtw_ndim
    except ImportError:
        pass
    return libs


def bench_single(t1: int, t2: int, dim: int, repeats: int, libs: dict, naive: bool,
                 tslearn_only: bool = False) -> list[dict]:
    rng = np.random.default_rng(t1 * 1000 + t2)
    x, y = rng.normal(size=(t1, dim)), rng.normal(size=(t2, dim))
    case = f"single {t1}x{t2}"
    rows = []
    ref_cost = dtw(x, y, return_path=False).cost
    if tslearn_only:
        m = libs["tslearn"]
        best, med, res = timeit(lambda: m.dtw(x, y), repeats)
        rows.append(dict(case=case, impl="tslearn", best_s=best, median_s=med,
                         cost=float(res) ** 2))
        return _relative_errors(rows, ref_cost)
    best, med, res = timeit(lambda: dtw(x, y), repeats)
    rows.append(dict(case=case, impl="ours dtw (cost+path)", best_s=best, median_s=med,
                     cost=ref_cost))
    best, med, res = timeit(lambda: dtw(x, y, return_path=False).cost, repeats)
    rows.append(dict(case=case, impl="ours dtw (cost only)", best_s=best, median_s=med, cost=res))
    if naive:
        best, med, res = timeit(lambda: naive_dtw(naive_local_cost(x.tolist(), y.tolist()))[0], 1)
        rows.append(dict(case=case, impl="naive Python", best_s=best, median_s=med, cost=res))
    if "dtaidistance" in libs:
        d = libs["dtaidistance"]
        xc, yc = np.ascontiguousarray(x), np.ascontiguousarray(y)
        best, med, res = timeit(lambda: d.distance_fast(xc, yc), repeats)
        rows.append(dict(case=case, impl="dtaidistance (C)", best_s=best, median_s=med,
                         cost=float(res) ** 2))
    return _relative_errors(rows, ref_cost)


def bench_batch(n: int, lo: int, hi: int, dim: int, repeats: int, libs: dict,
                naive_pairs: int, tslearn_only: bool = False) -> list[dict]:
    rng = np.random.default_rng(n)
    len_x, len_y = rng.integers(lo, hi + 1, n), rng.integers(lo, hi + 1, n)
    x, y = rng.normal(size=(n, hi, dim)), rng.normal(size=(n, hi, dim))  # (N, T, D) padded
    xs = [np.ascontiguousarray(x[k, :len_x[k]]) for k in range(n)]
    ys = [np.ascontiguousarray(y[k, :len_y[k]]) for k in range(n)]
    case = f"batch {n} x {lo}-{hi}"
    rows = []
    if tslearn_only:
        ours = dtw_batch(x, y, len_x, len_y)
        m = libs["tslearn"]
        best, med, res = timeit(lambda: np.array([m.dtw(a, b) for a, b in zip(xs, ys)]),
                                max(1, repeats // 3))
        rows.append(dict(case=case, impl="tslearn, pair loop", best_s=best, median_s=med,
                         costs=res ** 2))
        return _batch_errors(rows, ours)
    best, med, ours = timeit(lambda: dtw_batch(x, y, len_x, len_y), repeats)
    rows.append(dict(case=case, impl="ours dtw_batch (cost only)", best_s=best, median_s=med,
                     costs=ours))
    best, med, res = timeit(lambda: np.array([dtw(a, b, return_path=False).cost
                                              for a, b in zip(xs, ys)]), max(1, repeats // 3))
    rows.append(dict(case=case, impl="ours dtw, pair by pair", best_s=best, median_s=med,
                     costs=res))
    if naive_pairs:
        k = min(naive_pairs, n)
        best, med, res = timeit(lambda: np.array([
            naive_dtw(naive_local_cost(a.tolist(), b.tolist()))[0]
            for a, b in zip(xs[:k], ys[:k])]), 1)
        rows.append(dict(case=case, impl=f"naive Python (x{n}/{k} extrapolated)",
                         best_s=best * n / k, median_s=med * n / k,
                         costs=np.concatenate([res, ours[k:]])))
    if "dtaidistance" in libs:
        d = libs["dtaidistance"]
        best, med, res = timeit(lambda: np.array([d.distance_fast(a, b)
                                                  for a, b in zip(xs, ys)]), repeats)
        rows.append(dict(case=case, impl="dtaidistance (C), pair loop", best_s=best,
                         median_s=med, costs=res ** 2))
    return _batch_errors(rows, ours)


def _batch_errors(rows: list[dict], ours: np.ndarray) -> list[dict]:
    for row in rows:
        c = row.pop("costs")
        row["max_rel_err_vs_ours"] = float(np.max(np.abs(c - ours) / np.abs(ours)))
    return rows


def _relative_errors(rows: list[dict], ref: float) -> list[dict]:
    for row in rows:
        row["max_rel_err_vs_ours"] = abs(row.pop("cost") - ref) / abs(ref)
    return rows


def blas_info() -> list:
    """BLAS kernels and threads (needs threadpoolctl; empty without it)."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
            for i in threadpoolctl.threadpool_info()]


def tslearn_rows(args: argparse.Namespace) -> list[dict]:
    """Run the tslearn timings in a child process (see :func:`optional_libraries`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tslearn.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--tslearn-only", "--out", str(out),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            print(f"tslearn timing failed: {done.stderr.strip().splitlines()[-1:]}")
            return []
        return json.loads(out.read_text(encoding="utf-8"))


def print_table(rows: list[dict]) -> None:
    print(f"{'case':<22} {'implementation':<38} {'best ms':>10} {'median ms':>10} "
          f"{'speed-up':>9} {'rel. err':>9}")
    by_case: dict[str, float] = {}
    for row in rows:
        by_case.setdefault(row["case"], row["best_s"])  # first row of a case: ours
    for row in rows:
        ratio = row["best_s"] / by_case[row["case"]]
        print(f"{row['case']:<22} {row['impl']:<38} {1e3 * row['best_s']:>10.2f} "
              f"{1e3 * row['median_s']:>10.2f} {ratio:>8.2f}x {row['max_rel_err_vs_ours']:>9.1e}")
    print("(speed-up: the row's best time / ours; >1 means ours is faster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench" / "dtw.json")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--tslearn-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [(20, 20), (50, 60)] if args.quick else [(20, 20), (50, 60), (100, 100), (200, 200)]
    batch = (16, 20, 30, 4) if args.quick else (256, 80, 120, 8)
    if args.tslearn_only:  # the child process
        libs = optional_libraries(tslearn=True)
        rows = [r for t1, t2 in sizes
                for r in bench_single(t1, t2, 66, args.repeats, libs, False, tslearn_only=True)]
        rows += bench_batch(*batch[:3], 66, args.repeats, libs, 0, tslearn_only=True)
        args.out.write_text(json.dumps(rows), encoding="utf-8")
        return 0
    libs = optional_libraries(tslearn=False)
    rows = []
    for t1, t2 in sizes:
        rows += bench_single(t1, t2, 66, args.repeats, libs, naive=True)
    rows += bench_batch(*batch[:3], 66, args.repeats, libs, naive_pairs=batch[3])
    if importlib.util.find_spec("tslearn") is not None:
        rows += tslearn_rows(args)
        libs["tslearn"] = True
    print(f"optional libraries: {', '.join(libs) or 'none (pip install dtaidistance tslearn)'}")
    order = list(dict.fromkeys(r["case"] for r in rows))
    rows.sort(key=lambda r: order.index(r["case"]))  # stable: ours first within a case
    print_table(rows)
    print(f"BLAS: {blas_info() or 'unknown (install threadpoolctl)'}")
    meta = {"python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "libraries": sorted(libs), "blas": blas_info(),
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
