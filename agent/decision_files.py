"""The decision log's files: the open one, an Arrow IPC stream that stays readable up to its
last write (what a crash leaves of it is read back by ``read_stream``), sealed into Parquet
when it closes; and Arrow IPC as decisions travel to a reader (agent.control ListDecisions).
agent.decision_log says when files open, close, rotate, are recovered and expire."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SEALING = ".sealing"  # a Parquet file being written, renamed into place once whole


def decisions_named(part: Path) -> int | None:
    """How many decisions a ``.part`` file's name says it was given; None for a name without a count."""
    pieces = part.stem.split("-")
    return int(pieces[2]) if len(pieces) == 3 and pieces[2].isdigit() else None


def read_stream(part: Path) -> tuple[pa.Table | None, bool]:
    """What a ``.part`` file holds readably, and whether all of it was (a file cut off by a
    crash ends in the middle of a write). A Parquet ``.part`` of an older agent is read whole or not at all."""
    with open(part, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        try:
            return pq.read_table(part), True
        except (pa.ArrowInvalid, OSError):
            return None, False
    batches: list[pa.RecordBatch] = []
    schema = None
    whole = True
    try:
        with pa.OSFile(str(part), "rb") as source:
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError):
        whole = False
    if schema is None:
        return None, False
    return pa.Table.from_batches(batches, schema=schema), whole


def seal(part: Path, table: pa.Table) -> Path:
    """Write ``table``, the decisions of ``part``, as the closed Parquet file beside it: on disk
    before it takes its name, so a crash leaves either the whole file or the ``.part``."""
    span = pc.min_max(table["time"])
    first, last = span["min"].value, span["max"].value
    final = part.with_name(f"{first:020d}-{last:020d}-{table.num_rows}.parquet")
    sealing = final.with_name(final.name + SEALING)
    with open(sealing, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(sealing, final)
    return final


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
