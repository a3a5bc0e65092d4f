"""The decision log's files on disk: rotation by size and by age, a new file when the schema changes,
retention, a reader seeing every decision offered before it, and what a crash leaves: a writer
killed with SIGKILL in a child process, and files cut off in the middle of a write, recovered at
the next start (agent.decision_log, on a real directory with real Arrow batches; no agent needed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.dataplane import InferenceRequest, InferenceResponse
from agent.decision_log import UNREADABLE, DecisionLog, DecisionLogSettings, parse_id
from agent.routing.route_table import Route
from milepost.core.errors import InvalidArgument

ROUTE = Route("churn", None, "", {}, pushed=True, decision_sample_rate=1.0)
ROOT = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Callable[..., DecisionLog]]:
    logs: list[DecisionLog] = []

    def make(directory: Path | None = None, **settings: float) -> DecisionLog:
        log = open_log(directory or tmp_path / "decisions", **settings)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


def open_log(directory: Path, **settings: float) -> DecisionLog:
    return DecisionLog(directory, lambda: "agent-1", lambda route, dep: ("churn", "3", "ab" * 32),
                       DecisionLogSettings(**settings))  # type: ignore[arg-type]


def offer(log: DecisionLog, i: int, rows: int = 1, outputs: str = "score", route: Route = ROUTE,
          request_id: str = "") -> None:
    inputs = pa.record_batch([pa.array(np.full(rows, i, np.float32)), pa.array([f"c{i}"] * rows)], names=["x", "city"])
    answer = pa.record_batch([pa.array(np.full(rows, i / 10))], names=[outputs])
    request = InferenceRequest(route.endpoint, lambda s: inputs, request_id=request_id or f"r{i}", size_bytes=64)
    log.offer(route, request, inputs, InferenceResponse(answer, "3", ("primary",), ("dep-1",)))


def files(log: DecisionLog) -> list[Path]:
    return sorted((log.directory / "churn").glob("*.parquet"))


def test_a_file_rotates_when_it_passes_its_size(opened) -> None:
    log = opened(rotate_bytes=1)
    for i in range(3):
        offer(log, i)
        wait_for(lambda i=i: len(files(log)) == i + 1, f"file {i + 1}")
    rows = [pq.read_table(p)["request_id"].to_pylist() for p in files(log)]
    assert rows == [["r0"], ["r1"], ["r2"]]
    first, last, count = files(log)[0].stem.split("-")
    assert int(first) <= int(last) and count == "1"


def test_a_file_rotates_when_it_is_old_and_only_closed_files_are_parquet(opened) -> None:
    log = opened(rotate_s=0.2)
    offer(log, 1)
    wait_for(lambda: log.logged() == {"churn": 1}, "the write")
    assert files(log) == [] and len(list((log.directory / "churn").glob("*.part"))) == 1
    wait_for(lambda: len(files(log)) == 1, "rotation by age")
    assert list((log.directory / "churn").glob("*.part")) == []


def test_a_reader_sees_everything_offered_before_it_and_schemas_get_their_own_files(opened) -> None:
    log = opened()
    for i in range(5):
        offer(log, i, rows=2)
    offer(log, 9, outputs="other")
    tables = list(log.read("churn"))
    assert sum(t.num_rows for t in tables) == 11 and len(files(log)) == 2
    first = tables[0]
    assert first["row"].to_pylist()[:2] == [0, 1]
    assert first["inputs"].combine_chunks().field("city").to_pylist()[:2] == ["c0", "c0"]
    assert first.schema.field("outputs").type == pa.struct([pa.field("score", pa.float64())])
    assert first["model_digest"][0].as_py() == "sha256:" + "ab" * 32
    agent, at_ns = parse_id(first["decision_id"][0].as_py())
    assert agent == "agent-1" and at_ns == first["time"][0].value
    assert list(log.read("other-endpoint")) == []
    with pytest.raises(InvalidArgument, match="needs an endpoint or a decision_id"):
        list(log.read())


def test_files_past_retention_are_deleted(opened) -> None:
    log = opened(retention_s=0.4)
    offer(log, 1)
    log.flush()
    assert len(files(log)) == 1
    wait_for(lambda: files(log) == [], "retention")


def test_the_queue_is_bounded_by_bytes_too(opened) -> None:
    log = opened(queue_bytes=100)
    with log._files_lock:  # the writer stalls, as behind a long read
        for i in range(4):
            offer(log, i)  # 64 bytes each: the first fits, the second would pass 100
        assert log.dropped() == {"churn": 3}
    log.flush()
    assert log.logged() == {"churn": 1}


def test_a_route_that_does_not_sample_costs_nothing_and_logs_nothing(opened) -> None:
    log = opened()
    off = Route("churn", None, "", {}, pushed=True)
    for i in range(10):
        offer(log, i, route=off)
    log.flush()
    assert log.logged() == {} and files(log) == []


def test_a_write_the_disk_refuses_is_counted_as_dropped(opened) -> None:
    log = opened()
    log.directory.mkdir(parents=True)
    (log.directory / "churn").write_text("a file where the endpoint's folder should be")  # a real OSError, even as root
    offer(log, 1)
    wait_for(lambda: log.dropped() == {"churn": 1}, "the drop")
    assert log.logged() == {}
    (log.directory / "churn").unlink()
    offer(log, 2)
    log.flush()
    assert log.logged() == {"churn": 1} and len(files(log)) == 1


def parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.part"))


def decisions_named(part: Path) -> int:
    """The count of decisions an open file's name says it was given (FIRST_NS-TOKEN-DECISIONS.part)."""
    return int(part.stem.split("-")[2])


def cut_off_part(opened: Callable[..., DecisionLog], into: Path, route: Route = ROUTE, *, cut: bool = True) -> Path:
    """A ``.part`` file as a crash leaves it, in ``into``/ENDPOINT: two writes of 2 and 1 decisions
    whole, and a third's (1 decision) cut off in the middle (``cut``) or whole. It is copied from
    a live log's open file, so that it is the log's own format."""
    log = opened(log_dir := into.parent / f"{into.name}-{route.endpoint}-source")
    for i, (first, count) in enumerate(((0, 2), (2, 1), (3, 1))):
        for n in range(first, first + count):
            offer(log, n, route=route)
        wait_for(lambda i=i, n=first + count: log.logged() == {route.endpoint: n}, f"write {i + 1}")
    (open_file,) = parts(log_dir)
    assert decisions_named(open_file) == 4
    target = into / route.endpoint / open_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(open_file, target)
    if cut:
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size - 16)  # into the last write's body
    return target


CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.agent.test_decision_log_files import offer, open_log
log = open_log(Path(sys.argv[1]))
log.wait_recovered()
print("ready", flush=True)
i = 0
while True:  # until killed: each decision's request id says when it was offered
    offer(log, i, request_id=f"{i}-{time.time_ns()}")
    i += 1
    time.sleep(0.0005)
"""


def test_a_writer_killed_with_sigkill_loses_at_most_its_last_moments_and_counts_what_it_can(opened, tmp_path) -> None:
    directory = tmp_path / "decisions"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        wait_for(lambda: any(decisions_named(p) >= 300 for p in parts(directory)), "300 decisions written", 30)
        time.sleep(0.3)
    finally:
        killed_at = time.time_ns()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    (left,) = parts(directory)  # the open file: never closed, no Parquet footer would be there
    given = decisions_named(left)

    log = opened(directory)
    assert log.wait_recovered(30)
    assert parts(directory) == []
    assert (directory / "churn" / UNREADABLE).exists() == bool(log.dropped())  # kept aside when it was cut off
    table = pa.concat_tables(list(log.read("churn", limit=1 << 30)))
    offered = sorted((int(i), int(t)) for i, t in (r.split("-") for r in table["request_id"].to_pylist()))
    assert [i for i, _ in offered] == list(range(len(offered)))  # what the files hold: every decision up to one
    assert len(offered) + log.dropped().get("churn", 0) == given  # the rest of what they were given: counted
    assert killed_at - offered[-1][1] < 2e9  # the lost ones: those of the last moments (the queue, POLL_S)


def test_files_cut_off_by_a_crash_are_recovered_counted_and_kept_aside(opened, tmp_path) -> None:
    directory = tmp_path / "decisions"
    cut = cut_off_part(opened, directory)
    cut_off_part(opened, directory, Route("other", None, "", {}, pushed=True, decision_sample_rate=1.0), cut=False)
    old = directory / "legacy" / "00000000000000000001-abcdef.part"  # an older agent's open Parquet file
    old.parent.mkdir()
    old.write_bytes(b"PAR1" + b"\0" * 100)
    (directory / "churn" / "00000000000000000001-00000000000000000002-3.parquet.sealing").write_bytes(b"PAR1")

    log = opened(directory)
    assert log.wait_recovered(10)
    assert parts(directory) == [] and list(directory.glob("*/*.sealing")) == []
    assert log.dropped() == {"churn": 1, "legacy": 1}  # the cut-off write's one decision; an unknown number
    assert [p.name for p in (directory / "churn" / UNREADABLE).iterdir()] == [cut.name]
    assert [p.name for p in (directory / "legacy" / UNREADABLE).iterdir()] == [old.name]
    assert not (directory / "other" / UNREADABLE).exists()
    assert sorted(pa.concat_tables(list(log.read("churn")))["request_id"].to_pylist()) == ["r0", "r1", "r2"]
    assert sorted(pa.concat_tables(list(log.read("other")))["request_id"].to_pylist()) == ["r0", "r1", "r2", "r3"]
    assert list(log.read("legacy")) == []
