"""The native engine: bundles of flavor scoring_core, run by the compiled scoring core.

It serves online and scores datasets in this process (Engine.score_dataset's
streaming default: one record batch at a time through the compiled kernels).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel, StageSpec
from milepost.core.deadlines import Deadline, check
from milepost.core.errors import InvalidArgument, Unavailable
from milepost.core.settings import get_settings
from milepost.core.tensor_codec.datatypes import with_matrix_name
from scoring_core.drift import LiveWindow
from scoring_core.explain import explain_rows

if TYPE_CHECKING:
    import numpy as np

    from scoring_core.model import CompiledModel


class NativeModel(LoadedModel):
    platform = "milepost_scoring_core"
    scores_inline = True  # numba kernels on this CPU: no I/O, no locks held by others

    def __init__(self, compiled: CompiledModel) -> None:
        self._compiled: CompiledModel | None = compiled
        # A request's matrix may go by the model's own input name (an ONNX graph's, lineage "input") as well as "input".
        self.input_schema = with_matrix_name(compiled.input_schema, (compiled.metadata.get("lineage") or {}).get("input"))
        self.output_schema = compiled.output_schema
        self.version = compiled.version or ""  # loaded bundles always have one
        self._feature_names = list(compiled.feature_names)
        # Live counts against the training distribution, when the bundle carries one.
        baseline = compiled.metadata.get("drift_baseline")
        settings = get_settings()
        self.drift: LiveWindow | None = (LiveWindow(baseline, rows=settings.drift_window_rows, seconds=settings.drift_window_s,
                                                    budget=settings.drift_budget) if baseline else None)

    @property
    def feature_names(self) -> list[str]:
        return list(self._feature_names)

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        compiled = self._compiled  # one read: a close() racing this call lets it finish
        if compiled is None:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        check(deadline, "scoring")
        return self._drift_counted(compiled.predict_arrow, batch)

    def predict_matrix(self, X: np.ndarray) -> np.ndarray | None:
        compiled = self._compiled  # one read, as in predict
        if compiled is None or not compiled.scores_matrices:
            return None  # unloaded (predict says so), or string columns
        return self._drift_counted(compiled.score_matrix, X)

    def _drift_counted(self, score: Callable[[Any], Any], inputs: Any) -> Any:
        """``score(inputs)``, offered with its inputs and time to the drift window, if any."""
        drift = self.drift
        if drift is None:
            return score(inputs)
        started = time.perf_counter()
        out = score(inputs)
        drift.offer(inputs, out, time.perf_counter() - started)
        return out

    def explain(self, batch: pa.RecordBatch, *, top: int = 3) -> tuple[Any, list[Any]]:
        """Contributions to the output margin for ``batch`` and one explanation a row
        (scoring_core.explain.explain_rows); FailedPrecondition for a model that has none."""
        compiled = self._compiled
        if compiled is None:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        return explain_rows(compiled, batch, top=top)

    def close(self) -> None:
        """Drop the compiled weights; calls already running finish with them."""
        self._compiled = None


class NativeEngine(Engine):
    name = "native"
    flavors = ("scoring_core",)

    def info(self) -> EngineInfo:
        try:
            numba_version = version("numba")
        except PackageNotFoundError:
            return EngineInfo(self.name, "", False, "numba is not installed", flavors=self.flavors)
        return EngineInfo(self.name, f"numba {numba_version}", True, devices=("cpu",), flavors=self.flavors)

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        import scoring_core

        if deployment.device != "cpu" and not deployment.device.startswith("cuda"):
            raise InvalidArgument(
                f"device: the native engine runs on 'cpu' or 'cuda:N', deployment {deployment.deployment_id!r} asks for "
                f"{deployment.device!r}"
            )
        if deployment.half:
            raise InvalidArgument("half: half precision is for GPU engines; the native engine scores in float32/float64")
        # On "cuda:N" the same model with its stages on that GPU (scoring_core.cuda), same interface.
        return NativeModel(scoring_core.load(bundle_dir, version=deployment.version or None).to(deployment.device))

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """"training": ``fn(table, **params)`` on the Parquet at ``inputs["data"]`` read into
        one Arrow table in this process (data that fits one node; larger data trains on
        Spark or Ray); the result becomes a bundle at ``inputs["output"]``. Other kinds as
        every engine runs them."""
        if stage.kind != "training":
            return super().run_stage(stage, inputs)
        import pyarrow.parquet as pq

        from engines import stages

        data = stages.training_data(stage, inputs)
        fn = stages.resolve_entry(stage)
        table = pq.read_table(data)
        return stages.save_trained(fn(table, **stage.params), stages.output_dir(stage, inputs), inputs.get("lineage"))
