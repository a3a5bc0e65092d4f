"""`--output json` on the commands that print data: what a program reads is the
coordinator's answer, the same values the Python client returns."""

from __future__ import annotations

import json

from milepost.cli import main


def _json(capsys, *argv: str):
    assert main([*argv, "--output", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_data_commands_print_json(cluster, logistic_model, capsys) -> None:
    _, bundle_dir, version, rows = logistic_model
    c = ["--coordinator", cluster.coordinator.address]
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        deployed = _json(capsys, "deploy", "api", "--model", "churn:1", *c)
        assert deployed["name"] == "api" and deployed["deployments"][0]["state"] == "READY"
        assert deployed["deployments"][0]["number"] == "1"  # int64 fields are strings in proto JSON
        client.infer("api", rows[:3])

        (model,) = _json(capsys, "models", "list", "churn", *c)
        assert (model["name"], model["version"], model["stage"]) == ("churn", version, "registered")
        assert [e["name"] for e in _json(capsys, "endpoints", *c)] == [e.name for e in client.endpoints()]
        status = _json(capsys, "status", *c)
        assert [a["info"]["agent_id"] for a in status["agents"]] == ["a1"]
        split = _json(capsys, "split", "api", "--arm", "a=churn:1:1", *c)
        assert split["policy"] == "split" and [a["name"] for a in split["routing"]["arms"]] == ["a"]
        report = _json(capsys, "report", "api", *c)
        assert report["endpoint"]["name"] == "api" and [a["arm"] for a in report["arms"]] == ["a"]
        kinds = [e["kind"] for e in _json(capsys, "events", "api", *c)]
        assert kinds == [e.kind for e in client.events("api")] and "deploy" in kinds
        assert _json(capsys, "runs", *c) == []
        assert {t["name"] for t in _json(capsys, "tokens", "list", *c)} >= {"admin"}
        shown = _json(capsys, "models", "show", "churn:1", *c)
        assert shown["model"]["number"] == "1" and shown["placements"][0]["endpoint"] == "api"

    # The table stays the default.
    assert main(["models", "list", "churn", *c]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["NAME", "NUMBER"]


def test_deploy_says_when_no_agent_can_take_it(cluster, logistic_model, capsys) -> None:
    _, bundle_dir, _, _ = logistic_model
    c = ["--coordinator", cluster.coordinator.address]
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
    assert main(["deploy", "big", "--model", "churn", "--cpu", "4096", *c]) == 1
    captured = capsys.readouterr()
    assert "PENDING" in captured.out
    assert "FAILED_PRECONDITION" in captured.err and "is not serving" in captured.err and "CPU" in captured.err
    assert main(["deploy", "big2", "--model", "churn", "--cpu", "4096", "--no-wait", *c]) == 0
    assert "PENDING" in capsys.readouterr().out


def test_an_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path) -> None:
    missing = str(tmp_path / "nope")
    assert main(["models", "push", missing, "--name", "m", "--coordinator", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: NOT_FOUND: no such file or directory: {missing}\n"
    # A bug cannot be caused for real on purpose: a command that raises stands in for one.
    from milepost.cli import models

    def broken(args):
        raise KeyError("deployments")

    monkeypatch.setattr(models, "cmd_endpoints", broken)
    assert main(["endpoints", "--coordinator", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INTERNAL: KeyError" in err and "--debug" in err and "Traceback" not in err
    assert main(["endpoints", "--coordinator", "127.0.0.1:1", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: INTERNAL")


def test_up_takes_the_agent_ttl_and_the_address_to_advertise(tmp_path, capsys) -> None:
    import socket
    import subprocess

    from tests.conftest import ROOT, milepost_cmd, wait_for_file

    with socket.socket() as probe:  # a free port for the agent, so that the advertised address can name it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "up"
    process = subprocess.Popen(
        milepost_cmd("up", "--data-dir", str(data), "--port", "0", "--agent-port", str(port), "--metrics-port", "-1",
                     "--agent-ttl", "2.5", "--advertise", f"localhost:{port}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        state = wait_for_file(data / "up.json", process)
        token = (data / "admin.token").read_text().strip()
        status = _json(capsys, "status", "--coordinator", state["coordinator"], "--token", token)
        assert [a["info"]["address"] for a in status["agents"]] == [f"localhost:{port}"]
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_push_shows_its_progress_with_rate_and_time_left(cluster, logistic_model, capsys, monkeypatch) -> None:
    from milepost.cli import models

    _, bundle_dir, version, _ = logistic_model
    monkeypatch.setattr(models, "PROGRESS_FROM_BYTES", 0)  # this bundle is small; a large one shows the same
    assert main(["models", "push", str(bundle_dir), "--name", "big", "--coordinator", cluster.coordinator.address]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"big:1 sha256:{version}"
    lines = captured.err.splitlines()
    assert lines and "(100%)" in lines[-1] and "MiB" in lines[-1] and "/s" in lines[-1]


def test_progress_lines_say_rate_and_time_left() -> None:
    import io

    from milepost.cli.progress import ProgressBar

    bar = ProgressBar(1000, io.StringIO(), unit="rows")
    bar.started -= 2.0  # two seconds in (the clock is the bar's own start time)
    line = bar.line(250)
    assert "250/1,000 rows (25%)" in line and "125/s" in line and "6 s left" in line


def test_tables_fit_the_terminal_without_cutting_anything() -> None:
    import re

    from milepost.tables import _fitted, plain

    digest = "sha256:" + "ab12" * 16
    drawn = re.sub(r"\x1b\[[0-9;]*m", "", _fitted(["NAME", "DIGEST", "MESSAGE"],
                                                  [["churn", digest, "placed on a1: 2 replicas"]], 40))
    assert all(len(line) <= 40 for line in drawn.splitlines())
    alone = re.sub(r"\x1b\[[0-9;]*m", "", _fitted(["DIGEST"], [[digest]], 30))
    assert digest in "".join(alone.split()[2:])  # folded over lines, never cut (after the header and rule)
    assert plain(["A", "B"], [["x", 1]]).splitlines() == ["A  B", "-  -", "x  1"]  # pipes get plain columns


def test_a_large_file_is_scored_in_requests_with_progress(cluster, logistic_model, tmp_path, capsys, monkeypatch) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from milepost.cli import models

    estimator, bundle_dir, _, rows = logistic_model
    c = ["--coordinator", cluster.coordinator.address]
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("api", "churn")
    source = tmp_path / "rows.parquet"
    table = pa.table({f"f{j}": rows[:, j] for j in range(rows.shape[1])})  # the compiled model's input names
    pq.write_table(table, source)
    monkeypatch.setattr(models, "SCORE_REQUEST_BYTES", 1024)  # so that this small file takes several requests
    out = tmp_path / "scored.parquet"
    assert main(["score", "api", "--input", str(source), "--output", str(out), *c]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"scored {len(rows)} rows -> {out}"
    assert f"{len(rows)}/{len(rows)} rows (100%)" in captured.err.splitlines()[-1]
    scored = np.asarray(pq.read_table(out).column("probabilities").to_pylist())
    np.testing.assert_allclose(scored, estimator.predict_proba(rows), rtol=1e-5, atol=1e-6)


def test_registry_changes_print_json_too(cluster, logistic_model, capsys) -> None:
    _, bundle_dir, version, _ = logistic_model
    c = ["--coordinator", cluster.coordinator.address]
    pushed = _json(capsys, "models", "push", str(bundle_dir), "--name", "m", *c)
    assert (pushed["number"], pushed["version"], pushed["stage"]) == ("1", version, "registered")
    assert _json(capsys, "models", "alias", "m", "prod", "1", *c)["aliases"] == ["prod"]
    assert _json(capsys, "models", "unalias", "m", "prod", *c).get("aliases", []) == []
    assert _json(capsys, "models", "retire", "m:1", "--note", "old", *c)["stage"] == "retired"
    assert _json(capsys, "models", "delete", "m:1", *c)["version"] == version
