"""What drift accounting costs on the scoring path: a deployment's predict without its
LiveWindow (scoring_core.drift), with it at the default budget, and counting every row; same
model, same batches, interleaved rounds in a shuffled order.

Models: XGBoost with 500 trees of depth 6 on 30 features, and a logistic regression on 100
features; batches of 64 and 10,000 rows, as named Arrow columns (the agent's decoded batch).
At the default budget (MILEPOST_DRIFT_BUDGET, 1% of scoring time) a batch is counted whole, in
part (a block of its rows, batches of 1,024 rows or more) or not: the table says what share of rows
it counted. Run: `python benchmarks/drift_overhead.py [--rounds 5]`; results in
results/drift_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scoring_core  # noqa: E402
from benchmarks._timing import machine, rate, table, write  # noqa: E402
from engines.native import NativeModel  # noqa: E402


def models() -> dict[str, tuple[object, np.ndarray]]:
    import xgboost
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X30 = rng.normal(size=(20_000, 30)).astype(np.float32)
    y30 = (X30[:, :5].sum(axis=1) + rng.normal(size=20_000) > 0).astype(int)
    trees = xgboost.XGBClassifier(n_estimators=500, max_depth=6, tree_method="hist").fit(X30, y30)
    X100 = rng.normal(size=(20_000, 100)).astype(np.float32)
    y100 = (X100[:, :10].sum(axis=1) > 0).astype(int)
    linear = LogisticRegression(max_iter=300).fit(X100, y100)
    return {"xgboost_500x6_30f": (trees, X30), "logistic_100f": (linear, X100)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results, rows_out = [], []
    for name, (estimator, X) in models().items():
        compiled = scoring_core.compile(estimator, baseline=X)
        variants = {"without": NativeModel(compiled), "default budget": NativeModel(compiled),
                    "every row": NativeModel(compiled)}
        variants["without"].drift = None
        every = variants["every row"].drift
        assert every is not None
        every.budget = 1.0
        for n in (64, 10_000):
            batch = pa.RecordBatch.from_arrays([pa.array(X[:n, i]) for i in range(X.shape[1])],
                                               names=list(compiled.feature_names))
            timings: dict[str, list[float]] = {label: [] for label in variants}
            sampled = variants["default budget"].drift
            assert sampled is not None
            rows_before = sampled.counted_rows
            offered_before = sampled.offered
            order = np.random.default_rng(n)
            for _ in range(args.rounds):  # interleaved, in a new order each round: no variant always goes first
                for label in order.permutation(list(variants)):
                    model = variants[str(label)]
                    timings[str(label)].append(rate(lambda m=model, b=batch: m.predict(b), n, min_seconds=0.4)["rows_per_s"])
            off, on, full = (statistics.median(timings[label]) for label in variants)
            counted = (sampled.counted_rows - rows_before) / max((sampled.offered - offered_before) * n, 1)
            results.append({"model": name, "rows": n, "rows_per_s_without": off, "rows_per_s_with": on,
                            "cost": 1 - on / off, "rows_counted": counted, "rows_per_s_every_row": full,
                            "cost_every_row": 1 - full / off})
            rows_out.append([name, n, f"{off:,.0f}", f"{on:,.0f}", f"{1 - on / off:.1%}", f"{counted:.1%}",
                             f"{full:,.0f}", f"{1 - full / off:.1%}"])
    print(table(["model", "rows", "rows/s without", "rows/s, default budget", "cost", "rows counted",
                 "rows/s, every row", "cost"], rows_out))
    write("drift_overhead", {"machine": machine(), "rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
