"""TreeSHAP side by side: scoring_core.explain against XGBoost's own ``pred_contribs`` and
shap's TreeExplainer, on one thread each, same model, same rows, one run.

Model: XGBoost, 500 trees of depth 8 (binary:logistic) on 50 float32 features, trained
here on 20,000 rows. Explained: 200 held-out rows in one batch, and 20 of them one row per
call (an online explanation; XGBoost builds a DMatrix per row, as a server would). Each explainer's best of
``--repeats`` timed calls after a warm-up (numba compiles then, XGBoost and shap build their
caches); the table adds how far each is from XGBoost's values. Ours runs its serial kernel
(one thread), and for reference numba's threads too. Run: `python benchmarks/treeshap.py`;
results in results/treeshap.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scoring_core  # noqa: E402
from benchmarks._timing import machine, table, write  # noqa: E402
from scoring_core.explain.trees import TreeExplainer  # noqa: E402

N_FEATURES = 50


def best_seconds(fn, repeats: int) -> tuple[float, np.ndarray]:  # noqa: ANN001
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _entry(name: str, n_rows: int, seconds: float, values: np.ndarray, reference: tuple[float, np.ndarray]) -> dict:
    return {
        "explainer": name,
        "rows": n_rows,
        "seconds": seconds,
        "rows_per_s": n_rows / seconds,
        "ms_per_row": seconds / n_rows * 1e3,
        "speedup_vs_xgboost_1_thread": reference[0] / seconds,
        "max_abs_diff_vs_xgboost": float(np.abs(values - reference[1]).max()),
    }


def main() -> None:
    import shap
    import xgboost as xgb

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000 + args.rows, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.02] = np.nan
    Z = np.nan_to_num(X)
    y = (Z[:, 0] + Z[:, 1] * Z[:, 2] + np.sin(2 * Z[:, 3]) + Z[:, 4:10].sum(axis=1) / 3
         + rng.normal(size=len(X)) > 0).astype(int)
    train, rows = X[:20_000], X[20_000:]
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 8, "eta": 0.05, "nthread": 2},
                        xgb.DMatrix(train, label=y[:20_000]), 500)
    booster.set_param({"nthread": 1})
    ensemble = scoring_core.compile(booster).model.ensemble
    t0 = time.perf_counter()
    ours = TreeExplainer(ensemble)
    build_s = time.perf_counter() - t0
    dm = xgb.DMatrix(rows)
    shap_explainer = shap.TreeExplainer(booster)

    def shap_values() -> np.ndarray:
        values = shap_explainer.shap_values(rows, check_additivity=False)
        return np.column_stack([values, np.full(len(rows), shap_explainer.expected_value)])

    runs = {
        "scoring_core (1 thread)": lambda: ours(rows, parallel=False)[:, 0],
        "xgboost pred_contribs (nthread=1)": lambda: booster.predict(dm, pred_contribs=True),
        "shap TreeExplainer": shap_values,
    }
    timed = {name: best_seconds(fn, args.repeats) for name, fn in runs.items()}
    timed["scoring_core (numba threads)"] = best_seconds(lambda: ours(rows, parallel=True)[:, 0], args.repeats)
    # Online explanations: one row per call (ours takes its one-row layout below 8 rows).
    single = rows[:20]
    one_by_one = {
        "scoring_core (1 thread, one row per call)": lambda: np.concatenate(
            [ours(single[i:i + 1], parallel=False)[:, 0] for i in range(len(single))]),
        "xgboost pred_contribs (nthread=1, one row per call)": lambda: np.concatenate(
            [booster.predict(xgb.DMatrix(single[i:i + 1]), pred_contribs=True) for i in range(len(single))]),
    }
    single_timed = {name: best_seconds(fn, args.repeats) for name, fn in one_by_one.items()}
    results, lines = [], []
    for group, reference_name, n_rows in ((timed, "xgboost pred_contribs (nthread=1)", len(rows)), (
            single_timed, "xgboost pred_contribs (nthread=1, one row per call)", len(single))):
        reference = group[reference_name]
        for name, (seconds, values) in group.items():
            entry = _entry(name, n_rows, seconds, values, reference)
            results.append(entry)
            lines.append([name, entry["ms_per_row"], entry["rows_per_s"], entry["speedup_vs_xgboost_1_thread"],
                          f"{entry['max_abs_diff_vs_xgboost']:.1e}"])
    payload = {

        "machine": machine(),
        "model": {"library": "xgboost", "version": xgb.__version__, "trees": 500, "max_depth": 8,
                  "features": N_FEATURES, "shap_version": shap.__version__,
                  "path_elements": int(ours.paths.elem_feature.size), "paths_build_s": build_s},
        "results": results,
    }
    path = write("treeshap", payload)
    print(table(["explainer", "ms/row", "rows/s", "x xgboost 1T", "max |diff|"], lines))
    print(f"paths built in {build_s:.2f} s; results in {path}")


if __name__ == "__main__":
    main()
