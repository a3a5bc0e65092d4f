"""Score a Parquet dataset in this process, one record batch at a time.

The shared way to run a dataset job on an engine that scores in-process (native,
torch, python): read ``batch_rows`` rows, predict, append to the sink, repeat. Memory
stays bounded by a batch (plus a row group being decoded), whatever the dataset's size,
and rows come out in source order.

The sink is one Parquet file when its name ends in ``.parquet``, else a directory
holding ``part-00000.parquet``. A local sink is written beside its final name and
renamed into place, so a failed job leaves nothing that looks like a result.
"""

from __future__ import annotations

import shutil
import time
import uuid
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
    columns = features + [k for k in job.keep if k not in features]

    sink_fs, sink_path = parquet_io.resolve(job.sink)
    single_file = sink_path.endswith(".parquet")
    local = isinstance(sink_fs, pafs.LocalFileSystem)
    staging = _staging_name(sink_path) if local else sink_path
    target = staging if single_file else f"{staging}/part-00000.parquet"
    if not single_file:
        sink_fs.create_dir(staging, recursive=True)
    elif local:
        Path(staging).parent.mkdir(parents=True, exist_ok=True)

    rows = 0
    try:
        with pq.ParquetWriter(target, out_schema, filesystem=sink_fs) as writer:
            for path in files:
                with src_fs.open_input_file(path) as handle:
                    reader = pq.ParquetFile(handle)
                    parquet_io.check_columns(reader.schema_arrow, path, features, job.keep)
                    for batch in reader.iter_batches(batch_size=job.batch_rows, columns=columns):
                        writer.write_batch(_score_batch(model, batch, features, job.keep, out_schema))
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


def _staging_name(path: str) -> str:
    p = Path(path)
    return str(p.parent / f".{p.name}.writing-{uuid.uuid4().hex}")


def _score_batch(
    model: LoadedModel, batch: pa.RecordBatch, features: list[str], keep: tuple[str, ...], out_schema: pa.Schema
) -> pa.RecordBatch:
    inputs = batch.select(features)
    scored = model.predict(inputs)
    arrays = [batch.column(name) for name in keep] + list(scored.columns)
    return pa.RecordBatch.from_arrays(arrays, schema=out_schema)
