"""Reading input files and writing or printing results for the CLI."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from milepost.core.errors import InvalidArgument, NotFound


def read_table(path: Path) -> pa.Table:
    """.parquet, .csv, or .json (an array of records, an object of columns, or JSON lines)."""
    if not path.is_file():
        raise NotFound(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pa_csv.read_csv(path)
        if suffix in (".json", ".jsonl", ".ndjson"):
            text = path.read_text()
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                return pa_json.read_json(path)
            if isinstance(doc, list):
                return pa.Table.from_pylist(doc)
            if isinstance(doc, dict):
                return pa.table(doc)
            raise InvalidArgument(f"{path}: JSON must be an array of records or an object of columns")
    except (pa.ArrowInvalid, OSError) as err:
        raise InvalidArgument(f"{path}: cannot read as {suffix[1:]}: {err}") from err
    raise InvalidArgument(f"{path}: unsupported input format {suffix!r}; use .parquet, .csv or .json")


def flatten(table: pa.Table) -> pa.Table:
    """Fixed-size list columns become one column per element, for CSV, JSON and the terminal."""
    names, columns = [], []
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            for j in range(width):
                names.append(f"{name}_{j}")
                columns.append(pa.array(flat[:, j]))
        else:
            names.append(name)
            columns.append(column)
    return pa.table(dict(zip(names, columns)))


def write_table(table: pa.Table, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".csv":
        pa_csv.write_csv(flatten(table), path)
    elif suffix in (".json", ".jsonl", ".ndjson"):
        rows = flatten(table).to_pylist()
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" if suffix != ".json" else json.dumps(rows))
    else:
        raise InvalidArgument(f"{path}: unsupported output format {suffix!r}; use .parquet, .csv or .json")


def render(headers: list[str], rows: list[list[object]]) -> str:
    """A table for a person: on a terminal, drawn by rich to fit its width (long cells wrap);
    into a pipe or a file, plain aligned columns, one line a row, that tools can cut (programs
    take ``--output json``)."""
    if sys.stdout.isatty():
        return _fitted(headers, rows, shutil.get_terminal_size().columns)
    return plain(headers, rows)


def _fitted(headers: list[str], rows: list[list[object]], width: int) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")  # a long cell (a digest, a message) folds: nothing is cut
    for row in rows:
        table.add_row(*(str(c) for c in row))
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True).print(table)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


def plain(headers: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
