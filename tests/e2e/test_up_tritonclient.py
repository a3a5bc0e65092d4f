"""End to end: `milepost up`, push, deploy, then a stock tritonclient scores it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import milepost_cmd

PROBE = Path(__file__).with_name("tritonclient_probe.py")


def run_cli(*args: str) -> str:
    done = subprocess.run(milepost_cmd(*args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tritonclient_scores_like_sklearn(up, logistic_model, tmp_path: Path) -> None:
    estimator, bundle_dir, version, rows = logistic_model
    pushed = run_cli("models", "push", str(bundle_dir), "--name", "churn", "--coordinator", up.coordinator)
    assert pushed.strip() == f"churn:1 sha256:{version}"
    deployed = run_cli("deploy", "churn-api", "--model", "churn", "--coordinator", up.coordinator)
    assert "READY" in deployed

    rows_path = tmp_path / "rows.npy"
    np.save(rows_path, rows)
    done = subprocess.run(
        [sys.executable, str(PROBE), up.agent, "churn-api", str(rows_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    expected = estimator.predict_proba(rows)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["unknown_model_ready"] is False
    assert seen["server_metadata"]["name"] == "milepost"
    assert seen["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", str(rows.shape[1])]}]
    assert seen["metadata"]["versions"] == ["1"]  # the registry's number, as perf_analyzer reads it
    assert seen["config"]["config"]["input"][0]["dims"] == ["-1", str(rows.shape[1])]
    np.testing.assert_allclose(seen["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(seen["probabilities_named"], expected, atol=1e-5)

    assert seen["err_wrong_width"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input" in seen["err_wrong_width"]["message"]
    assert seen["err_unknown_input"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "bogus" in seen["err_unknown_input"]["message"]
    assert seen["err_missing_input"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "missing" in seen["err_missing_input"]["message"]
    assert seen["err_unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert seen["err_unknown_model_metadata"]["status"] == "StatusCode.NOT_FOUND"
    assert seen["err_oversized"]["status"] == "StatusCode.RESOURCE_EXHAUSTED"

    stats = seen["statistics"]["model_stats"][0]
    assert stats["name"] == "churn-api"
    assert int(stats["inference_count"]) == 2 * len(rows)  # the two good calls before the stats call
    assert int(stats["inference_stats"]["fail"]["count"]) == 3  # wrong width, unknown input, missing input
    np.testing.assert_allclose(seen["after_errors"], expected, atol=1e-5)
    assert up.process.poll() is None, "the agent must survive bad requests"
