"""The engine adapter interface every engine implements.

An engine turns a verified bundle directory into a LoadedModel whose predict
takes and returns Arrow record batches, scores Parquet datasets into Parquet
datasets (``score_dataset``), and runs pipeline stages (``run_stage``).
Micro-batching, remote proxies and routing wrap LoadedModels from the outside;
engines know nothing of them, nor of protobuf.

The dataclasses here are the messages engines exchange with the agent and the
CLI: what to serve (DeploymentSpec), what to score offline (DatasetJob and its
JobResult), what stage to run (StageSpec).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from milepost.core.deadlines import Deadline
from milepost.core.errors import DataLoss, InvalidArgument, Unavailable, Unimplemented
from milepost.core.settings import DEFAULT_BATCH_ROWS

if TYPE_CHECKING:
    import numpy as np

    from scoring_core.drift import LiveWindow

_Held = TypeVar("_Held")
# Called with the number of rows scored so far, as engines make progress.
Progress = Callable[[int], None]

# Batch scoring is not a stage kind here: the agent runs those stages through score_dataset.
STAGE_KINDS = ("training", "custom")


@dataclass(frozen=True)
class EngineInfo:
    """An engine as found on this node: usable, or not and why not.

    ``flavors`` are the bundle flavors it runs; ``online`` says whether it serves
    requests (load/predict) or only scores datasets and runs stages.
    """

    name: str
    version: str
    available: bool
    reason: str = ""
    devices: tuple[str, ...] = field(default_factory=tuple)
    flavors: tuple[str, ...] = field(default_factory=tuple)
    online: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    """What the agent was asked to run; engines read what concerns them.

    ``device`` ("cpu", "cuda", "cuda:N") and ``half`` matter to engines that run on
    accelerators (torch); ``engine`` names an engine asked for explicitly (empty: the
    flavor's default engine).
    """

    deployment_id: str
    endpoint: str
    model: str
    version: str
    device: str = "cpu"
    half: bool = False
    engine: str = ""


@dataclass(frozen=True)
class DatasetJob:
    """Score the Parquet dataset at ``source`` into a new Parquet dataset at ``sink``.

    ``source`` and ``sink`` are local paths or URIs (file://, or what the engine's
    filesystem layer reads); ``source`` is a file or a directory of files, read in
    sorted path order. The output holds the ``keep`` columns of the source (an id,
    say) followed by the model's outputs, row for row in source order.
    ``batch_rows`` bounds the rows scored per call (and so the memory held);
    ``options`` are engine specific (Spark's ``master``, Ray's ``address``...).
    """

    source: str
    sink: str
    batch_rows: int = DEFAULT_BATCH_ROWS
    keep: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.source:
            raise InvalidArgument("DatasetJob.source is required")
        if not self.sink:
            raise InvalidArgument("DatasetJob.sink is required")
        if isinstance(self.batch_rows, bool) or not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise InvalidArgument(f"DatasetJob.batch_rows must be a positive integer, got {self.batch_rows!r}")
        if isinstance(self.keep, str):
            raise InvalidArgument("DatasetJob.keep must be a sequence of column names, not one string")
        object.__setattr__(self, "keep", tuple(self.keep))
        if len(set(self.keep)) != len(self.keep):
            raise InvalidArgument(f"DatasetJob.keep names a column twice: {list(self.keep)}")


@dataclass(frozen=True)
class JobResult:
    """What a dataset job did: rows written to ``sink`` in ``seconds`` by ``engine``."""

    rows: int
    seconds: float
    sink: str
    engine: str


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage for an engine to run.

    ``kind`` is "training" (produces a model bundle) or "custom"; a batch scoring stage
    is a DatasetJob for ``Engine.score_dataset``. ``entry`` says what runs: a
    "module:function" (importable, or inside the code bundle at ``bundle_dir`` for the
    python engine) or a Python callable when the stage is built in-process. ``params``
    are passed to it.
    """

    name: str
    kind: str
    entry: str | Callable[..., Any] = ""
    bundle_dir: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("StageSpec.name is required")
        if self.kind not in STAGE_KINDS:
            raise InvalidArgument(f"StageSpec.kind must be one of {STAGE_KINDS}, got {self.kind!r}")


class LoadedModel(ABC):
    """A model ready to score. predict is thread-safe; close releases what load took."""

    input_schema: pa.Schema
    output_schema: pa.Schema
    version: str
    platform: str
    # Live counts against the training distribution (scoring_core.drift), when its bundle has one.
    drift: LiveWindow | None = None
    # Whether predict only computes (no I/O, no waiting on other threads), so that a small batch
    # may be scored on a server's event loop (milepost.core.inline; the MicroBatcher decides).
    scores_inline: bool = False

    @abstractmethod
    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        """Score ``batch``. ``deadline`` (a time.monotonic() instant, or None) is when the caller
        stops waiting: a call whose deadline has passed raises DeadlineExceeded instead of
        scoring (milepost.core.deadlines.check)."""

    def predict_matrix(self, X: np.ndarray) -> np.ndarray | None:
        """The (n, n_outputs) scores of a float32 matrix ``X`` of this model's features, the
        values of the one output column ``predict`` would answer for the tensor column of
        ``X``; None where this model takes Arrow only (then ``predict`` serves it). The
        matrix lane (agent.dataplane) calls it for the common one-matrix request."""
        return None

    def close(self) -> None:
        return None


class Engine(ABC):
    name: str

    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel: ...

    def score_dataset(self, bundle_dir: Path, job: DatasetJob, progress: Progress | None = None) -> JobResult:
        """Score ``job.source`` into ``job.sink`` with the model at ``bundle_dir``.

        The default streams record batches through this engine's own ``load`` and
        ``predict`` in this process: bounded memory, source row order. Engines that
        distribute the work (Spark, Ray) override it.
        """
        from engines.parquet_stream import stream_score

        unknown = set(job.options) - {"device", "half"}
        if unknown:
            raise InvalidArgument(f"options: engine {self.name!r} takes 'device' and 'half', not {sorted(unknown)}")
        model = self.load(Path(bundle_dir), dataset_deployment(bundle_dir, job))
        try:
            return stream_score(model, job, engine=self.name, progress=progress)
        finally:
            model.close()

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run a training or custom pipeline stage; engines that train or run user code
        override this. (Batch scoring stages are dataset jobs: ``score_dataset``.)"""
        raise Unimplemented(
            f"engine {self.name!r} does not run {stage.kind} stages (stage {stage.name!r}); "
            "see each engine's run_stage for the kinds it runs"
        )


def still_loaded(held: _Held | None, version: str) -> _Held:
    """What a LoadedModel's predict holds (read once, so that a close() racing the call lets
    it finish), or Unavailable once the model was closed."""
    if held is None:
        raise Unavailable(f"model {version[:12]} was unloaded; retry on another replica")
    return held


def arrow_batch(batch: Any) -> pa.RecordBatch:
    """The one RecordBatch predict scores (a Table's chunks combined); anything else is the caller's error."""
    from scoring_core.arrow_input import as_batch

    if not isinstance(batch, (pa.RecordBatch, pa.Table)):
        raise InvalidArgument(f"predict takes a pyarrow RecordBatch, got {type(batch).__name__}")
    return as_batch(batch)


def verified_bundle(bundle_dir: Path, deployment: DeploymentSpec) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """(version, files, manifest) of the bundle an engine loads: every file checked against
    its hash, the version against the one the deployment names (DataLoss otherwise)."""
    from scoring_core import bundle

    version, files = bundle.read_bundle(bundle_dir)
    if deployment.version and deployment.version != version:
        raise DataLoss(f"the bundle has version {version[:12]}, expected {deployment.version[:12]}")
    if bundle.MANIFEST not in files:
        raise InvalidArgument(f"the bundle has no {bundle.MANIFEST}")
    return version, files, bundle.parse_manifest(files[bundle.MANIFEST])


def dataset_deployment(bundle_dir: Path | str, job: DatasetJob) -> DeploymentSpec:
    """The DeploymentSpec a dataset job loads its model with: the bundle's own
    version (verified at load), device and precision from the job's options."""
    return DeploymentSpec(
        deployment_id=f"dataset:{Path(bundle_dir).name}",
        endpoint="",
        model=Path(bundle_dir).name,
        version="",
        device=str(job.options.get("device", "cpu")),
        half=bool(job.options.get("half", False)),
    )
