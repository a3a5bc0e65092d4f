"""The decision log's files on disk: rotation by size and by age, a new file when the schema changes,
retention, and a reader seeing every decision offered before it (agent.decision_log, on a real
directory with real Arrow batches; no agent needed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.dataplane import InferenceRequest, InferenceResponse
from agent.decision_log import DecisionLog, DecisionLogSettings, parse_id
from agent.routing.route_table import Route
from milepost.core.errors import InvalidArgument

ROUTE = Route("churn", None, "", {}, pushed=True, decision_sample_rate=1.0)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Callable[..., DecisionLog]]:
    logs: list[DecisionLog] = []

    def make(**settings: float) -> DecisionLog:
        log = DecisionLog(tmp_path / "decisions", lambda: "agent-1", lambda route, dep: ("churn", "3", "ab" * 32),
                          DecisionLogSettings(**settings))  # type: ignore[arg-type]
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


def offer(log: DecisionLog, i: int, rows: int = 1, outputs: str = "score", route: Route = ROUTE) -> None:
    inputs = pa.record_batch([pa.array(np.full(rows, i, np.float32)), pa.array([f"c{i}"] * rows)], names=["x", "city"])
    answer = pa.record_batch([pa.array(np.full(rows, i / 10))], names=[outputs])
    log.offer(route, InferenceRequest(ROUTE.endpoint, lambda s: inputs, request_id=f"r{i}", size_bytes=64),
              inputs, InferenceResponse(answer, "3", ("primary",), ("dep-1",)))


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
