"""The agent's metrics in Prometheus text format, on ``GET /metrics`` of a small HTTP server.

Per endpoint and arm (labels ``endpoint``, ``arm``; see agent.routing.arm_metrics
for what each counts):

- ``milepost_requests_total``, ``milepost_errors_total``: calls to the arm.
- ``milepost_request_latency_seconds``: histogram, buckets LATENCY_BOUNDS_MS.
- ``milepost_predictions_total``, ``milepost_prediction_sum``,
  ``milepost_prediction_sum_squares``: the arm's first-output values.
- ``milepost_shadow_compared_total``, ``milepost_shadow_abs_diff_total``:
  shadow rows compared with the primary, and their summed |difference|.

Per endpoint (label ``endpoint``), as ModelStatistics counts them:
``milepost_endpoint_requests_total`` (label ``outcome``: success|failure),
``milepost_endpoint_rows_total``, ``milepost_endpoint_request_seconds_total``
(label ``outcome``), ``milepost_shadow_dropped_total`` (mirrors dropped because
the shadow pool was full). And ``milepost_routes_generation``.

The server is stdlib ``http.server`` in a daemon thread; rendering reads
snapshots, never holds a lock across the whole page.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.routing.arm_metrics import LATENCY_BOUNDS_MS
from agent.statistics import EndpointStatistics
from milepost.v1 import routing_pb2

log = logging.getLogger("milepost.agent")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(**labels)} {_number(value)}")


def render(
    arms: Iterable[routing_pb2.ArmMetrics],
    endpoints: Mapping[str, EndpointStatistics],
    shadow_dropped: Mapping[str, int],
    generation: int,
) -> str:
    requests = _Family("milepost_requests_total", "counter", "Requests an arm of an endpoint served.")
    errors = _Family("milepost_errors_total", "counter", "Requests an arm of an endpoint failed.")
    latency = _Family("milepost_request_latency_seconds", "histogram", "Latency of calls to an arm.")
    predictions = _Family("milepost_predictions_total", "counter", "Rows an arm answered (first output, NaN left out).")
    prediction_sum = _Family("milepost_prediction_sum", "gauge", "Sum of an arm's first-output values.")
    prediction_squares = _Family("milepost_prediction_sum_squares", "gauge", "Sum of squares of an arm's first-output values.")
    compared = _Family("milepost_shadow_compared_total", "counter", "Shadow rows compared with the primary's answer.")
    abs_diff = _Family("milepost_shadow_abs_diff_total", "counter", "Sum of |shadow - primary| over compared rows.")
    for m in arms:
        labels = {"endpoint": m.endpoint, "arm": m.arm}
        requests.add(m.requests, **labels)
        errors.add(m.errors, **labels)
        cumulative = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, m.latency_buckets):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else _number(bound / 1000.0)
            latency.add(cumulative, "_bucket", **labels, le=le)
        latency.add(m.latency_sum_ms / 1000.0, "_sum", **labels)
        latency.add(cumulative, "_count", **labels)
        predictions.add(m.predictions, **labels)
        prediction_sum.add(m.prediction_sum, **labels)
        prediction_squares.add(m.prediction_sum_squares, **labels)
        compared.add(m.shadow_compared, **labels)
        abs_diff.add(m.shadow_abs_diff_sum, **labels)

    endpoint_requests = _Family("milepost_endpoint_requests_total", "counter", "Requests to an endpoint on this agent.")
    endpoint_rows = _Family("milepost_endpoint_rows_total", "counter", "Rows scored for an endpoint on this agent.")
    endpoint_seconds = _Family("milepost_endpoint_request_seconds_total", "counter", "Time spent on an endpoint's requests.")
    dropped = _Family("milepost_shadow_dropped_total", "counter", "Shadow mirrors dropped because the shadow pool was full.")
    for name, s in sorted(endpoints.items()):
        endpoint_requests.add(s.success.count, endpoint=name, outcome="success")
        endpoint_requests.add(s.fail.count, endpoint=name, outcome="failure")
        endpoint_rows.add(s.inference_count, endpoint=name)
        endpoint_seconds.add(s.success.ns / 1e9, endpoint=name, outcome="success")
        endpoint_seconds.add(s.fail.ns / 1e9, endpoint=name, outcome="failure")
    for name, count in sorted(shadow_dropped.items()):
        dropped.add(count, endpoint=name)
    routes = _Family("milepost_routes_generation", "gauge", "Generation of the route table this agent holds.")
    routes.add(generation)
    families = (
        requests, errors, latency, predictions, prediction_sum, prediction_squares, compared, abs_diff,
        endpoint_requests, endpoint_rows, endpoint_seconds, dropped, routes,
    )
    return "\n".join(line for f in families for line in f.lines) + "\n"


class MetricsServer:
    """``GET /metrics`` answered with ``page()``; everything else 404."""

    def __init__(self, host: str, port: int, page: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = page().encode()
                except Exception:  # noqa: BLE001 - a scrape must not take the server down
                    log.exception("rendering /metrics failed")
                    self.send_error(500, "rendering metrics failed; see the agent log")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
                log.debug("metrics http: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
