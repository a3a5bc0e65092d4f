"""Quick throughput check (not a test, not the benchmark suite): rows/s of the tree kernels
against XGBoost's ``inplace_predict`` (and LightGBM's ``predict`` with ``--lightgbm``) on the
same data in one run, 1 and 2 threads.

    python -m scoring_core.trees._bench_quick [--rows 200000] [--trees 500] [--depth 8]
        [--lightgbm] [--models DIR]

``--models DIR`` keeps the trained models there and reuses them on the next run. All of our
timings run before any peer's: the peers' OpenMP threads keep spinning after a call and
would slow whatever runs next (PERF_NOTES technique 8).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    w = rng.normal(size=args.features).astype(np.float32)
    Xt = X[: args.train_rows]
    y = (Xt @ w + np.sin(3 * Xt[:, 0]) * 2 > 0).astype(np.float32)
    return X, Xt, y


def _xgboost_model(args: argparse.Namespace, Xt: np.ndarray, y: np.ndarray, cache: Path | None):
    import xgboost as xgb

    path = cache / f"xgb_{args.trees}x{args.depth}_{args.features}.json" if cache else None
    if path is not None and path.exists():
        return xgb.Booster(model_file=str(path))
    t0 = time.perf_counter()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": args.depth, "eta": 0.1,
                         "tree_method": "hist", "nthread": 2}, xgb.DMatrix(Xt, y), args.trees)
    print(f"trained xgboost {args.trees} trees depth {args.depth} "
          f"in {time.perf_counter() - t0:.1f}s")
    if path is not None:
        booster.save_model(str(path))
    return booster


def _lightgbm_model(args: argparse.Namespace, Xt: np.ndarray, y: np.ndarray, cache: Path | None):
    import lightgbm as lgb

    path = cache / f"lgb_{args.trees}x255_{args.features}.txt" if cache else None
    if path is not None and path.exists():
        return lgb.Booster(model_file=str(path))
    t0 = time.perf_counter()
    booster = lgb.train({"objective": "binary", "num_leaves": 255, "verbose": -1,
                         "num_threads": 2, "min_data_in_leaf": 5}, lgb.Dataset(Xt, y), args.trees)
    print(f"trained lightgbm {args.trees} trees x 255 leaves in {time.perf_counter() - t0:.1f}s")
    if path is not None:
        booster.save_model(str(path))
    return booster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--lightgbm-rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lightgbm", action="store_true", help="also LightGBM, 255 leaves")
    ap.add_argument("--models", type=Path, default=None, help="keep/reuse trained models here")
    args = ap.parse_args()
    if args.models is not None:
        args.models.mkdir(parents=True, exist_ok=True)

    from scoring_core.trees import from_lightgbm_text, from_xgboost_json

    X, Xt, y = _data(args)
    cases = []  # (name, ensemble, rows, peer(threads))
    booster = _xgboost_model(args, Xt, y, args.models)
    ens = from_xgboost_json(booster)

    def xgb_peer(threads: int, booster=booster) -> None:
        booster.set_param({"nthread": threads})
        booster.inplace_predict(X)

    cases.append(("xgboost", ens, X, xgb_peer))
    print(ens, f"max abs diff: {np.abs(ens.predict(X) - booster.inplace_predict(X)).max():.2e}")
    if args.lightgbm:
        lb = _lightgbm_model(args, Xt, y, args.models)
        lens = from_lightgbm_text(lb)
        Xl = X[: args.lightgbm_rows]
        cases.append(("lightgbm", lens, Xl, lambda threads: lb.predict(Xl, num_threads=threads)))
        print(lens, f"max abs diff: {np.abs(lens.predict(Xl) - lb.predict(Xl)).max():.2e}")

    ours: dict[tuple[str, int], float] = {}
    for name, model, rows, _ in cases:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ours[name, threads] = _best(lambda: model.predict(rows, parallel=threads > 1),
                                        args.repeat)
    numba.set_num_threads(1)
    one = X[:1]
    latency = _best(lambda: ens.predict(one), 200) * 1e6
    peer_latency = _best(lambda: booster.inplace_predict(one), 200) * 1e6
    print(f"xgboost batch 1 latency: ours {latency:.1f} us, inplace_predict {peer_latency:.1f} us")

    print(f"{'model':10} {'threads':>7} {'ours M rows/s':>14} {'peer M rows/s':>14} {'ratio':>6}")
    for name, _, rows, peer in cases:
        for threads in (1, 2):
            theirs = _best(lambda: peer(threads), args.repeat)
            a, b = len(rows) / ours[name, threads] / 1e6, len(rows) / theirs / 1e6
            print(f"{name:10} {threads:7d} {a:14.3f} {b:14.3f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
