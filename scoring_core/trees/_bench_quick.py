"""Quick throughput check (not a test, not the benchmark suite): rows/s of the tree kernels
against XGBoost's ``inplace_predict`` (and LightGBM's ``predict`` with ``--lightgbm``) on the
same data in one run, 1 and 2 threads.

    python -m scoring_core.trees._bench_quick [--rows 200000] [--trees 500] [--depth 8]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lightgbm", action="store_true", help="also LightGBM, 255 leaves")
    args = ap.parse_args()

    import xgboost as xgb

    from scoring_core.trees import from_lightgbm_text, from_xgboost_json

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    w = rng.normal(size=args.features).astype(np.float32)
    Xt = X[: args.train_rows]
    y = (Xt @ w + np.sin(3 * Xt[:, 0]) * 2 > 0).astype(np.float32)
    t0 = time.perf_counter()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": args.depth, "eta": 0.1,
                         "tree_method": "hist", "nthread": 2}, xgb.DMatrix(Xt, y), args.trees)
    print(f"trained xgboost {args.trees} trees depth {args.depth} in {time.perf_counter() - t0:.1f}s")
    ens = from_xgboost_json(booster)
    print(ens)
    ref = booster.inplace_predict(X)
    got = ens.predict(X)
    print(f"max abs diff vs xgboost: {np.abs(got - ref).max():.2e}")
    rows = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        booster.set_param({"nthread": threads})
        ours = _best(lambda: ens.predict(X, parallel=threads > 1), args.repeat)
        peer = _best(lambda: booster.inplace_predict(X), args.repeat)
        rows.append(("xgboost", threads, args.rows / ours / 1e6, args.rows / peer / 1e6))
    batch1 = X[:1]
    numba.set_num_threads(1)
    lat = _best(lambda: ens.predict(batch1), 200) * 1e6
    peer_lat = _best(lambda: booster.inplace_predict(batch1), 200) * 1e6
    print(f"batch 1 latency: ours {lat:.1f} us, inplace_predict {peer_lat:.1f} us")

    if args.lightgbm:
        import lightgbm as lgb

        n_lgb = min(args.rows, 50_000)
        Xl = X[:n_lgb]
        t0 = time.perf_counter()
        lb = lgb.train({"objective": "binary", "num_leaves": 255, "verbose": -1, "num_threads": 2,
                        "min_data_in_leaf": 5}, lgb.Dataset(Xt, y), args.trees)
        print(f"trained lightgbm {args.trees} trees x 255 leaves in {time.perf_counter() - t0:.1f}s")
        lens = from_lightgbm_text(lb)
        print(lens, f"max abs diff vs lightgbm: {np.abs(lens.predict(Xl) - lb.predict(Xl)).max():.2e}")
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ours = _best(lambda: lens.predict(Xl, parallel=threads > 1), args.repeat)
            peer = _best(lambda: lb.predict(Xl, num_threads=threads), args.repeat)
            rows.append(("lightgbm", threads, n_lgb / ours / 1e6, n_lgb / peer / 1e6))

    print(f"{'model':10} {'threads':>7} {'ours M rows/s':>14} {'peer M rows/s':>14} {'ratio':>6}")
    for model, threads, ours, peer in rows:
        print(f"{model:10} {threads:7d} {ours:14.3f} {peer:14.3f} {ours / peer:6.2f}")


if __name__ == "__main__":
    main()
