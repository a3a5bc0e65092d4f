"""The ray engine: dataset scoring with Ray Data, online replicas as Ray actors.

``score_dataset`` reads the Parquet dataset with Ray Data and scores it with
``map_batches`` over an actor pool: each actor loads the compiled model once (the
packed bundle travels through the object store, put there once per job) and scores
``pyarrow`` batches; order is preserved and the output is written by Ray's Parquet
sink as ``part-<task>.parquet`` files. Options: ``address``, ``concurrency`` (actors),
``num_cpus`` (per actor; the scoring kernels use that many threads).

``load`` starts ``replicas`` actors that each hold the model; the returned
LoadedModel's predict sends the batch to one of them (round robin), so one agent can
serve an endpoint from a Ray cluster. Ask for it by engine name: the native engine
stays the default for scoring_core bundles.

The cluster is ``address`` (an option, the engine's, or $MILEPOST_RAY_ADDRESS): when
none is given a local Ray is started once per process (2 CPUs by default, no
dashboard). Actors and workers import milepost, so it must be installed on the
cluster's nodes.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

import pyarrow as pa

from engines import parquet_io
from engines.base import (
    DatasetJob, DeploymentSpec, Engine, EngineInfo, JobResult, LoadedModel, Progress, StageSpec,
    run_batch_scoring_stage,
)
from engines.shipped_bundle import ShippedBundle
from milepost.errors import DataLoss, FailedPrecondition, InvalidArgument, MilepostError, Unavailable

DEFAULT_ADDRESS = os.environ.get("MILEPOST_RAY_ADDRESS", "")
LOCAL_CPUS = int(os.environ.get("MILEPOST_RAY_LOCAL_CPUS", "2"))
_PROGRESS_POLL_S = 0.25
_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}

_lock = threading.Lock()


def connect(address: str = "") -> None:
    """Join the Ray cluster at ``address``, or start a local one, once per process.
    A process already connected stays on its cluster."""
    import ray

    with _lock:
        if ray.is_initialized():
            return
        runtime_env = {"env_vars": dict(_WORKER_ENV)}
        if address:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        else:
            ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                     configure_logging=True, logging_level="ERROR")


def shutdown() -> None:
    """Disconnect from (or stop the local) Ray."""
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()


def _set_threads(num_cpus: float) -> None:
    import scoring_core

    scoring_core.set_num_threads(max(1, int(num_cpus)))


class _BatchScorer:
    """The map_batches callable: one per actor of the pool, holding the loaded model."""

    def __init__(self, version: str, flavor: str, archive: Any, features: list[str], keep: list[str],
                 out_schema: pa.Schema, num_cpus: float, counter: Any) -> None:
        import ray

        from engines import shipped_bundle

        _set_threads(num_cpus)
        # Ray Data hands constructor kwargs over as they are: the archive is an object ref, fetched once here.
        self.model = shipped_bundle.load_model(version, flavor, archive=ray.get(archive))
        self.features, self.keep, self.out_schema, self.counter = features, keep, out_schema, counter

    def __call__(self, batch: pa.Table) -> pa.Table:
        scored = self.model.predict(pa.RecordBatch.from_arrays(
            [batch.column(n).combine_chunks() for n in self.features], names=self.features))
        columns = [batch.column(k) for k in self.keep] + list(scored.columns)
        self.counter.add.remote(batch.num_rows)
        return pa.Table.from_arrays(columns, schema=self.out_schema)


class _RowCounter:
    """Rows scored so far, added to by the scoring actors, read by the driver for progress."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


class _Replica:
    """An online replica: a Ray actor holding one loaded model."""

    def __init__(self, version: str, flavor: str, archive: bytes, num_cpus: float) -> None:
        from engines import shipped_bundle

        _set_threads(num_cpus)
        self.model = shipped_bundle.load_model(version, flavor, archive=archive)

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return self.model.predict(batch)

    def ready(self) -> bool:
        return True


class RayReplicas(LoadedModel):
    """A model served by Ray actors; predict goes to one of them, round robin."""

    platform = "milepost_ray"

    def __init__(self, actors: list[Any], input_schema: pa.Schema, output_schema: pa.Schema, version: str) -> None:
        self.actors = actors
        self.input_schema, self.output_schema, self.version = input_schema, output_schema, version
        self._next = itertools.count()
        self._lock = threading.Lock()

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        actors = self.actors
        if not actors:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        if not isinstance(batch, (pa.RecordBatch, pa.Table)):
            raise InvalidArgument(f"predict takes a pyarrow RecordBatch, got {type(batch).__name__}")
        actor = actors[next(self._next) % len(actors)]
        try:
            return ray.get(actor.predict.remote(batch))
        except RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, MilepostError):
                raise type(cause)(cause.message) from err
            raise
        except RayActorError as err:
            raise Unavailable(f"the Ray replica of model {self.version[:12]} is gone: {err}") from err

    def close(self) -> None:
        """Kill the actors (their CPUs and memory go back to the cluster)."""
        import ray

        with self._lock:
            actors, self.actors = self.actors, []
        for actor in actors:
            ray.kill(actor, no_restart=True)


class RayEngine(Engine):
    name = "ray"
    flavors = ("scoring_core",)

    def __init__(self, address: str | None = None, replicas: int = 1, actor_cpus: float = 1.0) -> None:
        if replicas < 1:
            raise InvalidArgument(f"replicas must be >= 1, got {replicas}")
        self.address = DEFAULT_ADDRESS if address is None else address
        self.replicas = replicas
        self.actor_cpus = actor_cpus

    def info(self) -> EngineInfo:
        try:
            ray_version = package_version("ray")
        except PackageNotFoundError:
            return EngineInfo(self.name, "", False, "ray is not installed (pip install 'milepost[ray]')",
                              flavors=self.flavors)
        try:
            package_version("pandas")
        except PackageNotFoundError:
            return EngineInfo(self.name, ray_version, False, "ray[data] is not installed (pandas is missing)",
                              flavors=self.flavors)
        return EngineInfo(self.name, ray_version, True, devices=("cpu",), flavors=self.flavors)

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        import ray

        from engines import shipped_bundle

        if deployment.device not in ("cpu", "auto") or deployment.half:
            raise InvalidArgument(f"device: ray replicas run on 'cpu', got {deployment.device!r} (half={deployment.half})")
        shipped = ShippedBundle.pack(Path(bundle_dir), flavors=self.flavors)
        if deployment.version and deployment.version != shipped.version:
            raise DataLoss(f"bundle {bundle_dir} has version {shipped.version}, expected {deployment.version}")
        local = shipped_bundle.load_model(shipped.version, shipped.flavor, archive=shipped.archive)
        connect(self.address)
        archive = ray.put(shipped.archive)
        remote = ray.remote(num_cpus=self.actor_cpus)(_Replica)
        actors = [remote.remote(shipped.version, shipped.flavor, archive, self.actor_cpus) for _ in range(self.replicas)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise
        return RayReplicas(actors, local.input_schema, local.output_schema, shipped.version)

    def score_dataset(self, bundle_dir: Path, job: DatasetJob, progress: Progress | None = None) -> JobResult:
        import ray
        import ray.data

        from engines import shipped_bundle

        started = time.perf_counter()
        unknown = set(job.options) - {"address", "concurrency", "num_cpus"}
        if unknown:
            raise InvalidArgument(f"options: the ray engine takes 'address', 'concurrency' and 'num_cpus', not {sorted(unknown)}")
        shipped = ShippedBundle.pack(Path(bundle_dir), flavors=self.flavors)
        parquet_io.check_sink_free(job.sink)
        files = parquet_io.parquet_files(job.source)
        fs, _ = parquet_io.resolve(job.source)
        schema = parquet_io.dataset_schema(job.source)
        model = shipped_bundle.load_model(shipped.version, shipped.flavor, archive=shipped.archive)
        features = list(model.input_schema.names)
        parquet_io.check_columns(schema, job.source, features, job.keep)
        out_schema = parquet_io.output_schema(schema, job.keep, model.output_schema)
        rows = parquet_io.count_rows(job.source)

        connect(str(job.options.get("address", self.address)))
        cpus = float(ray.cluster_resources().get("CPU", 1))
        num_cpus = float(job.options.get("num_cpus", 1))
        concurrency = int(job.options.get("concurrency", 0)) or max(1, int(cpus // max(num_cpus, 1e-9)) - 1)
        if num_cpus * concurrency > cpus:
            raise FailedPrecondition(
                f"concurrency: {concurrency} actors x {num_cpus} CPUs exceed the cluster's {cpus:g} CPUs"
            )
        counter = ray.remote(num_cpus=0)(_RowCounter).remote()
        columns = features + [k for k in job.keep if k not in features]
        context = ray.data.DataContext.get_current()
        kept_order, kept_progress = context.execution_options.preserve_order, context.enable_progress_bars
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        stop = threading.Event()
        watcher = threading.Thread(target=_report, args=(counter, progress, stop), daemon=True)
        try:
            ds = ray.data.read_parquet(files, filesystem=fs).select_columns(columns)
            scored = ds.map_batches(
                _BatchScorer,
                fn_constructor_kwargs={
                    "version": shipped.version, "flavor": shipped.flavor, "archive": ray.put(shipped.archive),
                    "features": features, "keep": list(job.keep), "out_schema": out_schema,
                    "num_cpus": num_cpus, "counter": counter,
                },
                batch_format="pyarrow", batch_size=job.batch_rows, concurrency=concurrency, num_cpus=num_cpus,
                zero_copy_batch=True,
            )
            if progress is not None:
                watcher.start()
            sink_fs, sink_path = parquet_io.resolve(job.sink)
            scored.write_parquet(sink_path, filesystem=sink_fs, filename_provider=_part_names())
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
            context.execution_options.preserve_order = kept_order
            context.enable_progress_bars = kept_progress
            ray.kill(counter)
        if progress is not None:
            progress(rows)
        return JobResult(rows=rows, seconds=time.perf_counter() - started, sink=job.sink, engine=self.name)

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """"training": ``fn(dataset, **params)`` on a Ray Dataset of ``inputs["data"]``
        (Parquet); its result becomes a bundle at ``inputs["output"]``. "custom":
        ``fn(inputs, **params) -> dict`` with Ray connected. "batch_scoring": score_dataset."""
        import ray.data

        from engines import stages

        if stage.kind == "batch_scoring":
            return run_batch_scoring_stage(self, stage, inputs)
        fn = stages.resolve_entry(stage)
        params = {k: v for k, v in stage.params.items() if k != "address"}
        connect(str(stage.params.get("address", self.address)))
        if stage.kind == "custom":
            outputs = fn(dict(inputs), **params)
            if not isinstance(outputs, dict):
                raise InvalidArgument(f"stage {stage.name!r}: a custom stage function must return a dict")
            return outputs
        if not inputs.get("data"):
            raise InvalidArgument(f"training stage {stage.name!r} needs inputs['data']: the Parquet training data")
        dest = stages.output_dir(stage, inputs)
        fs, _ = parquet_io.resolve(str(inputs["data"]))
        ds = ray.data.read_parquet(parquet_io.parquet_files(str(inputs["data"])), filesystem=fs)
        return stages.save_trained(fn(ds, **params), dest)


def _part_names() -> Any:
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        """part-<task index>-<write>: sorted names are the dataset's order."""

        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}-{write_uuid}.parquet"

    return PartNames(file_format="parquet")


def _report(counter: Any, progress: Progress, stop: threading.Event) -> None:
    import ray

    last = -1
    while not stop.wait(_PROGRESS_POLL_S):
        try:
            value = ray.get(counter.value.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort; the job's own errors surface elsewhere
            return
        if value != last:
            progress(value)
            last = value
