"""Explanations end to end: a real `milepost up` (coordinator and agent), models pushed and
deployed as users do, ModelInfer with parameter ``explain`` and `milepost explain`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from milepost.core.errors import FailedPrecondition, InvalidArgument
from tests.conftest import milepost_cmd


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(milepost_cmd(*args), capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_explain_on_model_infer_and_the_cli_agree_with_xgboost(up, tmp_path) -> None:
    import xgboost as xgb
    from sklearn.neural_network import MLPRegressor

    import scoring_core
    from milepost.client import Client

    rng = np.random.default_rng(11)
    X = rng.normal(size=(800, 5)).astype(np.float32)
    X[::7, 3] = np.nan
    y = (X[:, 0] - 2 * X[:, 1] + np.nan_to_num(X[:, 3]) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1}, xgb.DMatrix(X, y), 25)
    booster.save_model(str(tmp_path / "model.json"))
    scoring_core.compile(MLPRegressor(hidden_layer_sizes=(3,), max_iter=20, random_state=0).fit(X[:, :2], y)
                         ).save(tmp_path / "mlp")
    c = ("--coordinator", up.coordinator)
    cli("models", "push", str(tmp_path / "model.json"), "--name", "xgb", *c)
    cli("models", "push", str(tmp_path / "mlp"), "--name", "mlp", *c)
    cli("deploy", "xgb-api", "--model", "xgb", *c)
    cli("deploy", "mlp-api", "--model", "mlp", *c)
    rows = X[:20]
    expected = booster.predict(xgb.DMatrix(rows), pred_contribs=True)

    with Client(up.coordinator) as client:
        table = pa.table({f"f{j}": rows[:, j] for j in range(5)})
        answer = client.infer("xgb-api", table, parameters={"explain": "true"})
        assert answer.column_names == ["probabilities", "contributions", "explanation"]
        assert answer.schema.field("contributions").type == pa.list_(pa.float64(), 6)
        got = np.stack(answer.column("contributions").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        summary = answer.column("explanation").to_pylist()[0].decode()  # a BYTES output
        assert summary.startswith("margin ") and "f" in summary
        plain = client.infer("xgb-api", table)  # no parameter, no extra outputs
        assert plain.column_names == ["probabilities"]
        with pytest.raises(InvalidArgument, match="'explain' must be true or false"):
            client.infer("xgb-api", table, parameters={"explain": "maybe"})
        with pytest.raises(FailedPrecondition, match="'mlp' cannot be explained"):
            client.infer("mlp-api", pa.table({"f0": rows[:, 0], "f1": rows[:, 1]}), parameters={"explain": "true"})

    (tmp_path / "rows.json").write_text(json.dumps(table.slice(0, 3).to_pylist()))
    printed = cli("explain", "xgb-api", "--input", str(tmp_path / "rows.json"), "--output", "json", "--top", "2", *c)
    docs = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [d["row"] for d in docs] == [0, 1, 2]
    for d, want in zip(docs, expected):
        (margin,) = d["margins"]
        assert margin["bias"] == pytest.approx(float(want[-1]), abs=1e-5)
        assert margin["margin"] == pytest.approx(float(want.sum()), abs=1e-5)
        top = int(np.argmax(np.abs(want[:-1])))
        assert margin["top"][0]["feature"] == f"f{top}"
        assert margin["top"][0]["contribution"] == pytest.approx(float(want[top]), abs=1e-5)
    shown = cli("explain", "xgb-api", "--input", str(tmp_path / "rows.json"), *c).stdout
    assert shown.startswith("row 0: margin ") and "CONTRIBUTION" in shown and "(bias)" in shown
    (tmp_path / "two.json").write_text(json.dumps([{"f0": 0.5, "f1": -1.0}]))
    refused = cli("explain", "mlp-api", "--input", str(tmp_path / "two.json"), *c, ok=False)
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
