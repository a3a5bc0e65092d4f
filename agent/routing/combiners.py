"""Ensemble combiners: the members' answers for the same rows become one answer.

Pure functions over Arrow record batches, given as (member name, batch) pairs
in arm order. What each promises:

- ``mean`` and ``weighted``: every output column averaged across members, row
  by row (a fixed-size list, such as a classifier's probabilities, element by
  element), with the arms' weights normalised to sum to one for ``weighted``.
  Float columns keep their type; integer and bool columns become float64.
- ``vote``: majority voting. For a fixed-size-list column (class
  probabilities) each member votes for its argmax class, and the answer is the
  vote *shares*: per row, the fraction of members that voted for each class,
  in the same column. Its argmax is the majority class, ties going to the
  lowest class index, and it stays a probability-shaped column clients can
  read like any classifier's. For a scalar column (a label) the answer is the
  most frequent value per row, ties going to the smallest value.
- ``stacking_input``: the members' first outputs side by side, in arm order (a
  fixed-size list contributes all its elements, a scalar one), as the input
  batch of the stacker model.

Members must answer with identical schemas for mean, weighted and vote; when
they do not, FailedPrecondition names the members that differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from milepost.core.errors import FailedPrecondition

Outputs = Sequence[tuple[str, pa.RecordBatch]]


def mean(outputs: Outputs, weights: Sequence[float] | None = None) -> pa.RecordBatch:
    schema = _same_schema(outputs, "weighted" if weights is not None else "mean")
    if weights is None:
        w = np.full(len(outputs), 1.0 / len(outputs))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(outputs),) or not np.all(w >= 0) or w.sum() <= 0:
            raise FailedPrecondition(
                f"weighted combiner needs one non-negative weight per member, summing above 0; got {list(weights)}"
            )
        w = w / w.sum()
    columns = []
    for index, field in enumerate(schema):
        stacked = np.stack([_as_float(name, b.column(index), field.name) for name, b in outputs])
        columns.append(_to_arrow(np.tensordot(w, stacked, axes=1), field.type))
    return pa.RecordBatch.from_arrays(columns, names=schema.names)


def vote(outputs: Outputs) -> pa.RecordBatch:
    schema = _same_schema(outputs, "vote")
    columns = []
    for index, field in enumerate(schema):
        members = [b.column(index) for _, b in outputs]
        if pa.types.is_fixed_size_list(field.type):
            probabilities = np.stack([_as_float(name, c, field.name) for (name, _), c in zip(outputs, members)])
            m, n, k = probabilities.shape
            shares = np.zeros((n, k))
            rows = np.arange(n)
            for choice in np.argmax(probabilities, axis=2):  # one pass per member, not per row
                shares[rows, choice] += 1.0
            columns.append(_to_arrow(shares / m, field.type))
        elif _is_number(field.type) or pa.types.is_boolean(field.type):
            labels = np.stack([_as_float(name, c, field.name) for (name, _), c in zip(outputs, members)])
            agree = (labels[:, None, :] == labels[None, :, :]).sum(axis=1)  # (m, n): members agreeing with each
            best = agree.max(axis=0)
            winner = np.where(agree == best, labels, np.inf).min(axis=0)
            columns.append(pa.array(winner).cast(field.type, safe=False))
        else:
            raise FailedPrecondition(
                f"vote cannot combine output {field.name!r} of type {field.type}; it votes over "
                "class probabilities (fixed-size lists) and numeric labels"
            )
    return pa.RecordBatch.from_arrays(columns, names=schema.names)


def stacking_features(outputs: Outputs) -> np.ndarray:
    """The members' first outputs side by side, (rows, total width), float64."""
    parts = []
    for name, batch in outputs:
        if batch.num_columns == 0:
            raise FailedPrecondition(f"member {name!r} answered no output for the stacker")
        column = batch.column(0)
        values = _as_float(name, column, batch.schema.field(0).name)
        parts.append(values if values.ndim == 2 else values[:, None])
    rows = {p.shape[0] for p in parts}
    if len(rows) > 1:
        raise FailedPrecondition(f"members answered different numbers of rows: {sorted(rows)}")
    return np.concatenate(parts, axis=1)


def stacking_input(features: np.ndarray, schema: pa.Schema, members: Sequence[str]) -> pa.RecordBatch:
    """The stacker's input batch: one column per feature of ``schema``, or its single fixed-size list."""
    width = features.shape[1]
    if len(schema) == width and all(_is_number(f.type) for f in schema):
        columns = [pa.array(features[:, j]).cast(f.type, safe=False) for j, f in enumerate(schema)]
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    if len(schema) == 1 and pa.types.is_fixed_size_list(schema[0].type) and schema[0].type.list_size == width:
        return pa.RecordBatch.from_arrays([_to_arrow(features, schema[0].type)], schema=schema)
    raise FailedPrecondition(
        f"the stacker takes {len(schema)} input(s) ({', '.join(f'{f.name}: {f.type}' for f in schema)}) "
        f"but the members {', '.join(members)} give {width} features"
    )


def _same_schema(outputs: Outputs, combiner: str) -> pa.Schema:
    if not outputs:
        raise FailedPrecondition(f"the {combiner} combiner has no member answers to combine")
    first_name, first = outputs[0]
    differ = [name for name, batch in outputs[1:] if not batch.schema.equals(first.schema)]
    if differ:
        theirs = outputs[[n for n, _ in outputs].index(differ[0])][1].schema
        raise FailedPrecondition(
            f"the {combiner} combiner needs members with identical output schemas: member(s) "
            f"{', '.join(differ)} answer ({_describe(theirs)}) but {first_name} answers ({_describe(first.schema)})"
        )
    rows = {batch.num_rows for _, batch in outputs}
    if len(rows) > 1:
        raise FailedPrecondition(f"members answered different numbers of rows: {sorted(rows)}")
    return first.schema


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _is_number(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _as_float(member: str, column: pa.Array, name: str) -> np.ndarray:
    """(n,) for a scalar column, (n, k) for a fixed-size list; float64, nulls as NaN."""
    kind = column.type
    if pa.types.is_fixed_size_list(kind) and (_is_number(kind.value_type) or pa.types.is_boolean(kind.value_type)):
        k = kind.list_size
        values = column.values.slice(column.offset * k, len(column) * k)
        flat = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        matrix = flat.reshape(len(column), k)
        if column.null_count:
            matrix = matrix.copy()
            matrix[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
        return matrix
    if _is_number(kind) or pa.types.is_boolean(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    raise FailedPrecondition(f"member {member!r} answered output {name!r} of type {kind}, which cannot be combined numerically")


def _to_arrow(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """Combined float64 values as a column shaped like ``arrow_type`` (floats keep their width)."""
    if pa.types.is_fixed_size_list(arrow_type):
        element = arrow_type.value_type if pa.types.is_floating(arrow_type.value_type) else pa.float64()
        flat = pa.array(np.ascontiguousarray(values).reshape(-1)).cast(element)
        return pa.FixedSizeListArray.from_arrays(flat, arrow_type.list_size)
    element = arrow_type if pa.types.is_floating(arrow_type) else pa.float64()
    return pa.array(values).cast(element)
