"""What this node has: cores, memory and GPUs, as the agent reports them."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from milepost.core.errors import FailedPrecondition
from milepost.core.settings import get_settings
from milepost.v1 import types_pb2


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def gpus() -> list[types_pb2.Gpu]:
    """NVIDIA GPUs as nvidia-smi lists them; none when it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=get_settings().gpu_probe_timeout_s, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            mib = int(parts[2]) if parts[2].isdigit() else 0
            found.append(types_pb2.Gpu(index=int(parts[0]), name=parts[1], memory_bytes=mib << 20))
    return found


def probe() -> types_pb2.Resources:
    return types_pb2.Resources(cpu_cores=cpu_cores(), memory_bytes=memory_bytes(), gpus=gpus())


class GpuAssigner:
    """Which of this node's GPUs each replica runs on. The agent picks, not the engine, so
    that replicas that each ask for a GPU land on different GPUs of a multi-GPU node
    rather than all on GPU 0.

    A replica asking for ``count`` GPUs holds the ``count`` GPUs that host the fewest
    replicas (the lower index on a tie) until it is released; its device is the first of
    them, "cuda:N" (an engine runs a replica on one device). Loading the same deployment
    again keeps what it holds. ``indices`` lists the node's GPUs, as probed at start-up.
    """

    def __init__(self, indices: Callable[[], Sequence[int]]) -> None:
        self._indices = indices
        self._held: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def assign(self, deployment_id: str, count: int) -> str:
        with self._lock:
            held = self._held.get(deployment_id)
            if held is None or len(held) != count:
                self._held.pop(deployment_id, None)
                gpus = list(self._indices())
                if count > len(gpus):
                    raise FailedPrecondition(
                        f"resources.gpus: deployment {deployment_id!r} asks for {count} GPU(s); this agent has {len(gpus)}")
                load = Counter(i for indices in self._held.values() for i in indices)
                held = self._held[deployment_id] = tuple(sorted(gpus, key=lambda i: (load[i], i))[:count])
            return f"cuda:{held[0]}"

    def release(self, deployment_id: str) -> None:
        with self._lock:
            self._held.pop(deployment_id, None)

    def held(self) -> dict[str, tuple[int, ...]]:
        """Deployment id -> the GPU indices it holds."""
        with self._lock:
            return dict(self._held)
