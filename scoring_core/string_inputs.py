"""Categorical input columns: how a column of categories becomes a number.

A categorical column is read as its code: the index of each value in the column's vocabulary
(the categories its encoder was fitted with: strings, or the numbers or booleans a pandas
categorical held), as float32, so it flows through the same float matrix and kernels as every
other column; the ``encode`` stage or a tree's category split then reads the codes. Values are
matched by value: a dictionary column (a pandas categorical, an Arrow dictionary) through its
dictionary, whatever order its categories are in; for numeric categories, strings as the
numbers they spell (the wire's BYTES, since the input schema declares such a column a
string). A null is missing (NaN), or the imputer's
fill value when a SimpleImputer filled the column. A value outside the vocabulary becomes -1,
which no category matches, or, when the encoder refuses unknown values, an InvalidArgument
naming the column and the values.

A column of plain numbers (not a dictionary) is read as the model's library reads one
(``numbers``), since they differ:

- ``"refuse"`` (scikit-learn encoders): an InvalidArgument naming the column;
- ``"code"`` (LightGBM, XGBoost): the numbers are the codes themselves, as those libraries read
  a matrix; the tree kernels apply the library's rule to fractional, negative and NaN codes;
- ``"text"`` (Spark's StringIndexer): the number as Spark casts it to a string before the
  lookup, Java's ``toString`` of the value (``2``, ``2.0``, ``1.0E7``, ``NaN``, ``true``).

The lookup is Arrow's hash-based ``index_in`` against the vocabulary, over the whole column
at once (for ``"text"``, over its distinct values): no Python loop per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from milepost.core.errors import InvalidArgument

UNKNOWN_CODE = -1.0
ON_UNKNOWN = ("error", "code")
ON_NUMBERS = ("refuse", "code", "text")
_SHOWN = 5


def _kind(value: Any) -> str | None:
    """What a category is: "string", "bool" or "number" (int or float); None for anything else."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)) and not (isinstance(value, float) and math.isnan(value)):
        return "number"
    return None


def _reads(kind: str, t: pa.DataType) -> bool:
    """Whether values of Arrow type ``t`` can be matched against categories of ``kind``."""
    if kind == "string":
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                    or pa.types.is_large_binary(t))
    if kind == "bool":
        return bool(pa.types.is_boolean(t))
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t))  # strings spell numbers


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


@dataclass(frozen=True)
class StringColumn:
    """A categorical input column's vocabulary and its rules for unknown, missing and
    plain-number values (the name is historical: the categories may be numbers too)."""

    categories: tuple[Any, ...]
    unknown: str = "code"  # "error": refuse values outside the vocabulary; "code": give them -1
    fill: Any = None  # what a null stands for; None leaves nulls missing (NaN)
    numbers: str = "refuse"  # how a column of plain numbers is read: ON_NUMBERS, see the module docstring
    _value_set: pa.Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        categories = tuple(v.item() if isinstance(v, np.generic) else v for v in self.categories)
        kinds = {_kind(c) for c in categories}
        if len(kinds) > 1 or None in kinds:
            raise InvalidArgument("a categorical column's categories must be all strings, all numbers or all booleans")
        if len(set(categories)) != len(categories):
            raise InvalidArgument("a categorical column's categories must be distinct")
        if self.unknown not in ON_UNKNOWN:
            raise InvalidArgument(f"a string column's unknown rule must be one of {ON_UNKNOWN}, got {self.unknown!r}")
        if self.numbers not in ON_NUMBERS:
            raise InvalidArgument(f"a categorical column's numbers rule must be one of {ON_NUMBERS}, got {self.numbers!r}")
        kind = str(kinds.pop()) if kinds else "string"
        if self.fill is not None and _kind(self.fill) != kind:
            raise InvalidArgument(f"a categorical column's fill value must be a {kind} as its categories are, "
                                  f"got {self.fill!r}")
        value_type = {"string": pa.string(), "bool": pa.bool_()}.get(kind)
        if value_type is None:
            value_type = pa.int64() if all(isinstance(c, int) for c in categories) else pa.float64()
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "_value_set", pa.array(categories, type=value_type))

    @property
    def kind(self) -> str:
        """What the categories are: "string", "number" or "bool"."""
        t = self._value_set.type
        return "string" if pa.types.is_string(t) else "bool" if pa.types.is_boolean(t) else "number"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"categories": list(self.categories), "unknown": self.unknown}
        if self.fill is not None:
            entry["fill"] = self.fill
        if self.numbers != "refuse":
            entry["numbers"] = self.numbers
        return entry

    @classmethod
    def from_json(cls, entry: Any, where: str) -> StringColumn:
        if not isinstance(entry, dict) or not isinstance(entry.get("categories"), list):
            raise InvalidArgument(f"milepost.json: {where} must be an object with a 'categories' list")
        return cls(tuple(entry["categories"]), entry.get("unknown", "code"), entry.get("fill"),
                   entry.get("numbers", "refuse"))

    def fill_codes(self, out: np.ndarray, column: pa.Array, name: str) -> None:
        """Write the codes of ``column`` into ``out`` (a float32 column): a dictionary or
        plain values matched against the categories, plain numbers by the ``numbers`` rule."""
        t = column.type
        if pa.types.is_null(t):
            column = pa.nulls(len(column), self._value_set.type)
        elif not pa.types.is_dictionary(t) and _is_number(t) and self.numbers == "code":
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf, as for any feature
                out[:] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            return
        elif not pa.types.is_dictionary(t) and _is_number(t) and self.numbers == "text":
            column = _java_text(column)
        elif not _reads(self.kind, t.value_type if pa.types.is_dictionary(t) else t):
            raise InvalidArgument(self._refusal(name, t))
        column = self._comparable(column, name)
        if self.fill is not None and column.null_count:
            column = pc.fill_null(column, pa.scalar(self.fill, type=column.type))
        found = self._positions(column)
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

    def _positions(self, column: pa.Array) -> pa.Array:
        """Each value's index in the categories (int32, null where missing or unknown)."""
        value_set = self._value_set
        values = column.dictionary if pa.types.is_dictionary(column.type) else column
        if value_set.type != values.type:  # numbers: compare integers as int64, anything else as float64
            value_set = value_set.cast(values.type)
        found = pc.index_in(values, value_set=value_set)
        return found.take(column.indices) if pa.types.is_dictionary(column.type) else found

    def _comparable(self, column: pa.Array, name: str) -> pa.Array:
        """The column (or its dictionary) in the type its values are compared in: pa.string()
        for strings, int64 or float64 for numbers, bool as it is."""
        t = column.type
        value_type = t.value_type if pa.types.is_dictionary(t) else t
        if self.kind == "string":
            target: pa.DataType = pa.string()
        elif self.kind == "bool":
            return column
        else:
            integers = pa.types.is_integer(value_type) or pa.types.is_string(value_type)
            target = pa.int64() if integers and pa.types.is_integer(self._value_set.type) else pa.float64()
        if value_type == target:
            return column
        try:
            return column.cast(pa.dictionary(t.index_type, target) if pa.types.is_dictionary(t) else target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidArgument(f"column {name!r} could not be read as {target} values: {err}") from err

    def _refusal(self, name: str, t: pa.DataType) -> str:
        what = {"string": "a string (categorical) column", "bool": "a boolean categorical column",
                "number": "a categorical column of numbers"}[self.kind]
        codes = ", or numbers as its codes" if self.numbers == "code" else ""
        return f"column {name!r} has type {t}; this model reads it as {what}{codes}"


def _java_text(column: pa.Array) -> pa.Array:
    """A column of numbers as the strings Spark casts them to (Java's ``toString``): integers
    and booleans by Arrow's cast, which writes them as Java does; floating values, one per
    distinct value, as ``java_float_text``."""
    if not pa.types.is_floating(column.type):
        return column.cast(pa.string())
    single = column.type == pa.float32()
    distinct = pc.drop_null(pc.unique(column))
    texts = pa.array([java_float_text(v, single) for v in distinct.to_pylist()], type=pa.string())
    return texts.take(pc.index_in(column, value_set=distinct))


def java_float_text(value: float, single: bool = False) -> str:
    """Java's ``Double.toString`` (``Float.toString`` where ``single``): the shortest digits
    that read back as the value, plain for 1e-3 <= |value| < 1e7 (``2.0``, ``0.001``) and
    computerized scientific notation otherwise (``1.0E7``, ``-1.5E-4``). Java 19+ prints
    those shortest digits; an older JVM prints a digit more for a few rare values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    number = np.float32(value) if single else np.float64(value)
    mantissa, _, exp_text = np.format_float_scientific(number, unique=True, trim="-").partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    exp = int(exp_text)
    if not 1e-3 <= abs(value) < 1e7:
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exp}"
    if exp >= 0:
        return f"{sign}{digits[:exp + 1].ljust(exp + 1, '0')}.{digits[exp + 1:] or '0'}"
    return f"{sign}0.{'0' * (-exp - 1)}{digits}"
