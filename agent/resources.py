"""What this node has: cores, memory and GPUs, as the agent reports them."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence

from milepost.core.errors import FailedPrecondition
from milepost.core.requirements import GpuRoom, gib, pick_gpus, reserve
from milepost.core.settings import get_settings
from milepost.v1 import types_pb2

_log = logging.getLogger(__name__)


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


def gpus(visible: str | None = None) -> list[types_pb2.Gpu]:
    """The NVIDIA GPUs this agent may use, in the order CUDA numbers them in its process
    (``cuda:0``, ``cuda:1``...); none when nvidia-smi is absent or fails.

    nvidia-smi lists every GPU of the node in PCI bus order, whatever CUDA_VISIBLE_DEVICES
    says. ``visible`` is the agent's own CUDA_VISIBLE_DEVICES (None: unset): when set it keeps
    the GPUs it names, by nvidia-smi index or by UUID (``GPU-...``, a prefix will do), in its
    order, up to the first entry that names no GPU of the node, as CUDA reads it (so "" and
    "-1" leave none). Indexes are read in PCI bus order, which ``probe`` sets for the process."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=get_settings().gpu_probe_timeout_s, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    found: list[tuple[str, types_pb2.Gpu]] = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            mib = int(parts[3]) if parts[3].isdigit() else 0
            found.append((parts[1], types_pb2.Gpu(index=int(parts[0]), name=parts[2], memory_bytes=mib << 20)))
    if visible is None:
        return [gpu for _, gpu in found]
    chosen: list[types_pb2.Gpu] = []
    for entry in (e.strip() for e in visible.split(",")):
        named = next((gpu for uuid, gpu in found
                      if (entry.isdigit() and int(entry) == gpu.index) or (entry.startswith("GPU-") and uuid.startswith(entry))),
                     None)
        if named is None or named in chosen:
            break
        chosen.append(named)
    return chosen


def probe() -> types_pb2.Resources:
    """This node's resources as the agent may use them. It also makes the process number its
    GPUs as nvidia-smi does (CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA's own default is fastest
    first), before any engine starts CUDA, so that ``cuda:N`` is the GPU ``gpus`` lists N-th."""
    order = os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if order != "PCI_BUS_ID":
        _log.warning("CUDA_DEVICE_ORDER=%s: this agent numbers GPUs in PCI bus order, as nvidia-smi does; a GPU "
                     "replica may run on another GPU than the one reported (unset it, or set PCI_BUS_ID)", order)
    return types_pb2.Resources(cpu_cores=cpu_cores(), memory_bytes=memory_bytes(),
                               gpus=gpus(os.environ.get("CUDA_VISIBLE_DEVICES")))


class GpuAssigner:
    """Which of this node's GPUs each replica runs on. The agent picks, not the engine, so
    that replicas that each ask for a GPU land on different GPUs of a multi-GPU node
    rather than all on GPU 0.

    A replica asking for ``count`` GPUs with ``memory_bytes`` on each holds the ``count``
    GPUs that have that much unreserved and host the fewest replicas (then the most free
    memory, then the lower index: milepost.core.requirements.pick_gpus, the rule the
    coordinator places by) until it is released; its device is the first of them,
    "cuda:N", N its place in ``gpus`` (CUDA's number for it in this process; an engine
    runs a replica on one device). A replica naming no memory may go
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
            return f"cuda:{self._ordinal(held[0][0])}"

    def _ordinal(self, index: int) -> int:
        """The CUDA device number in this process of the GPU nvidia-smi numbers ``index``:
        its place in the list of the GPUs the agent may use (``gpus``)."""
        listed = [g if isinstance(g, int) else g.index for g in self._gpus()]
        return listed.index(index)

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
