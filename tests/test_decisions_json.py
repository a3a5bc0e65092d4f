"""`milepost decisions --output json` writes strict JSON: a logged NaN or infinity (a missing
input, an overflowing output) is null, which every JSON parser reads; finite floats round-trip."""

from __future__ import annotations

import datetime
import json

import pyarrow as pa

from milepost.decisions import rows_as_json


def test_non_finite_values_are_null_and_floats_round_trip() -> None:
    table = pa.table({"time": [datetime.datetime(2026, 12, 7, 14, 0)], "x": [float("nan")], "y": [0.1 + 0.2],
                      "scores": [[1.0, float("inf"), float("-inf")]], "note": [None]})
    (row,) = rows_as_json(table)
    text = json.dumps(row, allow_nan=False)  # raises on NaN or Infinity
    assert json.loads(text) == {"time": "2026-12-07T14:00:00", "x": None, "y": 0.1 + 0.2,
                                "scores": [1.0, None, None], "note": None}
