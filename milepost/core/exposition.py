"""A prometheus_client Collector's metrics now, in the Prometheus text format: what the
agent's and the coordinator's /metrics answer, and what tests read."""

from __future__ import annotations

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry


def with_process(*collectors: Collector) -> CollectorRegistry:
    """A registry of ``collectors`` and the process's own families (process_*, python_gc_*,
    python_info): what the agent's and the coordinator's /metrics serve."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    for process_collector in (ProcessCollector, PlatformCollector, GCCollector):
        process_collector(registry=registry)
    return registry


def exposition(collector: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()
