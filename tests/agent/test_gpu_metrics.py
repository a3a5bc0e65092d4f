"""GPU metrics on the agent's /metrics (agent.gpu_metrics)."""

from __future__ import annotations

from agent.gpu_metrics import GpuCollector, GpuReading, _Nvml
from milepost.core.exposition import exposition
from tests.agent.test_agent_metrics import parse


def test_a_node_without_an_nvidia_driver_shows_no_gpu_families() -> None:
    # This machine has no NVIDIA driver (and CI may not have nvidia-ml-py): NVML gives nothing.
    assert _Nvml().readings() == []
    assert "milepost_gpu" not in exposition(GpuCollector())


def test_gpu_readings_become_gauges_per_gpu() -> None:
    # A GPU cannot be caused here: the readings NVML would give stand in for one.
    collector = GpuCollector(lambda: [GpuReading(0, 3 << 30, 80 << 30, 0.42), GpuReading(1, 0, 80 << 30, 0.0)])
    samples = parse(exposition(collector))
    assert samples[("milepost_gpu_memory_used_bytes", (("gpu", "0"),))] == 3 << 30
    assert samples[("milepost_gpu_memory_total_bytes", (("gpu", "1"),))] == 80 << 30
    assert samples[("milepost_gpu_utilization_ratio", (("gpu", "0"),))] == 0.42
