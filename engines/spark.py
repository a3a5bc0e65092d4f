"""The spark engine: dataset scoring and training stages on a Spark cluster.

``score_dataset`` runs the scoring core inside the executors through
``DataFrame.mapInArrow``:

- the bundle is packed once and shipped once per executor with
  ``SparkContext.addFile``; each Python worker unpacks and loads it on its first task
  and keeps it for later ones (engines.shipped_bundle), so no batch carries the model;
- the work is the source's Parquet row groups, listed in dataset order and split into
  contiguous partitions; each task reads its row groups with pyarrow, scores them a
  batch at a time and hands Arrow batches back to Spark, which writes them. Partition
  order is dataset order, so the output keeps the source's row order without a
  shuffle (Spark's own file scan packs files by size and would not);
- progress comes back through an accumulator.

Executors must be able to read the source (a shared or object-store path pyarrow
can open) and must have milepost installed, as the driver does. ``master`` is a
job option (default: the engine's, else the ``spark_master`` setting,
$MILEPOST_SPARK_MASTER, ``local[2]`` unless set); a
cluster URL (spark://, yarn, k8s://) works the same way. One SparkSession serves
the whole process.

``run_stage`` runs a user training function on a Spark DataFrame of the stage's
data and stores what it returns as a model bundle (engines.stages).

Spark does not serve online: ``load`` refuses, pointing at native or ray.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pyarrow as pa

from engines import parquet_io
from engines.base import DatasetJob, DeploymentSpec, Engine, EngineInfo, JobResult, LoadedModel, Progress, StageSpec
from engines.shipped_bundle import ShippedBundle
from milepost.core.errors import FailedPrecondition, InvalidArgument, Unimplemented
from milepost.core.settings import get_settings

_PROGRESS_POLL_S = 0.25
_CANCEL_WAIT_S = 10.0  # after Ctrl-C, how long the cancelled jobs may take to end before Spark is stopped

_session_lock = threading.Lock()
_shipped_dir: Path | None = None
_shipped: dict[str, str] = {}  # version -> file name registered with addFile


def java_found() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool((home and Path(home, "bin", "java").exists()) or shutil.which("java"))


def _running_session() -> Any:
    """The SparkSession of the SparkContext running in this process, or None."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is None:  # pyspark's own process-wide handle
        return None
    return SparkSession.builder.getOrCreate()


def session(master: str | None = None, conf: Mapping[str, str] | None = None) -> Any:
    """This process's SparkSession, started on first use (quiet, no UI), on ``master``
    (default: the ``spark_master`` setting).

    Spark allows one context per process: a session already running for another
    master is not replaced, and FailedPrecondition says which one holds the process.
    """
    from pyspark.sql import SparkSession

    master = master or get_settings().spark_master
    with _session_lock:
        running = _running_session()
        if running is not None:
            if running.sparkContext.master != master:
                raise FailedPrecondition(
                    f"master: this process already runs Spark on {running.sparkContext.master!r}; "
                    f"it cannot also use {master!r}"
                )
            return running
        if not java_found():
            raise FailedPrecondition("spark needs a Java runtime (set JAVA_HOME or put java on PATH)")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            SparkSession.builder.master(master).appName("milepost")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
        )
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        on_interrupt = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        spark = builder.getOrCreate()
        if on_interrupt is not None:
            # pyspark's own SIGINT handler calls the JVM from inside the signal handler, re-entering the
            # py4j call the main thread is waiting in: a page of py4j tracebacks. Ctrl-C raises
            # KeyboardInterrupt again, and _interruptible cancels and stops.
            signal.signal(signal.SIGINT, on_interrupt)
        spark.sparkContext.setLogLevel("ERROR")
        return spark


def stop_session() -> None:
    """Stop this process's SparkSession, if one runs."""
    with _session_lock:
        running = _running_session()
        if running is not None:
            running.stop()
        _shipped.clear()


def _ship(spark: Any, shipped: ShippedBundle) -> str:
    """Register the packed bundle with Spark once per version; the file name workers ask for."""
    global _shipped_dir
    with _session_lock:
        name = _shipped.get(shipped.version)
        if name is not None:
            return name
        if _shipped_dir is None:
            _shipped_dir = Path(tempfile.mkdtemp(prefix="milepost-spark-"))
            atexit.register(shutil.rmtree, _shipped_dir, True)
        name = f"milepost-{shipped.version}.tar"
        path = _shipped_dir / name
        path.write_bytes(shipped.archive)
        spark.sparkContext.addFile(str(path))
        _shipped[shipped.version] = name
        return name


class _PieceScorer:
    """The mapInArrow function: runs in the executors' Python workers (pickled by reference)."""

    def __init__(
        self, shipped: ShippedBundle, archive_name: str, source: str, keep: list[str], batch_rows: int,
        out_schema: pa.Schema, rows_done: Any,
    ) -> None:
        self.version, self.flavor = shipped.version, shipped.flavor
        self.archive_name, self.source = archive_name, source
        self.keep, self.batch_rows = keep, batch_rows
        self.out_schema, self.rows_done = out_schema, rows_done

    def __call__(self, pieces: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import SparkFiles, TaskContext

        import scoring_core
        from engines import shipped_bundle
        from engines.parquet_stream import scored_batches

        context = TaskContext.get()
        scoring_core.set_num_threads(max(1, context.cpus() if context is not None else 1))
        model = shipped_bundle.load_model(self.version, self.flavor, archive_path=SparkFiles.get(self.archive_name))
        fs, _ = parquet_io.resolve(self.source)
        for piece_batch in pieces:
            for path, row_group in zip(piece_batch.column("path").to_pylist(), piece_batch.column("row_group").to_pylist()):
                for batch in scored_batches(model, fs, path, [row_group], self.keep, self.batch_rows, self.out_schema):
                    yield batch
                    self.rows_done.add(batch.num_rows)


def _spark_arrow_schema(schema: pa.Schema) -> tuple[Any, pa.Schema]:
    """The Spark schema for ``schema`` and the Arrow schema Spark expects back
    (fixed-size lists become Spark arrays, i.e. Arrow lists)."""
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    from pyspark.sql.types import StructField, StructType

    fields = []
    for f in schema:
        t = pa.list_(f.type.value_type) if pa.types.is_fixed_size_list(f.type) else f.type
        fields.append(StructField(f.name, from_arrow_type(t), nullable=True))
    struct = StructType(fields)
    return struct, to_arrow_schema(struct)


class SparkEngine(Engine):
    name = "spark"
    flavors = ("scoring_core",)

    def __init__(self, master: str | None = None) -> None:
        self._master = master

    @property
    def master(self) -> str:
        """The Spark master jobs run on when they name none: the engine's, else the ``spark_master`` setting."""
        return self._master or get_settings().spark_master

    def info(self) -> EngineInfo:
        try:
            spark_version = package_version("pyspark")
        except PackageNotFoundError:
            return EngineInfo(self.name, "", False, "pyspark is not installed (pip install 'milepost[spark]')",
                              flavors=self.flavors, online=False)
        if not java_found():
            return EngineInfo(self.name, spark_version, False, "no Java runtime found (JAVA_HOME or java on PATH)",
                              flavors=self.flavors, online=False)
        return EngineInfo(self.name, spark_version, True, devices=("cpu",), flavors=self.flavors, online=False)

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        raise Unimplemented(
            "the spark engine scores datasets and runs stages; it does not serve online. "
            "Serve scoring_core models with the native engine, or on Ray replicas (engine 'ray')"
        )

    def score_dataset(self, bundle_dir: Path, job: DatasetJob, progress: Progress | None = None) -> JobResult:
        from engines import shipped_bundle

        started = time.perf_counter()
        unknown = set(job.options) - {"master", "partitions"}
        if unknown:
            raise InvalidArgument(f"options: the spark engine takes 'master' and 'partitions', not {sorted(unknown)}")
        shipped = ShippedBundle.pack(Path(bundle_dir), flavors=self.flavors)
        parquet_io.check_sink_free(job.sink)
        schema = parquet_io.dataset_schema(job.source)
        model = shipped_bundle.load_model(shipped.version, shipped.flavor, archive=shipped.archive)  # checks it here first
        features = list(model.input_schema.names)
        parquet_io.check_columns(schema, job.source, features, job.keep)
        spark_schema, arrow_schema = _spark_arrow_schema(parquet_io.output_schema(schema, job.keep, model.output_schema))

        spark = session(str(job.options.get("master", self.master)))
        sc = spark.sparkContext
        archive_name = _ship(spark, shipped)
        pieces = parquet_io.row_group_pieces(job.source)
        partitions = int(job.options.get("partitions", 0)) or max(1, min(len(pieces), sc.defaultParallelism * 2))
        from pyspark.sql.types import IntegerType, StringType, StructField, StructType

        pieces_df = spark.createDataFrame(
            sc.parallelize([(p, g) for p, g, _ in pieces], max(1, partitions)),
            StructType([StructField("path", StringType(), False), StructField("row_group", IntegerType(), False)]),
        )
        rows_done = sc.accumulator(0)
        scorer = _PieceScorer(shipped, archive_name, job.source, list(job.keep), job.batch_rows, arrow_schema, rows_done)
        scored = pieces_df.mapInArrow(scorer, spark_schema)
        stop = threading.Event()
        watcher = threading.Thread(target=_report, args=(rows_done, progress, stop), daemon=True)
        if progress is not None:
            watcher.start()
        try:
            _interruptible(lambda: scored.write.mode("errorifexists").parquet(parquet_io.cluster_uri(job.sink)))
        finally:
            stop.set()
            if progress is not None:
                watcher.join()
        rows = sum(rows for _, _, rows in pieces)
        if progress is not None:
            progress(rows)
        return JobResult(rows=rows, seconds=time.perf_counter() - started, sink=job.sink, engine=self.name)

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """"training": ``fn(df, **params)`` on a DataFrame of ``inputs["data"]`` (Parquet);
        its result becomes a bundle at ``inputs["output"]`` (``inputs["lineage"]`` in its
        metadata). "custom": ``fn(inputs, **params) -> dict`` with this process's
        SparkSession started (``SparkSession.builder.getOrCreate()`` finds it).
        ``params["master"]`` picks the cluster."""
        from dataclasses import replace

        from engines import stages

        spark = session(str(stage.params.get("master", self.master)))
        params = {k: v for k, v in stage.params.items() if k != "master"}
        if stage.kind == "custom":
            return stages.run_custom(replace(stage, params=params), inputs)
        fn = stages.resolve_entry(stage)
        data = stages.training_data(stage, inputs)
        dest = stages.output_dir(stage, inputs)
        df = spark.read.parquet(parquet_io.cluster_uri(data))
        return stages.save_trained(fn(df, **params), dest, inputs.get("lineage"))


def _interruptible(action: Callable[[], object]) -> None:
    """Run a Spark action (its jobs) in a thread of its own while this one waits: Ctrl-C then lands
    in the wait, not inside a py4j call (py4j logs one there with its traceback and cuts the JVM's
    thread off, which logs its own). The jobs are cancelled and Spark is stopped, quietly, and the
    KeyboardInterrupt goes on (the CLI says "interrupted" and exits 130)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as err:  # noqa: BLE001 - raised again in the thread that waits
            failed.append(err)

    worker = threading.Thread(target=run, name="spark-action", daemon=True)
    worker.start()
    try:
        worker.join()
    except KeyboardInterrupt:
        _stop_quietly(worker)
        raise
    if failed:
        raise failed[0]


def _stop_quietly(worker: threading.Thread) -> None:
    """Cancel the jobs ``worker`` waits on, let it see that, and stop Spark, with the JVM's log and
    py4j's off (each task aborted would log its stack); best effort, the process is ending."""
    py4j = logging.getLogger("py4j")
    level = py4j.level
    py4j.setLevel(logging.CRITICAL + 1)  # its own loggers (py4j.clientserver...) take their level from it
    try:
        running = _running_session()
        if running is not None:
            running.sparkContext.setLogLevel("OFF")
            running.sparkContext.cancelAllJobs()
            worker.join(_CANCEL_WAIT_S)
        stop_session()
    except Exception:  # noqa: BLE001 - nothing to tell a user who pressed Ctrl-C
        pass
    finally:
        py4j.setLevel(level)


def _report(rows_done: Any, progress: Progress, stop: threading.Event) -> None:
    last = -1
    while not stop.wait(_PROGRESS_POLL_S):
        value = rows_done.value
        if value != last:
            progress(value)
            last = value
