"""GPU memory and utilisation for the agent's /metrics, read through NVML (nvidia-ml-py).

- ``milepost_gpu_memory_used_bytes``, ``milepost_gpu_memory_total_bytes`` (label ``gpu``: its index)
- ``milepost_gpu_utilization_ratio``: the share of the last sample period a kernel ran, 0 to 1

Read at each scrape. Where nvidia-ml-py is not installed (it comes with ``milepost[gpu]`` and
``milepost[all]``) or no NVIDIA driver answers, there is nothing to read and the families are
absent: a CPU node's metrics are not padded with zeros. NVML is initialised once, on the first
scrape; when that fails on a node whose nvidia-smi lists GPUs, one warning says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.resources import gpus

log = logging.getLogger("milepost.agent")


@dataclass(frozen=True)
class GpuReading:
    index: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: float  # 0 to 1


class _Nvml:
    """NVML, initialised on first use; None after a failed start (logged once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: Any = None
        self._tried = False

    def readings(self) -> list[GpuReading]:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = _start()
            nvml = self._module
        if nvml is None:
            return []
        out = []
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                busy = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                out.append(GpuReading(i, int(memory.used), int(memory.total), float(busy) / 100.0))
        except nvml.NVMLError as err:  # a GPU that fell off the bus: say so, show the others
            log.warning("reading GPU metrics failed: %s", err)
        return out


def _start() -> Any:
    """pynvml, initialised; None where it cannot be, said in one warning where nvidia-smi
    lists GPUs all the same (their metrics would otherwise vanish without a word)."""
    try:
        import pynvml
    except ImportError:
        _unreadable("nvidia-ml-py is not installed: pip install nvidia-ml-py (or milepost[gpu])")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        _unreadable(f"NVML did not start: {err}")
        return None
    return pynvml


def _unreadable(why: str) -> None:
    found = gpus()
    if found:
        log.warning("nvidia-smi lists %d GPU(s) but NVML cannot be read, so /metrics has no GPU metrics: %s",
                    len(found), why)
    else:
        log.debug("no GPU metrics: %s", why)


class GpuCollector(Collector):
    def __init__(self, read: Callable[[], list[GpuReading]] | None = None) -> None:
        self._read = read or _Nvml().readings

    def collect(self) -> Iterator[Metric]:
        readings = self._read()
        if not readings:
            return
        used = GaugeMetricFamily("milepost_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("milepost_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        busy = GaugeMetricFamily("milepost_gpu_utilization_ratio", "Share of time a kernel ran on the GPU.",
                                 labels=["gpu"])
        for r in readings:
            used.add_metric([str(r.index)], r.memory_used_bytes)
            total.add_metric([str(r.index)], r.memory_total_bytes)
            busy.add_metric([str(r.index)], r.utilization)
        yield from (used, total, busy)
