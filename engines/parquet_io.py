"""Parquet datasets as the engines read and write them.

A dataset is one Parquet file or a directory of them. Its row order is the files'
order (sorted by path, numbers compared as numbers, so Ray's ``...-10`` follows
``...-9``) and then each file's own order; every engine reads and writes in that
order, so a job's output lines up with its input row for row. Names starting with
``_`` or ``.`` (Spark's ``_SUCCESS``, checksum files) are not data.

Paths are local paths or URIs; ``file://`` URIs are local, other schemes go
through ``pyarrow.fs`` (s3://, gs://, hdfs:// where pyarrow was built with them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from milepost.core.errors import AlreadyExists, InvalidArgument, NotFound

_DIGITS = re.compile(r"(\d+)")


def _natural_key(path: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(path)]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path inside it for a local path or URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"{uri!r}: a file:// URI must name a local path (file:///...)")
        return pafs.LocalFileSystem(), unquote(parsed.path)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise InvalidArgument(f"cannot open dataset URI {uri!r}: {err}") from err


def local_path(uri: str) -> Path | None:
    """The local path a path or file:// URI names; None for other schemes."""
    fs, path = resolve(uri)
    return Path(path) if isinstance(fs, pafs.LocalFileSystem) else None


def cluster_uri(uri: str) -> str:
    """The URI to hand a cluster (Spark): a local path as an explicit file:// URI, so that
    a cluster whose default filesystem is HDFS does not read it as an HDFS path; other
    URIs as given."""
    path = local_path(uri)
    # Not Path.as_uri(): Hadoop's Path takes the text after the scheme as it is and would
    # keep percent-escapes literally in file names.
    return f"file://{path}" if path is not None else uri


def _is_data_name(name: str) -> bool:
    return not name.startswith(("_", "."))


def parquet_files(uri: str) -> list[str]:
    """The dataset's data files (paths inside its filesystem) in row order.
    NotFound when nothing is there, InvalidArgument when a directory holds no Parquet."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise NotFound(f"no dataset at {uri!r}")
    if info.type == pafs.FileType.File:
        return [path]
    selector = pafs.FileSelector(path, recursive=True)
    files = [
        f.path for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and all(_is_data_name(part) for part in Path(f.path).relative_to(path).parts)
    ]
    if not files:
        raise InvalidArgument(f"dataset directory {uri!r} holds no data files")
    return sorted(files, key=_natural_key)


def row_group_pieces(uri: str) -> list[tuple[str, int, int]]:
    """(file, row group, rows) for every row group of the dataset, in row order: the
    units of work distributed engines share out."""
    fs, _ = resolve(uri)
    pieces: list[tuple[str, int, int]] = []
    for path in parquet_files(uri):
        with fs.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        pieces.extend((path, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups))
    return pieces


def dataset_schema(uri: str) -> pa.Schema:
    """The Arrow schema of the dataset's first file."""
    fs, _ = resolve(uri)
    return pq.read_schema(parquet_files(uri)[0], filesystem=fs)


def count_rows(uri: str) -> int:
    """Rows in the dataset, from the files' footers (no data is read)."""
    fs, _ = resolve(uri)
    total = 0
    for path in parquet_files(uri):
        with fs.open_input_file(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_table(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole dataset as one table, in row order (for results and tests; jobs stream)."""
    fs, _ = resolve(uri)
    tables = [pq.read_table(path, filesystem=fs, columns=columns) for path in parquet_files(uri)]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def check_columns(schema: pa.Schema, uri: str, features: Sequence[str], keep: Sequence[str]) -> None:
    """InvalidArgument naming the feature or kept columns the dataset lacks."""
    names = set(schema.names)
    missing = [n for n in features if n not in names]
    if missing:
        raise InvalidArgument(f"dataset {uri!r} lacks feature column(s) {missing[:10]}; it has {schema.names[:10]}")
    missing_keep = [n for n in keep if n not in names]
    if missing_keep:
        raise InvalidArgument(f"keep: dataset {uri!r} has no column(s) {missing_keep}")


def output_schema(source: pa.Schema, keep: Sequence[str], outputs: pa.Schema) -> pa.Schema:
    """The kept source columns then the model's outputs; a name on both sides is refused."""
    clash = [n for n in keep if n in outputs.names]
    if clash:
        raise InvalidArgument(f"keep: column(s) {clash} would collide with the model's outputs {outputs.names}")
    return pa.schema([source.field(n) for n in keep] + list(outputs))


def check_sink_free(uri: str) -> None:
    """AlreadyExists when something is at the sink: jobs never overwrite data."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        raise AlreadyExists(f"sink {uri!r} already exists; choose a new path or remove it")
