"""The engine adapter interface every engine implements.

An engine turns a verified bundle directory into a LoadedModel whose predict
takes and returns Arrow record batches. Micro-batching, remote proxies and
routing wrap LoadedModels from the outside; engines know nothing of them, nor of
protobuf.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class EngineInfo:
    """An engine as found on this node: usable, or not and why not."""

    name: str
    version: str
    available: bool
    reason: str = ""
    devices: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DeploymentSpec:
    """What the agent was asked to run; engines read what concerns them."""

    deployment_id: str
    endpoint: str
    model: str
    version: str


class LoadedModel(ABC):
    """A model ready to score. predict is thread-safe; close releases what load took."""

    input_schema: pa.Schema
    output_schema: pa.Schema
    version: str
    platform: str

    @abstractmethod
    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...

    def close(self) -> None:
        return None


class Engine(ABC):
    name: str

    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel: ...
