"""What one replica of a deployment (or one pipeline stage) needs from an agent.

One shape from the CLI flags to the placement filter: the engine, per-replica
CPU, memory, GPUs and GPU memory, and the labels an agent must carry. Zero asks
for nothing. Values are checked when the requirements are built, so a bad request
is refused with the field named before anything is placed.

The rule that puts a replica on one of a node's GPUs (``pick_gpus``) is here too:
the agent assigns with it and reports the result (``GpuRoom`` in its heartbeats); the
coordinator places from that report with the same rule, counting the replicas it
placed since, so both agree on which GPU has room.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from milepost.core.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Mapping

    from milepost.v1 import types_pb2


@dataclass(frozen=True)
class Requirements:
    engine: str = ""
    cpu: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0
    selector: dict[str, str] = field(default_factory=dict)
    gpu_memory_bytes: int = 0  # on each of its GPUs; 0: the whole GPU

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpu) or min(self.cpu, self.memory_bytes, self.gpus, self.gpu_memory_bytes) < 0:
            raise InvalidArgument(
                "resources.cpu, resources.memory_bytes, resources.gpus and resources.gpu_memory_bytes must be "
                f"finite and >= 0, got cpu={self.cpu}, memory_bytes={self.memory_bytes}, gpus={self.gpus}, "
                f"gpu_memory_bytes={self.gpu_memory_bytes}"
            )

    def with_engine(self, engine: str) -> Requirements:
        return replace(self, engine=engine, selector=dict(self.selector))

    def on_device(self, device: str, max_batch_size: int, crossover_rows: int) -> Requirements:
        """These requirements with ``device`` (ResourceRequest.device) resolved into GPUs.

        "auto" takes a GPU only for an endpoint whose batches can reach ``crossover_rows``
        (the gpu_crossover_rows setting): below it a GPU's launch and copy costs exceed
        its speed-up, so small-batch endpoints stay on CPU and leave the GPUs to work
        that gains from them. "cpu" refuses GPU asks rather than silently dropping them,
        and GPU memory with no GPU is refused too.
        """
        if device not in DEVICES:
            raise InvalidArgument(f"resources.device {device!r} is unknown; use one of {DEVICES[1:]} (or none)")
        if device == "auto":
            device = "gpu" if max_batch_size >= crossover_rows else "cpu"
            if device == "cpu":
                return replace(self, gpus=0, gpu_memory_bytes=0, selector=dict(self.selector))
        if device == "cpu" and (self.gpus or self.gpu_memory_bytes):
            raise InvalidArgument(
                f"resources.device is cpu but resources.gpus={self.gpus}, "
                f"gpu_memory_bytes={self.gpu_memory_bytes}: drop them or use --device gpu")
        if device == "gpu" and not self.gpus:
            return replace(self, gpus=1, selector=dict(self.selector))
        if self.gpu_memory_bytes and not self.gpus:
            raise InvalidArgument(
                f"resources.gpu_memory_bytes ({gib(self.gpu_memory_bytes)}) is memory on a GPU: ask for one too "
                "(--gpus 1 or --device gpu)")
        return self

    def to_proto(self) -> types_pb2.ResourceRequest:
        from milepost.v1 import types_pb2

        return types_pb2.ResourceRequest(
            cpu=self.cpu, memory_bytes=self.memory_bytes, gpus=self.gpus, gpu_memory_bytes=self.gpu_memory_bytes)

    @classmethod
    def from_proto(
        cls, resources: types_pb2.ResourceRequest, selector: Mapping[str, str], engine: str = "",
    ) -> Requirements:
        """From the wire, where the resources, the selector and the engine are sibling fields."""
        return cls(engine, resources.cpu, resources.memory_bytes, resources.gpus, dict(selector),
                   resources.gpu_memory_bytes)


# ResourceRequest.device: "" keeps what resources.gpus asks (the default, as before devices).
DEVICES = ("", "cpu", "gpu", "auto")


def stage_holder(run_id: str, stage: str) -> str:
    """The name a running pipeline stage holds GPUs under (GpuRoom.deployment_ids), the same
    on the agent that holds them and the coordinator that placed the stage."""
    return f"stage:{run_id}/{stage}"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


@dataclass(frozen=True)
class GpuRoom:
    """One GPU of a node: its memory and what the replicas on it reserve.

    A GPU replica that names no memory reserves the whole GPU. ``fits``: a request
    of ``memory_bytes`` (0: any GPU) has that much unreserved here. ``deployment_ids``:
    who holds it (a pipeline stage as "stage:RUN/STAGE"), so that the coordinator can
    tell which of its placements a report already counts.
    """

    index: int
    total_bytes: int
    reserved_bytes: int = 0
    replicas: int = 0
    deployment_ids: tuple[str, ...] = ()

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.reserved_bytes)

    def fits(self, memory_bytes: int) -> bool:
        return memory_bytes <= self.free_bytes

    def taken(self, memory_bytes: int, deployment_id: str = "") -> GpuRoom:
        return replace(self, reserved_bytes=self.reserved_bytes + (memory_bytes or self.total_bytes),
                       replicas=self.replicas + 1,
                       deployment_ids=(*self.deployment_ids, deployment_id) if deployment_id else self.deployment_ids)

    def released(self, memory_bytes: int, holder: str) -> GpuRoom:
        """This GPU without what ``holder`` (one of ``deployment_ids``) took: ``taken`` undone."""
        if holder not in self.deployment_ids:
            return self
        return replace(self, reserved_bytes=max(0, self.reserved_bytes - (memory_bytes or self.total_bytes)),
                       replicas=max(0, self.replicas - 1),
                       deployment_ids=tuple(d for d in self.deployment_ids if d != holder))

    def describe(self) -> str:
        """E.g. "gpu 1: 30.00 GiB of 80.00 GiB free"."""
        return f"gpu {self.index}: {gib(self.free_bytes)} of {gib(self.total_bytes)} free"

    def to_proto(self) -> types_pb2.GpuRoom:
        from milepost.v1 import types_pb2

        return types_pb2.GpuRoom(index=self.index, total_bytes=self.total_bytes, reserved_bytes=self.reserved_bytes,
                                 replicas=self.replicas, deployment_ids=self.deployment_ids)

    @classmethod
    def from_proto(cls, room: types_pb2.GpuRoom) -> GpuRoom:
        return cls(room.index, room.total_bytes, room.reserved_bytes, room.replicas, tuple(room.deployment_ids))


def pick_gpus(rooms: Sequence[GpuRoom], count: int, memory_bytes: int) -> tuple[int, ...] | None:
    """The ``count`` GPUs a replica reserving ``memory_bytes`` on each goes to: of those
    with room, the ones hosting the fewest replicas, then the most free memory, then the
    lower index. None when fewer than ``count`` have room."""
    fitting = sorted((r for r in rooms if r.fits(memory_bytes)), key=lambda r: (r.replicas, -r.free_bytes, r.index))
    return tuple(r.index for r in fitting[:count]) if count <= len(fitting) else None


def reserve(rooms: Sequence[GpuRoom], picked: Sequence[int], memory_bytes: int, deployment_id: str = "") -> list[GpuRoom]:
    """``rooms`` after a replica reserving ``memory_bytes`` took the ``picked`` GPUs."""
    return [r.taken(memory_bytes, deployment_id) if r.index in picked else r for r in rooms]
