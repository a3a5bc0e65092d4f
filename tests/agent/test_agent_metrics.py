"""Per-arm metrics: in AgentService.Status, in heartbeats, and on GET /metrics; heartbeats apply route tables."""

from __future__ import annotations

import math
import re
import urllib.request

import numpy as np
import pyarrow as pa
import pytest

from agent.prometheus import render
from agent.routing.arm_metrics import ArmMetricsBook, first_output_values
from agent.statistics import EndpointStatistics
from milepost.core.arm_counters import LATENCY_BOUNDS_MS
from milepost.v1 import agent_pb2, coordinator_pb2, routing_pb2
from tests.agent.mesh import arm, direct, infer, route
from tests.conftest import wait_until

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Samples(dict):
    """Samples by (name, labels); labels compare in any order, as Prometheus compares them
    (prometheus_client writes them sorted by name)."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__((key[0], tuple(sorted(key[1]))), value)

    def __getitem__(self, key):
        return super().__getitem__((key[0], tuple(sorted(key[1]))))

    def __contains__(self, key) -> bool:
        return super().__contains__((key[0], tuple(sorted(key[1]))))


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text format, strictly: every line a comment or a sample."""
    samples = Samples()
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, body, value = match.groups()
        labels = []
        if body:
            rest = LABEL.sub("", body).replace(",", "")
            assert rest == "", f"bad labels in {line!r}"
            labels = [(k, re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)) for k, v in LABEL.findall(body)]
        samples[(name, tuple(labels))] = float(value.replace("+Inf", "inf"))
    return samples


def test_metrics_endpoint_serves_prometheus_text_with_per_arm_counters(mesh) -> None:
    a1 = mesh.address("a1")
    mesh.set_routes(route("scraped", "split", [arm("a", "dep-a", weight=1), arm("b", "dep-b", weight=1)],
                          {"dep-a": [a1], "dep-b": [a1]}))
    stub = mesh.inference()
    served = {"a": 0, "b": 0}
    for i in range(40):
        served[infer(stub, "scraped", mesh.rows[:2], **{"milepost-key": f"m{i}"}).arm] += 1
    keyed = dict(served)
    answered_by_matrix = mesh.agents["a1"].dataplane.answered_by_matrix
    for _ in range(10):  # without a key: the matrix lane (agent.dataplane.serve_matrix) where it takes them
        served[infer(stub, "scraped", mesh.rows[:2]).arm] += 1
    direct(mesh, "dep-a", mesh.rows[:3])  # a deployment by id, as a remote member calls it: no arm
    port = mesh.agents["a1"].metrics_port
    assert port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        samples = parse(reply.read().decode())
    for name in ("a", "b"):
        labels = (("endpoint", "scraped"), ("arm", name))
        assert samples[("milepost_requests_total", labels)] == served[name]
        assert samples[("milepost_errors_total", labels)] == 0
        assert samples[("milepost_predictions_total", labels)] == 2 * served[name]
        assert samples[("milepost_request_latency_seconds_count", labels)] == served[name]
        assert samples[("milepost_request_latency_seconds_bucket", (*labels, ("le", "+Inf")))] == served[name]
        assert ("milepost_shadow_compared_total", labels) in samples
    assert samples[("milepost_endpoint_requests_total", (("endpoint", "scraped"), ("outcome", "success")))] == 50
    assert samples[("milepost_routes_generation", ())] == mesh.agents["a1"].router.generation
    # Triton's names: per arm, with the model and version its deployment serves, the requests and
    # where their time went; both lanes count alike (the matrix lane took some of the unkeyed ones).
    assert mesh.agents["a1"].dataplane.answered_by_matrix > answered_by_matrix and served != keyed
    hosted = {h.spec.deployment_id: h for h in mesh.agents["a1"].table.hosted()}
    stats = mesh.agents["a1"].dataplane.statistics("scraped")
    queued = 0.0
    for name, dep in (("a", "dep-a"), ("b", "dep-b")):
        labels = (("endpoint", "scraped"), ("model", hosted[dep].spec.model), ("version", hosted[dep].version),
                  ("arm", name))
        assert samples[("milepost_inference_request_success_total", labels)] == served[name]
        assert samples[("milepost_inference_request_failure_total", labels)] == 0
        assert samples[("milepost_inference_request_duration_us_total", labels)] > 0
        assert samples[("milepost_inference_count_total", labels)] == 2 * served[name]
        assert samples[("milepost_inference_exec_count_total", labels)] == served[name]
        queued += samples[("milepost_inference_queue_duration_us_total", labels)]
        for phase in ("input", "infer", "output"):
            assert samples[("milepost_inference_compute_duration_us_total", (*labels, ("phase", phase)))] >= 0
        assert samples[("milepost_inference_compute_duration_us_total", (*labels, ("phase", "infer")))] > 0
    # the arms' shares add up to the endpoint's totals (ModelStatistics), and no request is left out
    assert queued == pytest.approx(stats.queue.ns / 1000.0)  # one request at a time: none waits, so likely 0
    infer_us = [samples[("milepost_inference_compute_duration_us_total",
                         (("endpoint", "scraped"), ("model", hosted[dep].spec.model), ("version", hosted[dep].version),
                          ("arm", name), ("phase", "infer")))] for name, dep in (("a", "dep-a"), ("b", "dep-b"))]
    assert sum(infer_us) == pytest.approx(stats.compute_infer.ns / 1000.0)
    assert not [key for key in samples if key[0] == "milepost_inference_queue_duration_us_total"
                and dict(key[1])["endpoint"] == "scraped" and dict(key[1])["arm"] not in ("a", "b")]
    # the call by deployment id: arm "", the model and version of the one deployment loaded for its endpoint
    labels = (("endpoint", "direct-dep-a"), ("model", hosted["dep-a"].spec.model), ("version", hosted["dep-a"].version),
              ("arm", ""))
    assert samples[("milepost_inference_count_total", labels)] == 3
    assert samples[("milepost_inference_exec_count_total", labels)] == 1
    # Each arm's deployment batches: its queue now, and every engine call by rows (40 calls here, 2 rows each).
    calls = 0.0
    for dep in ("dep-a", "dep-b"):
        labels = (("endpoint", f"direct-{dep}"), ("deployment", dep))
        assert samples[("milepost_batcher_queue_rows", labels)] == 0
        assert samples[("milepost_batch_rows_bucket", (*labels, ("le", "1.0")))] == 0
        calls += samples[("milepost_batch_rows_bucket", (*labels, ("le", "2.0")))]
        assert samples[("milepost_batch_rows_count", labels)] == samples[("milepost_batch_rows_bucket", (*labels, ("le", "+Inf")))]
    assert calls >= 40
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in samples
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)


def test_rendering_escapes_labels_and_makes_cumulative_buckets() -> None:
    book = ArmMetricsBook()
    odd = 'we"ird\\end\npoint'
    batch = pa.RecordBatch.from_arrays([pa.array([0.5, 1.5, float("nan")])], names=["prediction"])
    book.record(odd, "a", 3.0, batch, failed=False)
    book.record(odd, "a", 7000.0, None, failed=True)
    text = render(book.snapshot(), {odd: EndpointStatistics()}, {odd: 2}, 7)
    samples = parse(text)
    labels = (("endpoint", odd), ("arm", "a"))
    assert samples[("milepost_requests_total", labels)] == 2
    assert samples[("milepost_errors_total", labels)] == 1
    assert samples[("milepost_predictions_total", labels)] == 2
    assert samples[("milepost_prediction_sum", labels)] == 2.0
    buckets = [samples[("milepost_request_latency_seconds_bucket", (*labels, ("le", le)))]
               for le in ["0.001", "0.002", "0.005", "0.01", "5.0", "+Inf"]]
    assert buckets == [0, 0, 1, 1, 1, 2]
    assert samples[("milepost_request_latency_seconds_sum", labels)] == pytest.approx(7.003)
    assert samples[("milepost_shadow_dropped_total", (("endpoint", odd),))] == 2


def test_arm_metrics_track_the_first_output() -> None:
    probabilities = pa.FixedSizeListArray.from_arrays(pa.array([0.9, 0.1, 0.3, 0.7]), 2)
    batch = pa.RecordBatch.from_arrays([probabilities], names=["probabilities"])
    np.testing.assert_array_equal(first_output_values(batch), [0.1, 0.7])
    book = ArmMetricsBook()
    book.record("e", "a", 0.5, batch, failed=False)
    (m,) = book.snapshot()
    assert (m.requests, m.predictions) == (1, 2)
    assert m.prediction_sum == pytest.approx(0.8) and m.prediction_sum_squares == pytest.approx(0.5)
    assert len(m.latency_buckets) == len(LATENCY_BOUNDS_MS) and m.latency_buckets[0] == 1
    assert math.isinf(LATENCY_BOUNDS_MS[-1])


def test_status_and_heartbeats_carry_generation_metrics_and_uptime(mesh) -> None:
    a1 = mesh.address("a1")
    table = mesh.set_routes(route("reported", "single", [arm("only", "dep-a")], {"dep-a": [a1]}))
    infer(mesh.inference(), "reported", mesh.rows[:3])
    status = mesh.control().Status(agent_pb2.AgentStatusRequest(), timeout=5)
    assert status.routes_generation == table.generation
    assert any(m.endpoint == "reported" and m.arm == "only" and m.requests == 1 for m in status.metrics)

    def reported() -> coordinator_pb2.HeartbeatRequest | None:
        with mesh.coordinator.lock:
            beats = [h for h in mesh.coordinator.heartbeats if h.agent_id == "a1"]
        last = beats[-1] if beats else None
        if last and last.routes_generation == table.generation and any(m.endpoint == "reported" for m in last.metrics):
            return last
        return None

    beat = wait_until(reported, timeout=10)
    assert beat.uptime_s > 0


def test_a_heartbeat_reply_applies_a_newer_table_and_after_registering_any_table(mesh) -> None:
    agent = mesh.agents["a2"]
    held = agent.router.generation
    newer = routing_pb2.RouteTable(generation=held + 5, routes=[route("hb", "single", [arm("x", "dep-remote")], {})])
    assert agent.registration.apply_reply(coordinator_pb2.HeartbeatResponse(known=True, routes=newer))
    assert agent.router.generation == held + 5 and agent.router.has_route("hb")
    assert not agent.registration.apply_reply(coordinator_pb2.HeartbeatResponse(known=True))
    older = routing_pb2.RouteTable(generation=held + 1)
    assert not agent.registration.apply_reply(coordinator_pb2.HeartbeatResponse(known=True, routes=older))
    assert agent.router.has_route("hb")
    agent.router.registered()  # a coordinator with a fresh store counts from 1 again
    assert agent.registration.apply_reply(coordinator_pb2.HeartbeatResponse(known=True, routes=older))
    assert agent.router.generation == held + 1 and not agent.router.has_route("hb")


def test_the_heartbeat_loop_fetches_a_stale_table_from_the_coordinator(mesh) -> None:
    agent = mesh.agents["a2"]
    table = routing_pb2.RouteTable(
        generation=agent.router.generation + 10,
        routes=[route("from-heartbeat", "single", [arm("x", "dep-remote")], {"dep-remote": [mesh.address("a2")]})],
    )
    mesh.coordinator.table = table
    try:
        wait_until(lambda: agent.router.generation == table.generation, timeout=10)
    finally:
        mesh.coordinator.table = None
    assert infer(mesh.inference("a2"), "from-heartbeat", mesh.rows[:1]).arm == "x"
