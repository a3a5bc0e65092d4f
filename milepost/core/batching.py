"""Batching settings of a deployment: the one shape from the CLI to the agent's micro-batcher.

A field of 0 asks for the default, so what a user did not set stays unset in the
store and on the wire (a later change of default reaches old deployments). The
``effective_*`` properties are what the micro-batcher runs with. Validation
happens here, when the settings are built, so a bad value is refused at deploy
time with the field named, not when an agent loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from milepost.core.errors import InvalidArgument

if TYPE_CHECKING:  # engines use these settings and never load protobuf
    from milepost.v1 import types_pb2

DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_QUEUE_ROWS = 1 << 16
MAX_DELAY_LIMIT_US = 10_000_000


@dataclass(frozen=True)
class BatchingSettings:
    """Defaults batch opportunistically: no added wait, requests that queued while the
    model was busy run together. A positive max_delay trades latency for fuller batches."""

    max_batch_size: int = 0
    max_delay_us: int = 0
    max_queue_rows: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise InvalidArgument(f"max_batch_size must be >= 1 (or 0 for the default), got {self.max_batch_size}")
        if not 0 <= self.max_delay_us <= MAX_DELAY_LIMIT_US:
            raise InvalidArgument(f"max_delay must be between 0 and 10 s, got {self.max_delay_us / 1e6:g} s")
        if self.max_queue_rows < 0:
            raise InvalidArgument(f"max_queue_rows must be >= 1 (or 0 for the default), got {self.max_queue_rows}")
        if self.max_queue_rows and self.max_queue_rows < self.effective_max_batch_size:
            raise InvalidArgument(
                f"max_queue_rows ({self.max_queue_rows}) must be at least max_batch_size "
                f"({self.effective_max_batch_size})"
            )

    @classmethod
    def from_ms(cls, max_batch_size: int = 0, max_delay_ms: float = 0.0, max_queue_rows: int = 0) -> BatchingSettings:
        """As people write them (the CLI and the client take milliseconds)."""
        return cls(max_batch_size, round(max_delay_ms * 1000), max_queue_rows)

    @property
    def effective_max_batch_size(self) -> int:
        return self.max_batch_size or DEFAULT_MAX_BATCH_SIZE

    @property
    def effective_max_delay_s(self) -> float:
        return self.max_delay_us / 1e6

    @property
    def effective_max_queue_rows(self) -> int:
        return self.max_queue_rows or max(DEFAULT_MAX_QUEUE_ROWS, self.effective_max_batch_size)

    def to_proto(self) -> types_pb2.Batching:
        from milepost.v1 import types_pb2

        return types_pb2.Batching(
            max_batch_size=self.max_batch_size, max_delay_us=self.max_delay_us, max_queue_rows=self.max_queue_rows
        )

    @classmethod
    def from_proto(cls, message: types_pb2.Batching) -> BatchingSettings:
        return cls(message.max_batch_size, message.max_delay_us, message.max_queue_rows)
