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
