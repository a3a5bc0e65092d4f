"""The native engine: bundles of flavor scoring_core, run by the compiled scoring core."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow as pa

from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel


class NativeModel(LoadedModel):
    platform = "milepost_scoring_core"

    def __init__(self, compiled) -> None:  # type: ignore[no-untyped-def]
        self._compiled = compiled
        self.input_schema = compiled.input_schema
        self.output_schema = compiled.output_schema
        self.version = compiled.version

    @property
    def feature_names(self) -> list[str]:
        return list(self._compiled.feature_names)

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return self._compiled.predict_arrow(batch)


class NativeEngine(Engine):
    name = "native"

    def info(self) -> EngineInfo:
        try:
            numba_version = version("numba")
        except PackageNotFoundError:
            return EngineInfo(self.name, "", False, "numba is not installed")
        return EngineInfo(self.name, f"numba {numba_version}", True, devices=("cpu",))

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        import scoring_core

        return NativeModel(scoring_core.load(bundle_dir, version=deployment.version))
