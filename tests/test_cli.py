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


def test_push_deploy_score_files_and_status(up, logistic_model, tmp_path) -> None:
    estimator, bundle_dir, version, rows = logistic_model
    c = ("--coordinator", up.coordinator)
    assert cli("models", "push", str(bundle_dir), "--name", "lr", *c).stdout.strip() == f"lr:1 sha256:{version}"
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


def test_push_xgboost_json_and_lightgbm_text_then_score(up, tmp_path) -> None:
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


# ---- settings: flags > environment > the --config file > defaults ----
def test_settings_come_from_flags_then_the_environment_then_the_config_file(tmp_path, monkeypatch) -> None:
    from milepost.cli import build_parser
    from milepost.core.settings import read_settings

    config = tmp_path / "milepost.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\nagent_port = 9001\ncoordinator = "from-file:1"\n'
                      'stage_entries = ["a.b:", "c:"]\n')
    monkeypatch.setenv("MILEPOST_COORDINATOR", "from-env:2")
    settings = read_settings(config)
    assert (settings.agent_port, settings.coordinator, settings.stage_entries) == (9001, "from-env:2", ("a.b:", "c:"))
    assert read_settings(config, coordinator="explicit:3").coordinator == "explicit:3"
    args = build_parser(settings).parse_args(["agent"])
    assert (args.port, args.coordinator, args.data_dir) == (9001, "from-env:2", str(tmp_path / "home" / "agent"))
    assert build_parser(settings).parse_args(["agent", "--port", "7"]).port == 7
    monkeypatch.setenv("MILEPOST_CONFIG", str(config))
    monkeypatch.setenv("MILEPOST_STAGE_ENTRIES", "x.y:, z:")
    assert read_settings().agent_port == 9001 and read_settings().stage_entries == ("x.y:", "z:")


def test_a_bad_setting_stops_the_command_naming_the_variable(tmp_path, monkeypatch, capsys) -> None:
    from milepost.cli import main
    from milepost.core.settings import get_settings

    monkeypatch.setenv("MILEPOST_RAY_LOCAL_CPUS", "many")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "MILEPOST_RAY_LOCAL_CPUS" in err
    monkeypatch.delenv("MILEPOST_RAY_LOCAL_CPUS")
    (tmp_path / "bad.toml").write_text("no_such_setting = 1\n")
    assert main(["--config", str(tmp_path / "bad.toml"), "status"]) == 1
    assert "unknown setting 'no_such_setting'" in capsys.readouterr().err
    assert get_settings().coordinator == "127.0.0.1:7070"  # main left no settings behind for the rest of the process


def test_the_readme_lists_every_setting_with_its_default() -> None:
    from pathlib import Path

    from milepost.core.settings import Settings, env_var

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `") for line in section.splitlines()
            if line.startswith("| `MILEPOST_")}
    assert set(rows) == {env_var(name) for name in Settings.model_fields}
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and value != "":
            assert rows[env_var(name)] == str(value), name
