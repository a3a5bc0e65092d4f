"""What one replica of a deployment (or one pipeline stage) needs from an agent.

One shape from the CLI flags to the placement filter: the engine, per-replica
CPU, memory and GPUs, and the labels an agent must carry. Zero asks for
nothing. Values are checked when the requirements are built, so a bad request
is refused with the field named before anything is placed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpu) or min(self.cpu, self.memory_bytes, self.gpus) < 0:
            raise InvalidArgument(
                "resources.cpu, resources.memory_bytes and resources.gpus must be finite and >= 0, got "
                f"cpu={self.cpu}, memory_bytes={self.memory_bytes}, gpus={self.gpus}"
            )

    def with_engine(self, engine: str) -> Requirements:
        return Requirements(engine, self.cpu, self.memory_bytes, self.gpus, dict(self.selector))

    def to_proto(self) -> types_pb2.ResourceRequest:
        from milepost.v1 import types_pb2

        return types_pb2.ResourceRequest(cpu=self.cpu, memory_bytes=self.memory_bytes, gpus=self.gpus)

    @classmethod
    def from_proto(
        cls, resources: types_pb2.ResourceRequest, selector: Mapping[str, str], engine: str = "",
    ) -> Requirements:
        """From the wire, where the resources, the selector and the engine are sibling fields."""
        return cls(engine, resources.cpu, resources.memory_bytes, resources.gpus, dict(selector))
