"""OpenTelemetry traces (milepost.core.tracing) of requests through real agents, with the real SDK.

The agents are tests/agent's mesh: a1 and a2 on loopback, real compiled scikit-learn models, one
process, so both agents' spans land in one in-memory exporter; a1 reaches a2 over gRPC, so the
trace crosses by the ``traceparent`` metadata alone (a gRPC server thread shares no context with
its caller's)."""

from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from engines.batching import MicroBatcher
from milepost.core import tracing
from milepost.core.batching import BatchingSettings
from milepost.core.errors import FailedPrecondition
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.v1 import agent_pb2, agent_pb2_grpc
from tests.agent.conftest import estimators, mesh  # noqa: F401 - the fixtures, shared with tests/agent
from tests.agent.mesh import CONTROL_TOKEN, FLAVOR, arm, infer, infer_request, route
from tests.conftest import wait_until
from tests.engines.test_batching import Gated, matrix

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans recorded by the real SDK into memory while the test runs; off again after it."""
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    with tracing.recorded(provider):
        yield found
    provider.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return (span.parent is not None and span.parent.span_id == parent.context.span_id
            and span.context.trace_id == parent.context.trace_id)


def test_a_routed_request_is_one_trace_through_both_agents(mesh, exporter) -> None:  # noqa: F811
    mesh.set_routes(route("traced-far", "single", [arm("remote", "dep-remote")], {"dep-remote": [mesh.address("a2")]}))
    rows = mesh.rows[:7]
    answer = infer(mesh.inference("a1"), "traced-far", rows)
    np.testing.assert_allclose(answer.values, mesh.models["lr_b"].estimator.predict_proba(rows), atol=1e-5)
    version = mesh.models["lr_b"].version

    spans = exporter.get_finished_spans()
    (front,) = [s for s in named(spans, "milepost.infer") if s.attributes["milepost.endpoint"] == "traced-far"]
    (far,) = [s for s in named(spans, "milepost.infer") if s.attributes["milepost.endpoint"] == "dep-remote"]
    (chosen,) = named(spans, "milepost.arm")
    (call,) = named(spans, "milepost.remote")
    (engine,) = named(spans, "milepost.engine")
    assert front.parent is None  # the client sent no trace: a1 starts it
    assert child_of(chosen, front) and child_of(call, chosen) and child_of(far, call) and child_of(engine, far)
    assert far.parent.is_remote  # a2 learned its parent from the call's metadata
    assert {s.context.trace_id for s in spans} == {front.context.trace_id}

    assert dict(front.attributes) == {
        "milepost.endpoint": "traced-far", "milepost.rows": 7, "milepost.model_version": version,
        "milepost.deployment": "dep-remote", "milepost.arm": "remote",
    }
    assert dict(chosen.attributes) == {
        "milepost.endpoint": "traced-far", "milepost.arm": "remote", "milepost.policy": "single",
        "milepost.deployment": "dep-remote", "milepost.remote": True, "milepost.rows": 7,
        "milepost.model_version": version,
    }
    assert dict(call.attributes) == {"milepost.deployment": "dep-remote", "milepost.rows": 7}
    assert far.attributes["milepost.deployment"] == "dep-remote" and far.attributes["milepost.model_version"] == version
    assert engine.attributes["milepost.rows"] == 7 and engine.attributes["milepost.platform"]
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)


def test_a_clients_traceparent_is_the_parent_of_the_request(mesh, exporter) -> None:  # noqa: F811
    mesh.set_routes(route("traced-local", "single", [arm("main", "dep-a")], {"dep-a": [mesh.address("a1")]}))
    request = infer_request("traced-local", mesh.rows[:3])
    request.id = "req-42"
    mesh.inference("a1").ModelInfer(request, timeout=30, metadata=(("traceparent", TRACEPARENT),))

    spans = exporter.get_finished_spans()
    (front,) = named(spans, "milepost.infer")
    (chosen,) = named(spans, "milepost.arm")
    (engine,) = named(spans, "milepost.engine")
    assert format(front.context.trace_id, "032x") == TRACE_ID
    assert format(front.parent.span_id, "016x") == PARENT_ID and front.parent.is_remote
    assert child_of(chosen, front) and child_of(engine, chosen)
    assert front.attributes["milepost.request_id"] == "req-42"
    assert chosen.attributes["milepost.remote"] is False and chosen.attributes["milepost.deployment"] == "dep-a"
    assert engine.attributes["milepost.rows"] == 3

    exporter.clear()  # a traceparent that is not W3C's is ignored: the request starts its own trace
    mesh.inference("a1").ModelInfer(request, timeout=30, metadata=(("traceparent", "00-not-a-trace-01"),))
    (front,) = named(exporter.get_finished_spans(), "milepost.infer")
    assert front.parent is None and format(front.context.trace_id, "032x") != TRACE_ID


def test_a_failed_request_sets_the_span_status(mesh, exporter) -> None:  # noqa: F811
    mesh.set_routes(route("traced-narrow", "single", [arm("main", "dep-a")], {"dep-a": [mesh.address("a1")]}))
    with pytest.raises(grpc.RpcError) as info:
        infer(mesh.inference("a1"), "traced-narrow", mesh.rows[:2, :5])  # 5 features for an 8-feature model
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        infer(mesh.inference("a1"), "no-such-endpoint", mesh.rows[:2])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    spans = named(exporter.get_finished_spans(), "milepost.infer")
    assert [s.attributes["milepost.endpoint"] for s in spans] == ["traced-narrow", "no-such-endpoint"]
    assert all(s.status.status_code == StatusCode.ERROR for s in spans)
    assert "no-such-endpoint" in spans[1].status.description
    assert [e.name for e in spans[1].events] == ["exception"]


def test_ensemble_members_on_pool_threads_stay_in_the_trace(mesh, exporter) -> None:  # noqa: F811
    a1 = mesh.address("a1")
    mesh.set_routes(route("traced-ensemble", "ensemble", [arm("a", "dep-a", weight=1), arm("b", "dep-b", weight=1)],
                          {"dep-a": [a1], "dep-b": [a1]}, combiner="mean"))
    infer(mesh.inference("a1"), "traced-ensemble", mesh.rows[:4])

    spans = exporter.get_finished_spans()
    (front,) = named(spans, "milepost.infer")
    members = named(spans, "milepost.arm")
    assert sorted(s.attributes["milepost.arm"] for s in members) == ["a", "b"]
    assert all(child_of(s, front) for s in members)
    assert front.attributes["milepost.arm"] in ("a,b", "b,a")
    assert len(named(spans, "milepost.engine")) == 2


def test_a_shadow_call_on_its_pool_thread_stays_in_the_trace(mesh, exporter) -> None:  # noqa: F811
    a1 = mesh.address("a1")
    mesh.set_routes(route("traced-shadow", "shadow", [arm("live", "dep-a"), arm("dark", "dep-b")],
                          {"dep-a": [a1], "dep-b": [a1]}, shadow_fraction=1.0))
    assert infer(mesh.inference("a1"), "traced-shadow", mesh.rows[:4]).arm == "live"

    arms = wait_until(lambda: len(found := named(exporter.get_finished_spans(), "milepost.arm")) == 2 and found)
    (front,) = named(exporter.get_finished_spans(), "milepost.infer")
    assert sorted(s.attributes["milepost.arm"] for s in arms) == ["dark", "live"]
    assert all(child_of(s, front) for s in arms)  # the dark call may end after the request's span: still its child


def test_rest_requests_honour_a_traceparent_header(mesh, exporter, tmp_path) -> None:  # noqa: F811
    from agent.server import Agent, AgentConfig

    agent = Agent(AgentConfig(coordinator=mesh.coordinator.address, data_dir=tmp_path, port=0, agent_id="a-rest",
                              http_port=0))
    agent.start()
    try:
        assert agent.registration.registered.wait(10)
        model = mesh.models["lr_a"]
        with grpc.insecure_channel(agent.address) as channel:
            control = agent_pb2_grpc.AgentServiceStub(channel)
            control.Load(agent_pb2.LoadRequest(deployment_id="dep-h", endpoint="traced-rest", model=model.name,
                                               version=model.version, flavor=FLAVOR),
                         timeout=60, metadata=(("authorization", f"Bearer {CONTROL_TOKEN}"),))
        rows = mesh.rows[:2]
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                       "data": rows.reshape(-1).tolist()}]})
        connection = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
        connection.request("POST", "/v2/models/traced-rest/infer", body,
                           {"content-type": "application/json", "traceparent": TRACEPARENT})
        reply = connection.getresponse()
        assert reply.status == 200, reply.read()
        connection.close()
    finally:
        agent.stop(grace=0)

    (front,) = named(exporter.get_finished_spans(), "milepost.infer")
    assert format(front.context.trace_id, "032x") == TRACE_ID and format(front.parent.span_id, "016x") == PARENT_ID
    assert front.attributes["milepost.endpoint"] == "traced-rest" and front.attributes["milepost.rows"] == 2


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector on loopback: what an agent's exporter sends, kept."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, object]]] = []  # (service.name, span name, attributes)
        self.server = grpc.server(ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}
                    self.spans.append((service, span.name, values))
        return trace_service_pb2.ExportTraceServiceResponse()


def test_an_agent_with_tracing_otlp_sends_its_spans_to_the_collector(mesh, tmp_path, monkeypatch) -> None:  # noqa: F811
    from agent.server import Agent, AgentConfig

    collector = Collector()
    monkeypatch.setenv("MILEPOST_TRACING", "otlp")  # what a user sets; the exporter reads the OTEL_ variables
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    agent = Agent(AgentConfig(coordinator=mesh.coordinator.address, data_dir=tmp_path, port=0, agent_id="a-otlp"))
    try:
        agent.start()
        assert tracing.enabled()
        assert agent.registration.registered.wait(10)
        model = mesh.models["lr_a"]
        with grpc.insecure_channel(agent.address) as channel:
            agent_pb2_grpc.AgentServiceStub(channel).Load(
                agent_pb2.LoadRequest(deployment_id="dep-o", endpoint="traced-otlp", model=model.name,
                                      version=model.version, flavor=FLAVOR),
                timeout=60, metadata=(("authorization", f"Bearer {CONTROL_TOKEN}"),))
            answer = infer(oip_grpc.GRPCInferenceServiceStub(channel), "traced-otlp", mesh.rows[:5])
        np.testing.assert_allclose(answer.values, model.estimator.predict_proba(mesh.rows[:5]), atol=1e-5)
    finally:
        agent.stop(grace=0)  # flushes the exporter's batch
        tracing.use(None)
        collector.server.stop(0)
    infers = [(service, attributes) for service, name, attributes in collector.spans if name == "milepost.infer"]
    assert infers == [("milepost-agent", {"milepost.endpoint": "traced-otlp", "milepost.rows": 5,
                                          "milepost.model_version": model.version, "milepost.deployment": "dep-o"})]
    assert ("milepost-agent", "milepost.engine") in {(service, name) for service, name, _ in collector.spans}


def test_a_queued_request_records_its_wait_then_its_engine_call(mesh, exporter) -> None:  # noqa: F811
    hosted = mesh.agents["a1"].table.get("dep-a")
    gated = Gated(hosted.model.model)
    batcher = MicroBatcher(gated, BatchingSettings(max_batch_size=64))
    rows = mesh.rows

    def request(name: str, first: int) -> None:
        with tracing.span(name):
            batcher.predict(matrix(rows[first : first + 2]))

    leader = threading.Thread(target=request, args=("leader", 0))
    leader.start()
    try:
        wait_until(lambda: gated.entered == 2, timeout=10, interval=0.01)  # the leader is in the engine, at the gate
        follower = threading.Thread(target=request, args=("follower", 2))
        follower.start()
        wait_until(lambda: batcher.queued_rows == 2, timeout=10, interval=0.01)
    finally:
        gated.gate.set()
    leader.join()
    follower.join()
    batcher.close()

    spans = exporter.get_finished_spans()
    (lead,) = named(spans, "leader")
    (follow,) = named(spans, "follower")
    (queued,) = named(spans, "milepost.batch.queue")
    engines = named(spans, "milepost.engine")
    assert child_of(queued, follow) and dict(queued.attributes) == {"milepost.rows": 2, "milepost.lead": True}
    assert queued.end_time - queued.start_time > 0
    assert sorted((s.parent.span_id == lead.context.span_id, s.attributes["milepost.rows"]) for s in engines) == [
        (False, 2), (True, 2)]
    assert [s for s in engines if child_of(s, follow)]  # given the lead, it scored its own rows


def test_tracing_off_records_nothing(mesh, exporter) -> None:  # noqa: F811
    mesh.set_routes(route("untraced", "single", [arm("main", "dep-a")], {"dep-a": [mesh.address("a1")]}))
    stub = mesh.inference("a1")
    stub.ModelInfer(infer_request("untraced", mesh.rows[:2]), timeout=30)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["milepost.arm", "milepost.engine", "milepost.infer"]
    exporter.clear()
    with tracing.recorded(None):  # off, as by default: the same request, a client's traceparent too
        assert not tracing.enabled()
        stub.ModelInfer(infer_request("untraced", mesh.rows[:2]), timeout=30, metadata=(("traceparent", TRACEPARENT),))
        assert tracing.span("anything") is tracing.NO_SPAN and tracing.outgoing() is None
        assert tracing.from_headers({b"traceparent": TRACEPARENT.encode()}) is None
        tracing.start("milepost-agent", "off")  # the default setting changes nothing
        assert not tracing.enabled()
    assert exporter.get_finished_spans() == ()


def test_sampled_out_requests_are_served_and_record_nothing(mesh) -> None:  # noqa: F811
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    found = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)  # what OTEL_TRACES_SAMPLER=always_off, or a ratio's misses, give
    provider.add_span_processor(SimpleSpanProcessor(found))
    mesh.set_routes(route("sampled-far", "split", [arm("remote", "dep-remote", weight=1), arm("c", "dep-c", weight=1)],
                          {"dep-remote": [mesh.address("a2")], "dep-c": [mesh.address("a1")]}))
    rows = mesh.rows[:3]
    with tracing.recorded(provider):
        answers = {infer(mesh.inference("a1"), "sampled-far", rows).arm for _ in range(30)}
    assert answers == {"remote", "c"}
    assert found.get_finished_spans() == ()


def test_console_tracing_names_the_service(capsys) -> None:
    from opentelemetry import trace

    try:
        tracing.start("milepost-coordinator", "console")
        with tracing.span("milepost.alone"):
            pass
        first = capsys.readouterr().out
        tracing.start("milepost-agent", "console")  # milepost up: the agent starts second, in the same process
        tracing.start("milepost-agent", "console")  # a second agent (tests) shares it
        with tracing.span("milepost.both"), trace.get_tracer("user.bundle").start_as_current_span("user.code"):
            pass  # code tracing through OpenTelemetry's global provider joins the same trace
    finally:
        tracing.use(None)
    second = capsys.readouterr().out
    assert '"name": "milepost.alone"' in first and '"service.name": "milepost-coordinator"' in first
    assert second.count('"service.name": "milepost-agent"') == 2 and "milepost-coordinator" not in second
    assert '"name": "user.code"' in second and second.count(first_trace_id(second)) == 2
    assert not trace.get_tracer("user.bundle").start_span("later").is_recording()  # off again: so is the global


def first_trace_id(printed: str) -> str:
    return printed.split('"trace_id": "', 1)[1].split('"', 1)[0]


def test_tracing_without_the_extra_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if milepost[otel] were not installed
    with pytest.raises(FailedPrecondition) as info:
        tracing.start("milepost-agent", "otlp")
    assert "pip install 'milepost[otel]'" in info.value.message
    assert not tracing.enabled()
