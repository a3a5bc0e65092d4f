"""Scoring-core throughput against the libraries people would otherwise use, same data, one run.

    python benchmarks/scoring_core.py [--models logistic,xgboost,...] [--batches 1,64,10000,1000000]
        [--rounds 1] [--out scoring_core]

For each model, batch size and thread count (1 and all cores) it times
Milepost's CompiledModel.predict beside the source library's own predict and
ONNX Runtime where a converter exists, prints rows/s and Milepost's ratio to
the fastest peer, and writes benchmarks/results/<out>.json (scoring_core.json by
default). It also measures the machine's streaming read bandwidth, the ceiling for
linear models. With ``--rounds`` N > 1, Milepost and its peers are timed in turn N
times and the medians are reported (the ratio is the median of the per-round ratios),
which a shared machine needs. Nothing here is asserted: the figures are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import machine, rate, read_limit_kernel, table, write  # noqa: E402

FEATURES = 100
Runner = Callable[[np.ndarray], object]


# ---- the machine's ceiling ----
def bandwidth(threads: int) -> float:
    """Bytes per second a numba prange sum streams from a 1 GiB float32 array."""
    import numba

    total = read_limit_kernel()
    a = np.ones(1 << 28, dtype=np.float32)
    numba.set_num_threads(threads)
    total(a)
    best = min(_timed(lambda: total(a)) for _ in range(5))
    return a.nbytes / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- models: each returns the fitted source model and its peers per thread count ----
def _data(rows: int, seed: int = 0, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features)
    y = (X @ w + 2 * np.sin(3 * X[:, 0]) > 0).astype(np.int32)
    return X, y


def _onnx_runner(onx, threads: int, output: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # converted tree models warn on every call about a label shape
    session = ort.InferenceSession(onx.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda X: session.run(None, {name: X})[output]


def _skl_onnx(model, threads: int, output: int = 1) -> Runner | None:
    try:
        from skl2onnx import to_onnx

        options = {"zipmap": False} if hasattr(model, "classes_") else None
        onx = to_onnx(model, np.zeros((1, FEATURES), np.float32), options=options)
    except Exception as err:  # noqa: BLE001 - a missing converter only drops that peer
        print(f"  (no ONNX peer: {type(err).__name__}: {err})")
        return None
    return _onnx_runner(onx, threads, output)


def build_logistic(train_rows: int):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, y = _data(train_rows)
    model = LogisticRegression(max_iter=300).fit(X, y)

    def peers(threads: int) -> dict[str, Runner]:
        def sklearn(X: np.ndarray) -> object:
            with threadpool_limits(threads):
                return model.predict_proba(X)

        coef, intercept = model.coef_.astype(np.float32)[0], np.float32(model.intercept_[0])

        def numpy_gemv(X: np.ndarray) -> object:
            with threadpool_limits(threads):
                return 1.0 / (1.0 + np.exp(-(X @ coef + intercept)))

        found = {"scikit-learn": sklearn, "numpy sgemv+sigmoid": numpy_gemv}
        onnx = _skl_onnx(model, threads)
        if onnx is not None:
            found["onnxruntime"] = onnx
        return found

    return model, peers


def build_xgboost(train_rows: int, trees: int = 500, depth: int = 8, features: int = FEATURES):
    import xgboost as xgb

    X, y = _data(train_rows, features=features)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "tree_method": "hist",
         "nthread": os.cpu_count()},
        xgb.DMatrix(X, y), trees,
    )

    def peers(threads: int) -> dict[str, Runner]:
        b = booster.copy()
        b.set_param({"nthread": threads})
        return {"xgboost inplace_predict": lambda X: b.inplace_predict(X)}

    return booster, peers


def build_lightgbm(train_rows: int):
    import lightgbm as lgb

    X, y = _data(train_rows)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 255, "min_data_in_leaf": 5, "verbose": -1, "num_threads": os.cpu_count()},
        lgb.Dataset(X, y), 500,
    )

    def peers(threads: int) -> dict[str, Runner]:
        found: dict[str, Runner] = {"lightgbm predict": lambda X: booster.predict(X, num_threads=threads)}
        try:
            from onnxmltools import convert_lightgbm
            from onnxmltools.convert.common.data_types import FloatTensorType

            onx = convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, FEATURES]))], zipmap=False)
            found["onnxruntime"] = _onnx_runner(onx, threads, 1)
        except Exception as err:  # noqa: BLE001
            print(f"  (no ONNX peer: {type(err).__name__}: {err})")
        return found

    return booster, peers


def build_random_forest(train_rows: int):
    from sklearn.ensemble import RandomForestClassifier

    X, y = _data(train_rows)
    model = RandomForestClassifier(n_estimators=100, max_depth=12, n_jobs=-1, random_state=0).fit(X, y)

    def peers(threads: int) -> dict[str, Runner]:
        def sklearn(X: np.ndarray) -> object:
            model.n_jobs = threads
            return model.predict_proba(X)

        found = {"scikit-learn": sklearn}
        onnx = _skl_onnx(model, threads)
        if onnx is not None:
            found["onnxruntime"] = onnx
        return found

    return model, peers


def build_mlp(train_rows: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    X, y = _data(train_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPRegressor(hidden_layer_sizes=(256, 256), max_iter=3, random_state=0).fit(X, y.astype(np.float64))

    def peers(threads: int) -> dict[str, Runner]:
        def sklearn(X: np.ndarray) -> object:
            with threadpool_limits(threads):
                return model.predict(X)

        found = {"scikit-learn": sklearn}
        onnx = _skl_onnx(model, threads, output=0)
        if onnx is not None:
            found["onnxruntime"] = onnx
        return found

    return model, peers


def build_xgboost_shallow(train_rows: int):
    return build_xgboost(train_rows, trees=300, depth=7, features=50)


MODELS = {
    "logistic": ("logistic regression, 100 features", build_logistic, 20_000),
    "xgboost": ("XGBoost 500 trees depth 8", build_xgboost, 20_000),
    "xgboost_300x7": ("XGBoost 300 trees depth 7, 50 features", build_xgboost_shallow, 20_000),
    "lightgbm": ("LightGBM 500 trees x 255 leaves", build_lightgbm, 50_000),
    "random_forest": ("RandomForest 100 trees depth 12", build_random_forest, 20_000),
    "mlp": ("MLP 100-256-256-1", build_mlp, 20_000),
}
# Feature counts other than FEATURES.
MODEL_FEATURES = {"xgboost_300x7": 50}


def _median_rate(rates: list[dict]) -> dict:
    """The median of ``rate`` results (one round's result when there is one)."""
    return {key: statistics.median(r[key] for r in rates) for key in ("rows_per_s", "us_per_call")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,64,10000,1000000")
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=1, help="time Milepost and its peers in turn this many times")
    parser.add_argument("--out", default="scoring_core", help="results file name under benchmarks/results")
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    import scoring_core

    cores = len(os.sched_getaffinity(0))
    thread_counts = sorted({1, cores})
    batches = [int(b) for b in args.batches.split(",")]
    inputs: dict[int, np.ndarray] = {}

    bw = {t: bandwidth(t) for t in thread_counts}
    print("streaming read bandwidth: " + ", ".join(f"{bw[t] / 1e9:.1f} GB/s on {t} thread(s)" for t in thread_counts))
    results: list[dict] = []
    summary: list[list[object]] = []
    for key in args.models.split(","):
        title, build, train_rows = MODELS[key]
        print(f"\n== {title}: training on {train_rows} rows")
        source, peers_for = build(train_rows)
        try:
            compiled = scoring_core.compile(source)
        except Exception as err:  # noqa: BLE001 - reported, the other models still run
            print(f"  Milepost cannot compile it yet: {type(err).__name__}: {err}")
            results.append({"model": key, "error": f"{type(err).__name__}: {err}"})
            continue
        features = MODEL_FEATURES.get(key, FEATURES)
        if features not in inputs:
            inputs[features] = _data(max(batches), seed=1, features=features)[0]
        X_all = inputs[features]
        for threads in thread_counts:
            scoring_core.set_num_threads(threads)
            peers = peers_for(threads)
            for batch in batches:
                X = np.ascontiguousarray(X_all[:batch])
                seconds = args.min_seconds if batch < 1_000_000 else 0.0
                rounds: list[dict] = []
                for _ in range(args.rounds):  # ours and each peer in turn, every round
                    with threadpool_limits(1, user_api="blas"):  # BLAS only: numba's pool is OpenMP here
                        one = {"milepost": rate(lambda compiled=compiled, X=X: compiled.predict(X), batch,
                                                min_seconds=seconds)}
                    for name, run in peers.items():
                        one[name] = rate(lambda run=run, X=X: run(X), batch, min_seconds=seconds)
                    rounds.append(one)
                ours = _median_rate([r["milepost"] for r in rounds])
                record = {"model": key, "batch": batch, "threads": threads, "milepost": ours, "peers": {},
                          "rounds": args.rounds}
                for name in peers:
                    record["peers"][name] = _median_rate([r[name] for r in rounds])
                best_name, best = max(record["peers"].items(), key=lambda kv: kv[1]["rows_per_s"])
                record["fastest_peer"] = best_name
                record["ratio_to_fastest_peer"] = statistics.median(
                    r["milepost"]["rows_per_s"] / max(v["rows_per_s"] for k, v in r.items() if k != "milepost")
                    for r in rounds)
                if key == "logistic":
                    limit = bw[threads] / (4 * FEATURES)
                    record["bandwidth_limit_rows_per_s"] = limit
                    record["fraction_of_bandwidth_limit"] = ours["rows_per_s"] / limit
                results.append(record)
                summary.append([
                    key, batch, threads, ours["rows_per_s"], ours["us_per_call"], best_name,
                    best["rows_per_s"], record["ratio_to_fastest_peer"],
                ])
                print(f"  batch {batch:>8} threads {threads}: milepost {ours['rows_per_s']:,.0f} rows/s, "
                      f"{best_name} {best['rows_per_s']:,.0f} rows/s, ratio {record['ratio_to_fastest_peer']:.2f}")
    print()
    print(table(["model", "batch", "threads", "milepost rows/s", "us/call", "fastest peer", "peer rows/s", "ratio"], summary))
    path = write(args.out, {
        "machine": machine(), "bandwidth_bytes_per_s": {str(t): bw[t] for t in thread_counts}, "results": results,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
