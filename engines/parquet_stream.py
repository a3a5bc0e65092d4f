"""Score Parquet in this process, one record batch at a time.

``stream_score`` is how an engine that scores in-process (native, torch, python) runs
a dataset job: read ``batch_rows`` rows, predict, append to the sink, repeat. Memory
stays bounded by a batch (plus a row group being decoded), whatever the dataset's
size, and rows come out in source order.

``scored_batches`` is the same loop over some row groups of one file; Spark
executors and Ray actors run it on their share of the dataset.

The sink is one Parquet file when its name ends in ``.parquet``, else a directory
holding ``part-00000.parquet``. A local sink is written beside its final name and
renamed into place, so a failed job leaves nothing that looks like a result.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engines import parquet_io
from engines.base import DatasetJob, JobResult, LoadedModel, Progress


def stream_score(model: LoadedModel, job: DatasetJob, *, engine: str, progress: Progress | None = None) -> JobResult:
    """Run ``job`` through ``model.predict``; the JobResult counts the rows written."""
    started = time.perf_counter()
    parquet_io.check_sink_free(job.sink)
    features = list(model.input_schema.names)
    files = parquet_io.parquet_files(job.source)
    src_fs, _ = parquet_io.resolve(job.source)
    schema = parquet_io.dataset_schema(job.source)
    parquet_io.check_columns(schema, job.source, features, job.keep)
    out_schema = parquet_io.output_schema(schema, job.keep, model.output_schema)

    sink_fs, sink_path = parquet_io.resolve(job.sink)
    single_file = sink_path.endswith(".parquet")
    local = isinstance(sink_fs, pafs.LocalFileSystem)
    staging = staging_name(sink_path) if local else sink_path
    target = staging if single_file else f"{staging}/part-00000.parquet"
    if not single_file:
        sink_fs.create_dir(staging, recursive=True)
    elif local:
        Path(staging).parent.mkdir(parents=True, exist_ok=True)

    rows = 0
    try:
        with pq.ParquetWriter(target, out_schema, filesystem=sink_fs) as writer:
            for path in files:
                for batch in scored_batches(model, src_fs, path, None, job.keep, job.batch_rows, out_schema):
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    if progress is not None:
                        progress(rows)
        if local:
            Path(staging).rename(sink_path)
    except BaseException:
        if local and single_file:
            Path(staging).unlink(missing_ok=True)
        elif local:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return JobResult(rows=rows, seconds=time.perf_counter() - started, sink=job.sink, engine=engine)


def scored_batches(
    model: LoadedModel, fs: pafs.FileSystem, path: str, row_groups: Sequence[int] | None,
    keep: Sequence[str], batch_rows: int, out_schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """The kept columns and the model's outputs for the row groups of one file (all when
    None), ``batch_rows`` at a time, cast to ``out_schema``."""
    features = list(model.input_schema.names)
    columns = features + [k for k in keep if k not in features]
    with fs.open_input_file(path) as handle:
        reader = pq.ParquetFile(handle)
        parquet_io.check_columns(reader.schema_arrow, path, features, keep)
        groups = list(row_groups) if row_groups is not None else None
        for batch in reader.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
            scored = model.predict(batch.select(features))
            arrays = [batch.column(name) for name in keep] + list(scored.columns)
            yield pa.RecordBatch.from_arrays(
                [a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, out_schema)], schema=out_schema
            )


def staging_name(path: str) -> str:
    """A hidden sibling of ``path`` to write into before renaming (readers skip dot-names)."""
    p = Path(path)
    return str(p.parent / f".{p.name}.writing-{uuid.uuid4().hex}")
