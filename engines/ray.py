"""The ray engine: dataset scoring with Ray Data, online replicas as Ray actors.

``score_dataset`` scores the Parquet dataset with Ray Data ``map_batches`` over an
actor pool: each actor loads the compiled model once (the packed bundle travels
through the object store, put there once per job); the work items are the source's
row groups, which each actor reads, scores a batch at a time and writes as its own
part file, named by its place in the dataset. The sink therefore reads back in source
order without Ray having to preserve order, and the features never pass through the
object store. Options: ``address``, ``concurrency`` (actors), ``num_cpus`` (per
actor; the scoring kernels use that many threads).

``load`` starts ``replicas`` actors that each hold the model; the returned
LoadedModel's predict sends the batch to one of them (round robin), so one agent can
serve an endpoint from a Ray cluster. Ask for it by engine name: the native engine
stays the default for scoring_core bundles.

The cluster is ``address`` (an option, the engine's, or the ``ray_address`` setting,
$MILEPOST_RAY_ADDRESS): when none is given a local Ray is started once per process
(``ray_local_cpus`` CPUs, 2 by default; no dashboard). Actors and workers import milepost, so it must be installed on the
cluster's nodes.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
import threading
import time
import uuid
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from engines import parquet_io
from engines.base import DatasetJob, DeploymentSpec, Engine, EngineInfo, JobResult, LoadedModel, Progress, StageSpec
from engines.shipped_bundle import ShippedBundle
from milepost.core import deadlines
from milepost.core.deadlines import Deadline
from milepost.core.errors import DataLoss, DeadlineExceeded, FailedPrecondition, InvalidArgument, MilepostError, Unavailable
from milepost.core.settings import get_settings

_CLOSE_WAIT_S = 30.0
_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}

_lock = threading.Lock()


def _settle_fsspec_http() -> None:
    """Ray Data asks, from several threads at once, whether a filesystem is fsspec's HTTP
    one, importing ``fsspec.implementations.http`` to find out. Without aiohttp that
    import fails, and failing imports racing in threads let one thread see the
    half-imported module: an ImportError Ray does not catch (it expects
    ModuleNotFoundError), failing the job. Failing the import once, here, and recording
    the failure in sys.modules makes every later attempt a plain ModuleNotFoundError."""
    try:
        import fsspec.implementations.http  # noqa: F401 - imported only to learn whether it imports
    except ModuleNotFoundError:
        sys.modules.setdefault("fsspec.implementations.http", None)  # type: ignore[arg-type]  # None: "cannot import"
    except ImportError:
        pass


def connect(address: str = "") -> None:
    """Join the Ray cluster at ``address``, or start a local one, once per process.
    A process already connected stays on its cluster."""
    import ray

    _settle_fsspec_http()
    with _lock:
        if ray.is_initialized():
            return
        data_log = logging.getLogger("ray.data")
        if data_log.level == logging.NOTSET:  # Ray Data narrates every job at INFO; the caller has its own progress
            data_log.setLevel(logging.WARNING)
        runtime_env = {"env_vars": dict(_WORKER_ENV)}
        if address:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        else:
            ray.init(num_cpus=get_settings().ray_local_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env=runtime_env, configure_logging=True, logging_level=logging.ERROR)


def shutdown() -> None:
    """Disconnect from (or stop the local) Ray."""
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()


def _set_threads(num_cpus: float) -> None:
    import scoring_core

    scoring_core.set_num_threads(max(1, int(num_cpus)))


class _PieceWriter:
    """The map_batches callable, one per actor of the pool: it holds the loaded model and,
    for each piece (a row group of the source) it is handed, scores it and writes the
    piece's own part file, named by its position so that sorted names are source order."""

    def __init__(self, version: str, flavor: str, archive: Any, source: str, sink: str, keep: list[str],
                 batch_rows: int, out_schema: pa.Schema, num_cpus: float) -> None:
        import ray

        from engines import shipped_bundle

        _set_threads(num_cpus)
        # Ray Data hands constructor kwargs over as they are: the archive is an object ref, fetched once here.
        self.model = shipped_bundle.load_model(version, flavor, archive=ray.get(archive))
        self.source, self.sink, self.keep = source, sink, keep
        self.batch_rows, self.out_schema = batch_rows, out_schema

    def __call__(self, pieces: pa.Table) -> pa.Table:
        import pyarrow.parquet as pq

        from engines.parquet_stream import scored_batches

        fs, _ = parquet_io.resolve(self.source)
        sink_fs, sink_dir = parquet_io.resolve(self.sink)
        written = []
        for index, path, row_group in zip(pieces.column("piece").to_pylist(), pieces.column("path").to_pylist(),
                                          pieces.column("row_group").to_pylist()):
            name = f"part-{index:06d}.parquet"
            partial = f"{sink_dir}/.{name}.{uuid.uuid4().hex}"  # a retried task rewrites the piece whole
            rows = 0
            with pq.ParquetWriter(partial, self.out_schema, filesystem=sink_fs) as writer:
                for batch in scored_batches(self.model, fs, path, [row_group], self.keep, self.batch_rows,
                                            self.out_schema):
                    writer.write_batch(batch)
                    rows += batch.num_rows
            sink_fs.move(partial, f"{sink_dir}/{name}")
            written.append(rows)
        return pa.table({"piece": pieces.column("piece"), "rows": pa.array(written, pa.int64())})


class _Replica:
    """An online replica: a Ray actor holding one loaded model."""

    def __init__(self, version: str, flavor: str, archive: bytes, num_cpus: float) -> None:
        from engines import shipped_bundle

        _set_threads(num_cpus)
        self.model = shipped_bundle.load_model(version, flavor, archive=archive)

    def predict(self, batch: pa.RecordBatch, seconds_left: float | None = None) -> pa.RecordBatch:
        """Score in the actor; the deadline travels as seconds left, since clocks are per host."""
        return self.model.predict(batch, deadlines.after(seconds_left))

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

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        actors = self.actors
        if not actors:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        if not isinstance(batch, (pa.RecordBatch, pa.Table)):
            raise InvalidArgument(f"predict takes a pyarrow RecordBatch, got {type(batch).__name__}")
        deadlines.check(deadline, "scoring")
        actor = actors[next(self._next) % len(actors)]
        scored = actor.predict.remote(batch, deadlines.remaining(deadline))
        try:
            left = deadlines.remaining(deadline)
            return ray.get(scored, timeout=None if left is None else max(0.0, left))
        except GetTimeoutError as err:
            ray.cancel(scored)
            raise DeadlineExceeded(f"deadline passed while a Ray replica of model {self.version[:12]} scored") from err
        except RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, MilepostError):
                raise type(cause)(cause.message) from err
            raise
        except RayActorError as err:
            raise Unavailable(f"the Ray replica of model {self.version[:12]} is gone: {err}") from err

    def close(self) -> None:
        """Kill the actors and wait until they are gone, so that their CPUs and memory are
        back with the cluster when close returns (ray.kill itself only asks)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        with self._lock:
            actors, self.actors = self.actors, []
        for actor in actors:
            ray.kill(actor, no_restart=True)
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for actor in actors:
            while time.monotonic() < deadline:
                try:
                    ray.get(actor.ready.remote(), timeout=max(0.1, deadline - time.monotonic()))
                except (RayActorError, GetTimeoutError):
                    break
                time.sleep(0.05)


class RayEngine(Engine):
    name = "ray"
    flavors = ("scoring_core",)

    def __init__(self, address: str | None = None, replicas: int = 1, actor_cpus: float = 1.0) -> None:
        if replicas < 1:
            raise InvalidArgument(f"replicas must be >= 1, got {replicas}")
        self._address = address
        self.replicas = replicas
        self.actor_cpus = actor_cpus

    @property
    def address(self) -> str:
        """The cluster this engine joins: its own, else the ``ray_address`` setting (empty: a local Ray)."""
        return get_settings().ray_address if self._address is None else self._address

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
        actors: list[Any] = [remote.remote(shipped.version, shipped.flavor, archive, self.actor_cpus)  # ActorHandles
                             for _ in range(self.replicas)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except Exception:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise
        return RayReplicas(actors, local.input_schema, local.output_schema, shipped.version)

    def score_dataset(self, bundle_dir: Path, job: DatasetJob, progress: Progress | None = None) -> JobResult:
        """Score ``job`` on the Ray cluster: the source's row groups are the work items of
        a Ray Data ``map_batches`` over an actor pool; each actor reads its row groups,
        scores them and writes one part file per row group (``part-<n>.parquet``, n the
        row group's place in the dataset), so the sink reads back in source order
        whatever order the pieces finished in. Source and sink must be on storage the
        actors can reach. Progress counts the rows of finished pieces."""
        import pyarrow.fs as pafs
        import ray
        import ray.data

        from engines import shipped_bundle
        from engines.parquet_stream import staging_name

        started = time.perf_counter()
        unknown = set(job.options) - {"address", "concurrency", "num_cpus"}
        if unknown:
            raise InvalidArgument(f"options: the ray engine takes 'address', 'concurrency' and 'num_cpus', not {sorted(unknown)}")
        shipped = ShippedBundle.pack(Path(bundle_dir), flavors=self.flavors)
        parquet_io.check_sink_free(job.sink)
        schema = parquet_io.dataset_schema(job.source)
        model = shipped_bundle.load_model(shipped.version, shipped.flavor, archive=shipped.archive)
        parquet_io.check_columns(schema, job.source, list(model.input_schema.names), job.keep)
        out_schema = parquet_io.output_schema(schema, job.keep, model.output_schema)
        pieces = parquet_io.row_group_pieces(job.source)

        connect(str(job.options.get("address", self.address)))
        cpus = float(ray.cluster_resources().get("CPU", 1))
        num_cpus = float(job.options.get("num_cpus", 1))
        # The actors read and write for themselves: no other task needs a CPU, the pool may have them all.
        concurrency = int(job.options.get("concurrency", 0)) or max(1, int(cpus // max(num_cpus, 1e-9)))
        if num_cpus * concurrency > cpus:
            raise FailedPrecondition(f"concurrency: {concurrency} actors x {num_cpus} CPUs exceed the cluster's {cpus:g} CPUs")

        sink_fs, sink_path = parquet_io.resolve(job.sink)
        local = isinstance(sink_fs, pafs.LocalFileSystem)
        staging = staging_name(sink_path) if local else sink_path
        sink_fs.create_dir(staging, recursive=True)
        staging_uri = staging if local else job.sink
        rows = 0
        try:
            if not pieces:  # a dataset without rows still gets a (schema-only) part file
                _write_empty(sink_fs, f"{staging}/part-000000.parquet", out_schema)
            else:
                items = ray.data.from_items(
                    [{"piece": i, "path": path, "row_group": group} for i, (path, group, _) in enumerate(pieces)],
                    override_num_blocks=len(pieces),
                )
                items.context.enable_progress_bars = False
                scored = items.map_batches(
                    _PieceWriter,
                    fn_constructor_kwargs={
                        "version": shipped.version, "flavor": shipped.flavor, "archive": ray.put(shipped.archive),
                        "source": job.source, "sink": staging_uri, "keep": list(job.keep),
                        "batch_rows": job.batch_rows, "out_schema": out_schema, "num_cpus": num_cpus,
                    },
                    batch_format="pyarrow", batch_size=1, concurrency=concurrency, num_cpus=num_cpus,
                )
                for done in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                    rows += sum(cast(pa.Table, done).column("rows").to_pylist())
                    if progress is not None:
                        progress(rows)
            if local:
                Path(staging).rename(sink_path)
        except BaseException:
            if local:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        return JobResult(rows=rows, seconds=time.perf_counter() - started, sink=job.sink, engine=self.name)

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """"training": ``fn(dataset, **params)`` on a Ray Dataset of ``inputs["data"]``
        (Parquet); its result becomes a bundle at ``inputs["output"]``. "custom":
        ``fn(inputs, **params) -> dict`` with Ray connected.
        ``params["address"]`` picks the cluster; a training result becomes a bundle with
        ``inputs["lineage"]`` in its metadata."""
        from dataclasses import replace

        import ray.data

        from engines import stages

        params = {k: v for k, v in stage.params.items() if k != "address"}
        connect(str(stage.params.get("address", self.address)))
        if stage.kind == "custom":
            return stages.run_custom(replace(stage, params=params), inputs)
        fn = stages.resolve_entry(stage)
        data = stages.training_data(stage, inputs)
        dest = stages.output_dir(stage, inputs)
        fs, _ = parquet_io.resolve(data)
        ds = ray.data.read_parquet(parquet_io.parquet_files(data), filesystem=fs)
        return stages.save_trained(fn(ds, **params), dest, inputs.get("lineage"))


def _write_empty(fs: Any, path: str, schema: pa.Schema) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, schema, filesystem=fs):
        pass
