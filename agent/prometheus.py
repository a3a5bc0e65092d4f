"""The agent's metrics for Prometheus, on ``GET /metrics`` of a small HTTP server.

Per endpoint and arm (labels ``endpoint``, ``arm``; see agent.routing.arm_metrics
for what each counts):

- ``milepost_requests_total``, ``milepost_errors_total``: calls to the arm.
- ``milepost_request_latency_seconds``: histogram, buckets LATENCY_BOUNDS_MS.
- ``milepost_predictions_total``, ``milepost_prediction_sum``,
  ``milepost_prediction_sum_squares``: the arm's first-output values.
- ``milepost_shadow_compared_total``, ``milepost_shadow_abs_diff_total``:
  shadow rows compared with the primary, and their summed |difference|.

In Triton's names and units (``nv_inference_*`` there), per endpoint, model, version and
arm (labels ``endpoint``, ``model``, ``version``, ``arm``; model and version are those of
the arm's deployment where this agent hosts it, else empty):
``milepost_inference_request_success``, ``milepost_inference_request_failure`` and
``milepost_inference_request_duration_us`` (cumulative, every request). With the same
labels, where the data plane times its phases (agent.statistics: a request without an arm
counts under arm "", with the model and version of its endpoint's one deployment here):
``milepost_inference_count`` (rows), ``milepost_inference_exec_count`` (engine calls),
``milepost_inference_queue_duration_us`` (waiting for a batch) and
``milepost_inference_compute_duration_us`` (and label ``phase``: input, infer, output). All
counters, so the exposition names them with ``_total`` after these, as Prometheus requires.

Per deployment (labels ``endpoint``, ``deployment``) that batches: ``milepost_batcher_queue_rows``
(rows waiting now) and ``milepost_batch_rows`` (histogram of rows per engine call). And the
process's own (``process_cpu_seconds_total``, ``process_resident_memory_bytes``...,
``python_gc_*``, ``python_info``) and the GPUs' (agent.gpu_metrics).

Per endpoint (label ``endpoint``), as ModelStatistics counts them:
``milepost_endpoint_requests_total`` (label ``outcome``: success|failure),
``milepost_endpoint_rows_total``, ``milepost_endpoint_request_seconds_total``
(label ``outcome``), ``milepost_shadow_dropped_total`` (mirrors dropped because
the shadow pool was full), ``milepost_decisions_logged_total`` and
``milepost_decisions_dropped_total`` (the decision log's, agent.decision_log). And
``milepost_routes_generation``.

Per deployment whose bundle carries a training baseline (scoring_core.drift), over its
last closed window (none until one closes: a window of a few batches would swing):
``milepost_feature_drift`` (labels ``endpoint``, ``deployment``,
``feature``, ``statistic``: psi, overlap, js_distance, ks, missing_rate,
out_of_range_rate), ``milepost_prediction_drift`` (the same for the prediction) and
``milepost_drift_window_rows``.

The counters live where they are counted (ArmMetricsBook, EndpointStatistics);
AgentCollector is a prometheus_client Collector that reads a snapshot of them at
each scrape, and prometheus_client writes the exposition (text format, or
OpenMetrics when the scraper asks for it). The server is a WSGI server in a daemon
thread around prometheus_client's WSGI app; paths other than /metrics get 404.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agent.gpu_metrics import GpuCollector
from agent.routing.arm_metrics import LATENCY_BOUNDS_MS
from agent.statistics import EndpointStatistics
from engines.batching import BATCH_BOUNDS, MicroBatcher
from milepost.core.exposition import exposition, with_process
from milepost.core.ports import bind_error
from milepost.v1 import routing_pb2
from scoring_core.drift import ClosedWindow, Drift, LiveWindow, drift

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from agent.decision_log import DecisionLog
    from agent.deployments import Hosted
    from agent.registration import Registration
    from agent.routing.arm_metrics import ArmMetricsBook
    from agent.routing.route_table import RouteTable

log = logging.getLogger("milepost.agent")
ARM_LABELS = ["endpoint", "arm"]


@dataclass(frozen=True)
class Reading:
    """The agent's counters at one moment: what one scrape shows."""

    arms: Iterable[routing_pb2.ArmMetrics]
    endpoints: Mapping[str, EndpointStatistics]
    shadow_dropped: Mapping[str, int]
    generation: int
    drift: Iterable[tuple[str, str, Mapping[str, Drift]]] = ()  # (endpoint, deployment, name -> drift)
    decisions_logged: Mapping[str, int] = field(default_factory=dict)
    decisions_dropped: Mapping[str, int] = field(default_factory=dict)
    arm_models: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (endpoint, arm) -> (model, version)
    batchers: Iterable[tuple[str, str, MicroBatcher]] = ()  # (endpoint, deployment, its micro-batcher)


class _EndpointCounters(Protocol):
    def all_statistics(self) -> Mapping[str, EndpointStatistics]: ...


class _RouteTable(Protocol):
    @property
    def generation(self) -> int: ...

    @property
    def table(self) -> RouteTable: ...


class _Deployments(Protocol):
    def hosted(self) -> list[Hosted]: ...


class AgentCounters(Protocol):
    """What AgentCollector reads of an agent (agent.server.Agent)."""

    @property
    def table(self) -> _Deployments: ...

    @property
    def arm_metrics(self) -> ArmMetricsBook: ...

    @property
    def dataplane(self) -> _EndpointCounters: ...

    @property
    def router(self) -> _RouteTable: ...

    @property
    def decisions(self) -> DecisionLog: ...

    @property
    def registration(self) -> Registration: ...


def read_agent(agent: AgentCounters) -> Reading:
    hosted = agent.table.hosted()
    closed = [(h.spec.endpoint, h.spec.deployment_id, drifts(window, newest)) for h in hosted
              if (window := h.model.drift) is not None and (newest := agent.registration.newest_closed(window)) is not None]
    return Reading(agent.arm_metrics.snapshot(), agent.dataplane.all_statistics(), agent.arm_metrics.shadow_dropped(),
                   agent.router.generation, closed, agent.decisions.logged(), agent.decisions.dropped(),
                   arm_models(agent.router.table, hosted),
                   [(h.spec.endpoint, h.spec.deployment_id, h.model) for h in hosted if isinstance(h.model, MicroBatcher)])


def drifts(window: LiveWindow, closed: ClosedWindow) -> dict[str, Drift]:
    """Feature name (and "prediction") -> its drift in a closed window of ``window``."""
    return {f.name: drift(f, c) for f, c in zip((*window.features, window.prediction), closed.counts)}


def arm_models(table: RouteTable, hosted: Iterable[Hosted]) -> dict[tuple[str, str], tuple[str, str]]:
    """(endpoint, arm) -> (model, version) of each arm whose deployment this agent hosts, and
    (endpoint, "") -> those of the endpoint's deployment where this agent hosts just one for it
    (requests served with no arm, agent.statistics)."""
    hosted = list(hosted)
    by_id = {h.spec.deployment_id: (h.spec.model, h.version) for h in hosted}
    by_endpoint: dict[str, list[tuple[str, str]]] = {}
    for h in hosted:
        by_endpoint.setdefault(h.spec.endpoint, []).append(by_id[h.spec.deployment_id])
    found = {(endpoint, ""): only for endpoint, (only, *more) in by_endpoint.items() if not more}
    found.update({
        (route.endpoint, arm.name): by_id[arm.deployment_id]
        for route in table.routes.values() if route.policy is not None
        for arm in route.policy.arms if arm.deployment_id in by_id
    })
    return found


def _triton_families(reading: Reading) -> list[Metric]:
    """The Triton-named families of the module docstring."""
    labels = ["endpoint", "model", "version", "arm"]
    success = CounterMetricFamily("milepost_inference_request_success", "Successful requests to an arm.", labels=labels)
    failure = CounterMetricFamily("milepost_inference_request_failure", "Failed requests to an arm.", labels=labels)
    duration = CounterMetricFamily("milepost_inference_request_duration_us",
                                   "Cumulative time of an arm's requests, microseconds.", labels=labels)
    for m in reading.arms:
        model, version = reading.arm_models.get((m.endpoint, m.arm), ("", ""))
        values = [m.endpoint, model, version, m.arm]
        success.add_metric(values, m.requests - m.errors)
        failure.add_metric(values, m.errors)
        duration.add_metric(values, m.latency_sum_ms * 1000.0)
    rows = CounterMetricFamily("milepost_inference_count", "Rows an arm scored.", labels=labels)
    execs = CounterMetricFamily("milepost_inference_exec_count", "Engine calls for an arm's requests.", labels=labels)
    queue = CounterMetricFamily("milepost_inference_queue_duration_us",
                                "Cumulative time an arm's requests waited for a batch, microseconds.", labels=labels)
    compute = CounterMetricFamily("milepost_inference_compute_duration_us",
                                  "Cumulative time in each phase of scoring an arm's requests, microseconds.",
                                  labels=[*labels, "phase"])
    for name, s in sorted(reading.endpoints.items()):
        for arm, a in sorted(s.arm_snapshot().items()):
            model, version = reading.arm_models.get((name, arm), ("", ""))
            values = [name, model, version, arm]
            rows.add_metric(values, a.inference_count)
            execs.add_metric(values, a.execution_count)
            queue.add_metric(values, a.queue.ns / 1000.0)
            for phase, spent in (("input", a.compute_input), ("infer", a.compute_infer), ("output", a.compute_output)):
                compute.add_metric([*values, phase], spent.ns / 1000.0)
    return [success, failure, duration, rows, execs, queue, compute, *_batcher_families(reading)]


def _batcher_families(reading: Reading) -> list[Metric]:
    labels = ["endpoint", "deployment"]
    queued = GaugeMetricFamily("milepost_batcher_queue_rows", "Rows waiting for the model now.", labels=labels)
    sizes = HistogramMetricFamily("milepost_batch_rows", "Rows per engine call (merged batches included).",
                                  labels=labels)
    for endpoint, deployment, batcher in reading.batchers:
        queued.add_metric([endpoint, deployment], batcher.queued_rows)
        cumulative, buckets = 0, []
        for bound, count in zip((*BATCH_BOUNDS, float("inf")), list(batcher.batch_rows)):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        sizes.add_metric([endpoint, deployment], buckets, batcher.rows_scored)
    return [queued, sizes]


def families(reading: Reading) -> list[Metric]:
    """The metric families of one reading, named and labelled as the module docstring says."""
    requests = CounterMetricFamily("milepost_requests_total", "Requests an arm of an endpoint served.", labels=ARM_LABELS)
    errors = CounterMetricFamily("milepost_errors_total", "Requests an arm of an endpoint failed.", labels=ARM_LABELS)
    latency = HistogramMetricFamily("milepost_request_latency_seconds", "Latency of calls to an arm.", labels=ARM_LABELS)
    predictions = CounterMetricFamily("milepost_predictions_total", "Rows an arm answered (first output, NaN left out).",
                                      labels=ARM_LABELS)
    prediction_sum = GaugeMetricFamily("milepost_prediction_sum", "Sum of an arm's first-output values.", labels=ARM_LABELS)
    prediction_squares = GaugeMetricFamily("milepost_prediction_sum_squares", "Sum of squares of an arm's first-output values.",
                                           labels=ARM_LABELS)
    compared = CounterMetricFamily("milepost_shadow_compared_total", "Shadow rows compared with the primary's answer.",
                                   labels=ARM_LABELS)
    abs_diff = CounterMetricFamily("milepost_shadow_abs_diff_total", "Sum of |shadow - primary| over compared rows.",
                                   labels=ARM_LABELS)
    for m in reading.arms:
        labels = [m.endpoint, m.arm]
        requests.add_metric(labels, m.requests)
        errors.add_metric(labels, m.errors)
        cumulative, buckets = 0, []
        for bound, count in zip(LATENCY_BOUNDS_MS, m.latency_buckets):
            cumulative += count
            buckets.append((floatToGoString(bound / 1000.0), cumulative))  # the last bound is +Inf
        latency.add_metric(labels, buckets, m.latency_sum_ms / 1000.0)
        predictions.add_metric(labels, m.predictions)
        prediction_sum.add_metric(labels, m.prediction_sum)
        prediction_squares.add_metric(labels, m.prediction_sum_squares)
        compared.add_metric(labels, m.shadow_compared)
        abs_diff.add_metric(labels, m.shadow_abs_diff_sum)

    endpoint_requests = CounterMetricFamily("milepost_endpoint_requests_total", "Requests to an endpoint on this agent.",
                                            labels=["endpoint", "outcome"])
    endpoint_rows = CounterMetricFamily("milepost_endpoint_rows_total", "Rows scored for an endpoint on this agent.",
                                        labels=["endpoint"])
    endpoint_seconds = CounterMetricFamily("milepost_endpoint_request_seconds_total", "Time spent on an endpoint's requests.",
                                           labels=["endpoint", "outcome"])
    dropped = CounterMetricFamily("milepost_shadow_dropped_total", "Shadow mirrors dropped because the shadow pool was full.",
                                  labels=["endpoint"])
    for name, s in sorted(reading.endpoints.items()):
        endpoint_requests.add_metric([name, "success"], s.success.count)
        endpoint_requests.add_metric([name, "failure"], s.fail.count)
        endpoint_rows.add_metric([name], s.inference_count)
        endpoint_seconds.add_metric([name, "success"], s.success.ns / 1e9)
        endpoint_seconds.add_metric([name, "failure"], s.fail.ns / 1e9)
    for name, count in sorted(reading.shadow_dropped.items()):
        dropped.add_metric([name], count)
    logged = CounterMetricFamily("milepost_decisions_logged", "Decisions the decision log wrote.", labels=["endpoint"])
    lost = CounterMetricFamily("milepost_decisions_dropped", "Decisions the decision log dropped: its queue was full.",
                               labels=["endpoint"])
    for name, count in sorted(reading.decisions_logged.items()):
        logged.add_metric([name], count)
    for name, count in sorted(reading.decisions_dropped.items()):
        lost.add_metric([name], count)
    routes = GaugeMetricFamily("milepost_routes_generation", "Generation of the route table this agent holds.",
                               value=reading.generation)
    return [
        requests, errors, latency, predictions, prediction_sum, prediction_squares, compared, abs_diff,
        endpoint_requests, endpoint_rows, endpoint_seconds, dropped, logged, lost, routes, *_drift_families(reading),
        *_triton_families(reading),
    ]


DRIFT_STATISTICS = ("psi", "overlap", "js_distance", "ks", "missing_rate", "out_of_range_rate")


def _drift_families(reading: Reading) -> list[Metric]:
    labels = ["endpoint", "deployment", "feature", "statistic"]
    features = GaugeMetricFamily("milepost_feature_drift", "Drift of a feature against the training baseline.", labels=labels)
    prediction = GaugeMetricFamily("milepost_prediction_drift", "Drift of the prediction against the training baseline.",
                                   labels=["endpoint", "deployment", "statistic"])
    rows = GaugeMetricFamily("milepost_drift_window_rows", "Rows in the window the drift figures cover.",
                             labels=["endpoint", "deployment"])
    for endpoint, deployment, drifts in reading.drift:
        for name, d in drifts.items():
            for statistic in DRIFT_STATISTICS:
                if name == "prediction":
                    prediction.add_metric([endpoint, deployment, statistic], getattr(d, statistic))
                else:
                    features.add_metric([endpoint, deployment, name, statistic], getattr(d, statistic))
        rows.add_metric([endpoint, deployment], drifts["prediction"].rows)
    return [features, prediction, rows]


class AgentCollector(Collector):
    """A Collector over a reading of the counters taken at each scrape (``read``), or
    over an agent's counters (``AgentCollector.of(agent)``)."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self._read = read

    @classmethod
    def of(cls, agent: AgentCounters) -> AgentCollector:
        return cls(lambda: read_agent(agent))

    def collect(self) -> Iterator[Metric]:
        return iter(families(self._read()))


def render(
    arms: Iterable[routing_pb2.ArmMetrics],
    endpoints: Mapping[str, EndpointStatistics],
    shadow_dropped: Mapping[str, int],
    generation: int,
) -> str:
    """These counters in the Prometheus text format."""
    reading = Reading(list(arms), endpoints, shadow_dropped, generation)
    return exposition(AgentCollector(lambda: reading))


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


def _only_metrics(metrics: WSGIApplication) -> WSGIApplication:
    """``metrics`` on /metrics; 404 elsewhere; 500 (logged) when rendering fails."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"only /metrics is served here\n"]
        try:
            return metrics(environ, start_response)
        except Exception:  # a scrape must not take the server down (logged)
            log.exception("rendering /metrics failed")
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")], sys.exc_info())
            return [b"rendering metrics failed; see the agent log\n"]

    return app


class MetricsServer:
    """``GET /metrics`` answered with what ``collector`` holds at each scrape; everything else 404.

    The port is bound when the server is made (0: a free one), so ``port`` is known before ``start``.
    """

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        registry = with_process(collector, GpuCollector())  # GPU families absent where no NVIDIA driver answers
        app = _only_metrics(make_wsgi_app(registry))
        try:
            self._server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as err:
            raise bind_error(host, port, "metrics", "--metrics-port; -1 turns it off", err) from err
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
