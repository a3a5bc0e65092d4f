"""A prometheus_client Collector's metrics now, in the Prometheus text format: what the
agent's and the coordinator's /metrics answer, and what tests read."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry


def exposition(collector: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()
