"""A user component as a customer would write one: a logistic scorer whose weights
ship as a data file in the bundle, with a sibling module and a stage function."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import linear_math


class Scorer:
    thread_safe = True

    def load(self, bundle_dir: Path) -> None:
        spec = json.loads((Path(bundle_dir) / "data" / "weights.json").read_text())
        self.features = spec["features"]
        self.weights = np.asarray(spec["weights"], dtype=np.float64)
        self.bias = float(spec["bias"])
        self.closed = False

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        X = np.column_stack([batch.column(n).to_numpy(zero_copy_only=False) for n in self.features])
        scores = linear_math.sigmoid(X.astype(np.float64) @ self.weights + self.bias)
        return pa.record_batch([pa.array(scores)], names=["score"])

    def close(self) -> None:
        self.closed = True


def column_means(inputs: dict, *, columns: list[str]) -> dict:
    """A custom stage: the means of some columns of a Parquet file."""
    table = pq.read_table(inputs["data"], columns=columns)
    return {name: float(np.mean(table.column(name).to_numpy())) for name in columns}
