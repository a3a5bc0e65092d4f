"""Writes the example pipeline's data: a training set and a set to score, as Parquet.

    python examples/churn_pipeline/make_data.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = ["tenure", "monthly_spend", "support_calls", "discount", "usage_trend", "late_payments"]


def make(out: Path, rows: int = 20_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
    logit = -0.8 * X[:, 0] + 0.6 * X[:, 2] + 0.9 * X[:, 5] - 0.4 * X[:, 4] + 0.3 * X[:, 1] * X[:, 2]
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    out.mkdir(parents=True, exist_ok=True)
    cut = rows // 2
    columns = {name: X[:, j] for j, name in enumerate(FEATURES)}
    pq.write_table(pa.table({**{k: v[:cut] for k, v in columns.items()}, "churned": churned[:cut]}), out / "train.parquet")
    ids = pa.array([f"customer-{i}" for i in range(cut, rows)])
    pq.write_table(pa.table({"customer_id": ids, **{k: v[cut:] for k, v in columns.items()}}), out / "score.parquet")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
