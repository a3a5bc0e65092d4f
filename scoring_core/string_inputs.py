"""String input columns: how a categorical column of strings becomes a number.

A string column is read as its code: the index of each value in the column's vocabulary
(the categories its encoder was fitted with), as float32, so it flows through the same
float matrix and kernels as every other column; the ``encode`` stage then one-hot or
ordinal encodes the codes. A null is missing (NaN), or the imputer's fill value when a
SimpleImputer filled the column. A value outside the vocabulary becomes -1, which no
category matches, or, when the encoder refuses unknown values, an InvalidArgument naming
the column and the values.

The lookup is Arrow's hash-based ``index_in`` against the vocabulary, over the whole
column at once: no Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from milepost.core.errors import InvalidArgument

UNKNOWN_CODE = -1.0
ON_UNKNOWN = ("error", "code")
_SHOWN = 5


@dataclass(frozen=True)
class StringColumn:
    """A string input column's vocabulary and its rules for unknown and missing values."""

    categories: tuple[str, ...]
    unknown: str = "code"  # "error": refuse values outside the vocabulary; "code": give them -1
    fill: str | None = None  # what a null stands for; None leaves nulls missing (NaN)
    _value_set: pa.Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        categories = tuple(self.categories)
        if not all(isinstance(c, str) for c in categories):
            raise InvalidArgument("a string column's categories must all be strings")
        if len(set(categories)) != len(categories):
            raise InvalidArgument("a string column's categories must be distinct")
        if self.unknown not in ON_UNKNOWN:
            raise InvalidArgument(f"a string column's unknown rule must be one of {ON_UNKNOWN}, got {self.unknown!r}")
        if self.fill is not None and not isinstance(self.fill, str):
            raise InvalidArgument(f"a string column's fill value must be a string, got {self.fill!r}")
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "_value_set", pa.array(categories, type=pa.string()))

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"categories": list(self.categories), "unknown": self.unknown}
        if self.fill is not None:
            entry["fill"] = self.fill
        return entry

    @classmethod
    def from_json(cls, entry: Any, where: str) -> StringColumn:
        if not isinstance(entry, dict) or not isinstance(entry.get("categories"), list):
            raise InvalidArgument(f"milepost.json: {where} must be an object with a 'categories' list")
        return cls(tuple(entry["categories"]), entry.get("unknown", "code"), entry.get("fill"))

    def fill_codes(self, out: np.ndarray, column: pa.Array, name: str) -> None:
        """Write the codes of ``column`` (string, binary, or dictionary of either) into
        ``out`` (a float32 column)."""
        column = _as_strings(column, name)
        if self.fill is not None and column.null_count:
            column = pc.fill_null(column, pa.scalar(self.fill, type=column.type))
        if pa.types.is_dictionary(column.type):
            found = pc.index_in(column.dictionary, value_set=self._value_set).take(column.indices)
        else:
            found = pc.index_in(column, value_set=self._value_set)
        if found.null_count == 0:
            out[:] = found.to_numpy(zero_copy_only=False)
            return
        codes = found.to_numpy(zero_copy_only=False)  # float64, NaN where not found or null
        unknown = np.isnan(codes)
        if column.null_count:
            unknown &= ~column.is_null().to_numpy(zero_copy_only=False)
        if unknown.any():
            if self.unknown == "error":
                values = pc.unique(column.filter(pa.array(unknown))).to_pylist()
                shown = ", ".join(repr(v) for v in values[:_SHOWN]) + (" ..." if len(values) > _SHOWN else "")
                raise InvalidArgument(
                    f"column {name!r} has unknown categor{'y' if len(values) == 1 else 'ies'} {shown}; "
                    f"the model knows {len(self.categories)}: "
                    + ", ".join(repr(c) for c in self.categories[:_SHOWN])
                    + (" ..." if len(self.categories) > _SHOWN else "")
                )
            codes[unknown] = UNKNOWN_CODE
        out[:] = codes


def _as_strings(column: pa.Array, name: str) -> pa.Array:
    """The column as (a dictionary of) pa.string(), or InvalidArgument naming it."""
    t = column.type
    value_type = t.value_type if pa.types.is_dictionary(t) else t
    if pa.types.is_null(t):
        return column.cast(pa.string())
    if pa.types.is_string(value_type):
        return column
    if pa.types.is_large_string(value_type) or pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type):
        target = pa.dictionary(t.index_type, pa.string()) if pa.types.is_dictionary(t) else pa.string()
        try:
            return column.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidArgument(f"column {name!r} is not valid UTF-8 text: {err}") from err
    raise InvalidArgument(f"column {name!r} has type {t}; this model reads it as a string (categorical) column")
