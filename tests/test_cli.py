"""The CLI as a user runs it, against a real `milepost up` process."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tests.conftest import milepost_cmd


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(milepost_cmd(*args), capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_push_deploy_score_files_and_status(up, logistic_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    estimator, bundle_dir, version, rows = logistic_model
    c = ("--coordinator", up.coordinator)
    assert cli("models", "push", str(bundle_dir), "--name", "lr", *c).stdout.strip() == f"lr:{version}"
    listing = cli("models", *c).stdout
    assert "lr" in listing and version[:12] in listing
    assert "READY" in cli("deploy", "lr-api", "--model", f"lr:{version[:8]}", *c).stdout

    table = pa.table({f"f{j}": rows[:, j] for j in range(rows.shape[1])})
    expected = estimator.predict_proba(rows)
    pq.write_table(table, tmp_path / "in.parquet")
    pa_csv.write_csv(table, tmp_path / "in.csv")
    (tmp_path / "in.json").write_text(json.dumps(table.to_pylist()))
    for name in ("in.parquet", "in.csv", "in.json"):
        out = tmp_path / f"out-{name}.parquet"
        cli("score", "lr-api", "--input", str(tmp_path / name), "--output", str(out), *c)
        got = np.stack(pq.read_table(out).column("probabilities").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    cli("score", "lr-api", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), *c)
    scored = pa_csv.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(scored.column("probabilities_1").to_numpy(), expected[:, 1], atol=1e-5)

    status = cli("status", *c).stdout
    assert "local" in status and "ALIVE" in status and "lr-api" in status and "native" in status
    assert "lr-api" in cli("endpoints", *c).stdout

    missing = cli("score", "nope", "--input", str(tmp_path / "in.csv"), *c, ok=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    bad = cli("deploy", "x", "--model", "ghost", *c, ok=False)
    assert bad.returncode == 1 and "ghost" in bad.stderr
    cli("undeploy", "lr-api", *c)
    assert "lr-api" not in cli("endpoints", *c).stdout
    assert up.stop() == 0
    assert "stopped" in up.process.stdout.read()


def test_push_xgboost_json_and_lightgbm_text_then_score(up, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import lightgbm as lgb
    import xgboost as xgb

    rng = np.random.default_rng(7)
    X = rng.normal(size=(1500, 6)).astype(np.float32)
    X[::9, 2] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 2]) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1}, xgb.DMatrix(X, y), 30)
    booster.save_model(str(tmp_path / "model.json"))
    gbm = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1, "num_threads": 1},
                    lgb.Dataset(X, X[:, 1] * 3 + y), 30)
    gbm.save_model(str(tmp_path / "model.txt"))
    c = ("--coordinator", up.coordinator)
    assert cli("models", "push", str(tmp_path / "model.json"), "--name", "xgb", *c).stdout.startswith("xgb:")
    assert cli("models", "push", str(tmp_path / "model.txt"), "--name", "lgbm", *c).stdout.startswith("lgbm:")
    cli("deploy", "xgb-api", "--model", "xgb", *c)
    cli("deploy", "lgbm-api", "--model", "lgbm", *c)
    # Each model keeps its own feature names: XGBoost's f0.., LightGBM's Column_0..
    pq.write_table(pa.table({f"f{j}": X[:200, j] for j in range(6)}), tmp_path / "x_in.parquet")
    pq.write_table(pa.table({f"Column_{j}": X[:200, j] for j in range(6)}), tmp_path / "l_in.parquet")
    cli("score", "xgb-api", "--input", str(tmp_path / "x_in.parquet"), "--output", str(tmp_path / "x.parquet"), *c)
    cli("score", "lgbm-api", "--input", str(tmp_path / "l_in.parquet"), "--output", str(tmp_path / "l.parquet"), *c)
    got = np.stack(pq.read_table(tmp_path / "x.parquet").column("probabilities").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got[:, 1], booster.predict(xgb.DMatrix(X[:200])), atol=1e-5)
    np.testing.assert_allclose(pq.read_table(tmp_path / "l.parquet").column("prediction").to_numpy(),
                               gbm.predict(X[:200]), atol=1e-5)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a model")
    refused = cli("models", "push", str(bad), "--name", "bad", *c, ok=False)
    assert refused.returncode == 1 and "cannot compile" in refused.stderr
