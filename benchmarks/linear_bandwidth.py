"""The linear kernel against the machine's streaming-read limit and numpy's sgemv, same data, one run.

    python benchmarks/linear_bandwidth.py [--rows 1000000] [--features 200] [--rounds 9]

A logistic regression of ``--features`` float32 features is bandwidth-bound: it reads
4 bytes a feature a row and does two flops with them. On one array of ``--rows`` rows
(row-major, and the same values column-major) this times, per thread count (1 and
all cores), in ``--rounds`` rounds that each run every contestant once, in turn:

- the streaming-read limit: a numba prange sum over the same row-major array;
- numpy sgemv + sigmoid (``1 / (1 + exp(-(X @ w + b)))``), BLAS on that many threads;
- Milepost ``predict`` on the row-major array (what a tensor input becomes);
- Milepost ``predict`` on the column-major array (what named Arrow columns become);
- Milepost ``predict_arrow`` end to end, on a tensor column and on named columns
  (read in place, each column from its own buffer: scoring_core.linear_columns).

The order is shuffled every round. Each figure is the median over rounds; ``fraction_of_limit`` is the median of the
per-round ratios to that round's read limit, which cancels most of a shared machine's
drift, and ``best_fraction_of_limit`` the best round's rate over the best read (what the
code can do when nothing else runs: on a busy machine the two part). Prints a table and
writes benchmarks/results/linear_bandwidth.json (linear_bandwidth-<rows>x<features>.json
for other shapes). Nothing is asserted.
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

from benchmarks._timing import machine, read_limit_kernel, table, write  # noqa: E402


def _tensor_batch(X: np.ndarray):
    import pyarrow as pa

    values = pa.array(X.reshape(-1))
    return pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(values, X.shape[1])], names=["input"])


def _named_batch(XF: np.ndarray, names: list[str]):
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array(XF[:, j]) for j in range(XF.shape[1])], names=names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--train-rows", type=int, default=20_000)
    args = parser.parse_args()

    import numba
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    import scoring_core

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    XF = np.asfortranarray(X)
    w_true = rng.normal(size=args.features)
    train = X[: args.train_rows]
    y = (train @ w_true + 0.5 * rng.normal(size=len(train)) > 0).astype(np.int32)
    model = LogisticRegression(max_iter=500).fit(train, y)
    compiled = scoring_core.compile(model)
    names = compiled.feature_names
    tensor, named = _tensor_batch(X), _named_batch(XF, names)
    coef32 = model.coef_[0].astype(np.float32)
    b32 = np.float32(model.intercept_[0])
    flat = X.reshape(-1)
    total = read_limit_kernel()

    # Every path must agree before anything is timed; tensor and named inputs bit for bit.
    expected = model.predict_proba(X[:10_000])
    rows_out = compiled.predict(X)
    np.testing.assert_allclose(rows_out[:10_000], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(rows_out, compiled.predict(XF))
    named_out = compiled.predict_arrow(named).column(0).values.to_numpy().reshape(-1, 2)
    np.testing.assert_array_equal(named_out, rows_out)

    cores = len(os.sched_getaffinity(0))
    results: list[dict] = []
    summary: list[list[object]] = []
    for threads in sorted({1, cores}):
        scoring_core.set_num_threads(threads)
        numba.set_num_threads(threads)

        def sgemv(threads: int = threads) -> object:
            with threadpool_limits(threads, user_api="blas"):
                return 1.0 / (1.0 + np.exp(-(X @ coef32 + b32)))

        contestants: dict[str, Callable[[], object]] = {
            "read limit": lambda: total(flat),
            "numpy sgemv+sigmoid": sgemv,
            "milepost row-major": lambda: compiled.predict(X),
            "milepost column-major": lambda: compiled.predict(XF),
            "milepost arrow tensor": lambda: compiled.predict_arrow(tensor),
            "milepost arrow named columns": lambda: compiled.predict_arrow(named),
        }
        seconds: dict[str, list[float]] = {name: [] for name in contestants}
        with threadpool_limits(1, user_api="blas"):  # BLAS only where sgemv asks for more
            for run in contestants.values():
                run()  # warm up: compile, fault the pages in
            order = np.random.default_rng(threads)
            for _ in range(args.rounds):
                # A new order each round: a thread pool left spinning by one contestant
                # (OpenBLAS after sgemv, PERF_NOTES technique 8) slows whichever comes next.
                for name in order.permutation(list(contestants)):
                    t0 = time.perf_counter()
                    contestants[name]()
                    seconds[name].append(time.perf_counter() - t0)
        limit_s = seconds["read limit"]
        for name, times in seconds.items():
            rows_per_s = args.rows / statistics.median(times)
            fraction = statistics.median(lim / t for lim, t in zip(limit_s, times))
            best = min(limit_s) / min(times)
            record = {
                "threads": threads, "contestant": name, "rows_per_s": rows_per_s,
                "bytes_per_s": rows_per_s * 4 * args.features, "fraction_of_limit": fraction,
                "best_rows_per_s": args.rows / min(times), "best_fraction_of_limit": best,
                "seconds": times,
            }
            results.append(record)
            summary.append([threads, name, rows_per_s / 1e6, record["bytes_per_s"] / 1e9, fraction,
                            record["best_rows_per_s"] / 1e6, best])
    print(table(["threads", "contestant", "M rows/s", "GB/s", "of limit", "best M rows/s", "best of limit"],
                summary))
    name = "linear_bandwidth"
    if (args.rows, args.features) != (1_000_000, 200):
        name += f"-{args.rows}x{args.features}"
    path = write(name, {
        "machine": machine(), "rows": args.rows, "features": args.features, "rounds": args.rounds,
        "model": "LogisticRegression, float32 input, float64 accumulation", "results": results,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
