"""The CLI where a new user meets it (issue 14): a taken port, a CSV where Parquet belongs, output
piped into `head`, Ctrl-C during a Spark job, a coordinator that is not there, a bad token: each a
one-line message with the gRPC code and what to do, never a traceback; and `--output json` on
every command that prints data.

A subprocess where what matters is the process's own (its stderr at the file descriptor, where
gRPC's C core writes; its exit status; a pipe; a signal), else milepost.cli.main in this process."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from milepost.cli import build_parser, main, output
from milepost.core.settings import read_settings
from tests.conftest import ROOT, milepost_cmd

# The commands without --output json, and why none is needed.
PRINTS_NO_DATA = {
    "up": "a server in the foreground: its addresses go to DATA_DIR/up.json, its log to stderr",
    "coordinator": "a server in the foreground (DATA_DIR/coordinator.json)",
    "agent": "a server in the foreground (DATA_DIR/agent.json)",
    "certs init": "prints the paths of the files it wrote, one a line",
    "audit export": "its output is the entries themselves, as --format jsonl (default) or csv; --output names a file",
    "score-dataset": "writes a dataset (--output DIR, as the README has it) and prints one summary line",
}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(("flag", "server"), [
    ("--port", "gRPC"), ("--agent-port", "gRPC"), ("--metrics-port", "metrics"), ("--console-port", "console"),
])
def test_a_taken_port_is_one_line_naming_it_and_its_flag(flag: str, server: str, held_port: int, tmp_path: Path) -> None:
    ports = {"--port": "0", "--agent-port": "0", "--metrics-port": "-1", "--console-port": "0", flag: str(held_port)}
    done = subprocess.run(milepost_cmd("up", "--data-dir", str(tmp_path / "up"), *[x for kv in ports.items() for x in kv]),
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    last = done.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"error: FAILED_PRECONDITION: cannot listen on 127.0.0.1:{held_port} for the {server} "
                           f"server ({flag}"), done.stderr
    assert last.endswith("address already in use; another process holds it: stop that one, or choose another port "
                         "(0 picks a free one)"), done.stderr
    # Nothing else of it: no traceback, and not the line gRPC's C core logs when it cannot bind.
    assert "Traceback" not in done.stderr and "add_port" not in done.stderr and "Failed to bind" not in done.stderr


def test_output_cut_short_by_its_reader_ends_quietly(cluster) -> None:
    """`milepost status | head -1`, with the reader gone before the first byte: exit 141, as a
    Unix tool that SIGPIPE ended, and nothing on stderr."""
    process = subprocess.Popen(milepost_cmd("status", "--coordinator", cluster.coordinator.address),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the command writes a byte
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141, err
    assert err == ""


def test_a_csv_given_to_score_dataset_is_the_callers_mistake(tmp_path: Path, capsys) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("f0,f1\n1,2\n")
    # Refused before the coordinator is asked for the model: none listens at port 1.
    assert main(["score-dataset", "churn", "--input", str(rows), "--output", str(tmp_path / "out"),
                 "--coordinator", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == (
        f"error: INVALID_ARGUMENT: score-dataset reads Parquet, and --input {rows} is not Parquet (Parquet magic bytes "
        "not found in footer); use `milepost score ENDPOINT --input FILE` for a CSV or JSON file, or convert it\n")


def test_no_coordinator_and_a_bad_token_say_what_to_do(cluster, capsys) -> None:
    assert main(["status", "--coordinator", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: failed to connect") and err.count("\n") == 1
    assert err.endswith("; is the coordinator at 127.0.0.1:1 running (`milepost up`)? --coordinator or "
                        "$MILEPOST_COORDINATOR says where it is\n")

    assert main(["status", "--coordinator", cluster.coordinator.address, "--token", "not-a-token"]) == 1
    assert capsys.readouterr().err == (
        "error: UNAUTHENTICATED: the token is unknown, expired or revoked; give a valid token with --token or "
        "$MILEPOST_TOKEN (`milepost tokens create`, or the admin.token of `milepost up`)\n")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command line words, parser) of every command that runs (has a ``func``)."""
    if parser.get_default("func") is not None:
        yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _takes_json(parser: argparse.ArgumentParser) -> bool:
    flag = next((a for a in parser._actions if "--output" in a.option_strings), None)
    if flag is None:
        return False
    if flag.choices is not None:
        return "json" in flag.choices
    return flag.type is not None and flag.type("json") == "json"  # --output table|json|FILE


def test_every_command_that_prints_data_takes_output_json() -> None:
    commands = dict(_commands(build_parser(read_settings())))
    assert set(PRINTS_NO_DATA) <= set(commands)
    without = sorted(name for name, parser in commands.items() if not _takes_json(parser))
    assert without == sorted(PRINTS_NO_DATA)


def _json(capsys, *argv: str, status: int = 0):
    assert main([*argv, "--output", "json"]) == status, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_commands_that_change_things_print_json_too(cluster, logistic_model, tmp_path: Path, capsys) -> None:
    _, bundle_dir, _, rows = logistic_model
    c = ["--coordinator", cluster.coordinator.address]
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        client.deploy("api", "churn")
        created = _json(capsys, "tokens", "create", "ci", "--role", "viewer", *c)
        assert created["info"]["name"] == "ci" and created["token"]
        assert [t.token_id for t in client.list_tokens() if t.name == "ci"] == [created["info"]["token_id"]]
        assert _json(capsys, "tokens", "revoke", "ci", *c)["token_id"] == created["info"]["token_id"]
        verdict = _json(capsys, "audit", "verify", *c)
        assert verdict["ok"] is True and int(verdict["entries"]) >= 3

        source = tmp_path / "rows.parquet"
        pq.write_table(pa.table({f"f{j}": rows[:4, j] for j in range(rows.shape[1])}), source)
        scored = _json(capsys, "score", "api", "--input", str(source), *c)
        expected = client.infer("api", pa.table({f"f{j}": rows[:4, j] for j in range(rows.shape[1])}))
        np.testing.assert_allclose([[r[k] for k in sorted(r) if k.startswith("probabilities")] for r in scored],
                                   np.asarray(expected.column("probabilities").to_pylist()), rtol=1e-6)
        written = tmp_path / "scored.csv"  # --output FILE still writes a file, as the README shows
        assert main(["score", "api", "--input", str(source), "--output", str(written), *c]) == 0
        assert capsys.readouterr().out.strip() == f"scored 4 rows -> {written}" and written.is_file()

        assert _json(capsys, "undeploy", "api", *c) == {"endpoint": "api", "undeployed": True}
        assert [e.name for e in client.endpoints()] == []


@pytest.mark.slow
def test_ctrl_c_during_a_spark_job_is_one_word_and_130(cluster, logistic_model, tmp_path: Path) -> None:
    """Ctrl-C as a terminal sends it (to the whole process group) while Spark scores: the job is
    cancelled, Spark stopped, and stderr says `interrupted`, with no py4j traceback."""
    _, bundle_dir, _, rows = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
    source, out = tmp_path / "rows.parquet", tmp_path / "scored"
    many = np.tile(rows, (2400, 1))  # 240,000 rows, scored a row a call: a minute of work
    pq.write_table(pa.table({f"f{j}": many[:, j] for j in range(many.shape[1])}), source, row_group_size=20_000)
    process = subprocess.Popen(
        milepost_cmd("score-dataset", "churn", "--input", str(source), "--output", str(out), "--engine", "spark",
                     "--master", "local[2]", "--batch-rows", "1", "--coordinator", cluster.coordinator.address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
        # As a shell starts a command in the foreground, whatever this test's runner ignores.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    err = []
    try:
        for line in process.stderr:  # until the job reports its first progress
            err.append(line)
            if "rows (" in line:
                break
        time.sleep(2.0)  # and well inside it
        interrupted = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        err.append(process.stderr.read())
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(err)
    assert status == 130, text
    assert "Traceback" not in text and "py4j" not in text, text
    assert text.rstrip().splitlines()[-1] == "interrupted"
    assert "(100%)" not in text and not (out / "_SUCCESS").exists()  # cancelled, not finished
    assert time.monotonic() - interrupted < 30, text


def test_score_output_names_a_format_or_a_file_it_can_write() -> None:
    parse = output.format_or_file((".parquet", ".csv"))
    assert [parse("json"), parse("table"), parse("out.CSV")] == ["json", "table", "out.CSV"]
    with pytest.raises(argparse.ArgumentTypeError, match="expected table, json, or a file ending .parquet, .csv"):
        parse("scores")
