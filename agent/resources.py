"""What this node has: cores, memory and GPUs, as the agent reports them."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence

from milepost.core.errors import FailedPrecondition
from milepost.core.requirements import GpuRoom, gib, pick_gpus, reserve
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

    A replica asking for ``count`` GPUs with ``memory_bytes`` on each holds the ``count``
    GPUs that have that much unreserved and host the fewest replicas (then the most free
    memory, then the lower index: milepost.core.requirements.pick_gpus, the rule the
    coordinator places by) until it is released; its device is the first of them,
    "cuda:N" (an engine runs a replica on one device). A replica naming no memory may go
    on any GPU (the coordinator keeps those apart) and holds its GPU's memory whole.
    When no ``count`` GPUs have the memory the load is refused, FAILED_PRECONDITION with
    each GPU's free memory. Loading the same deployment again keeps what it holds. A
    pipeline stage holds its GPU the same way, as "stage:RUN/STAGE", while it runs.

    ``gpus`` lists the node's GPUs as probed at start-up: ``types_pb2.Gpu`` (index and
    total memory), or a bare index for a GPU whose memory is unknown (it takes only
    replicas that name no memory).
    """

    def __init__(self, gpus: Callable[[], Sequence[int | types_pb2.Gpu]]) -> None:
        self._gpus = gpus
        self._held: dict[str, tuple[tuple[int, ...], int]] = {}  # deployment id -> (GPU indices, bytes on each)
        self._lock = threading.Lock()

    def assign(self, deployment_id: str, count: int, memory_bytes: int = 0) -> str:
        with self._lock:
            held = self._held.get(deployment_id)
            if held is None or len(held[0]) != count or held[1] != memory_bytes:
                self._held.pop(deployment_id, None)
                rooms = self._rooms()
                if count > len(rooms):
                    raise FailedPrecondition(
                        f"resources.gpus: deployment {deployment_id!r} asks for {count} GPU(s); this agent has {len(rooms)}")
                picked = pick_gpus(rooms, count, memory_bytes)
                if picked is None:
                    which = "no GPU of this agent has" if count == 1 else f"fewer than {count} of this agent's GPUs have"
                    raise FailedPrecondition(
                        f"resources.gpu_memory_bytes: deployment {deployment_id!r} asks for {gib(memory_bytes)} on "
                        f"{count} GPU(s); {which} that much unreserved: " + "; ".join(r.describe() for r in rooms))
                held = self._held[deployment_id] = (picked, memory_bytes)
            return f"cuda:{held[0][0]}"

    def _rooms(self) -> list[GpuRoom]:
        rooms = [GpuRoom(g, 0) if isinstance(g, int) else GpuRoom(g.index, g.memory_bytes) for g in self._gpus()]
        for holder, (indices, memory_bytes) in self._held.items():
            rooms = reserve(rooms, indices, memory_bytes, holder)
        return rooms

    def release(self, deployment_id: str) -> None:
        with self._lock:
            self._held.pop(deployment_id, None)

    def held(self) -> dict[str, tuple[int, ...]]:
        """Deployment id -> the GPU indices it holds."""
        with self._lock:
            return {d: indices for d, (indices, _) in self._held.items()}

    def rooms(self) -> list[GpuRoom]:
        """Each GPU with what the replicas held here reserve on it."""
        with self._lock:
            return self._rooms()

    def report(self) -> list[types_pb2.GpuRoom]:
        """``rooms()`` for the heartbeat (AgentLoad.gpus): the coordinator places GPU memory
        from what this agent holds rather than from a replay that may disagree with it."""
        return [r.to_proto() for r in self.rooms()]
