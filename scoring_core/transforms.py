"""Feature transforms: stages that run before the model, column by column.

Two kinds cover scikit-learn's scalers, imputers and encoders, alone, in Pipelines and in
ColumnTransformers (``convert.sklearn_pipeline`` builds them):

- ``column_map``: every output column is one input column (its ``source``) through a fixed
  chain: missing (NaN) -> ``fill``, then ``(x - center) / divisor * factor + offset``,
  then clipped to [low, high]; or, for an indicator column, 1.0 where the input is
  missing and 0.0 elsewhere. Scalers, imputers (dropped columns, missing indicators) and
  the column selection of a ColumnTransformer (reorder, drop, duplicate) are all this.
- ``encode``: every input column either passes through or is looked up in its sorted
  category list (NaN, the missing category, last): one-hot (with a dropped category, and
  unknown values ignored or refused) or ordinal (with values for unknown and missing).
  String inputs arrive here as codes (their index in the column's vocabulary, see
  ``string_inputs``), so strings and numbers take the same path.

Both keep the input's dtype and memory order. The dtype, because scikit-learn's
transformers compute in their input's dtype, rounding after every in-place step
(``X -= mean_; X /= scale_`` on float32 data rounds twice to float32), and a tree after
them compares those exact values with thresholds learned from them: so a float32 matrix
(every Arrow batch) is transformed with float32 rounding after each step, a float64
matrix in float64, each as scikit-learn would. The order (a column-major Arrow batch
stays column-major, a row-major tensor row-major), so the model after them reads what it
reads best. Rows are processed in blocks, in parallel above the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from numba import njit, prange

from milepost.core.errors import InvalidArgument
from scoring_core import threads
from scoring_core.kinds import register_kind

BLOCK = 1024
PASS, ONE_HOT, ORDINAL = 0, 1, 2
MODES = ("pass", "one_hot", "ordinal")
IGNORE, ERROR, VALUE = 0, 1, 2  # what an unknown category becomes: zeros, an error, unknown_value
UNKNOWN_POLICIES = ("ignore", "error", "value")


def _out_like(X: np.ndarray, width: int) -> np.ndarray:
    order: Literal["C", "F"] = "F" if (X.flags.f_contiguous and not X.flags.c_contiguous) else "C"
    return np.empty((X.shape[0], width), dtype=X.dtype, order=order)


def _as_float(X: np.ndarray) -> np.ndarray:
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    return X


def _float_array(value: Any, n: int, name: str, where: str) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=np.float64)
    if array.shape != (n,):
        raise InvalidArgument(f"{where}: {name} has shape {array.shape}, expected ({n},)")
    array.setflags(write=False)
    return array


def _int_array(value: Any, n: int, name: str, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise InvalidArgument(f"{where}: {name} must hold integers, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array.shape != (n,):
        raise InvalidArgument(f"{where}: {name} has shape {array.shape}, expected ({n},)")
    array.setflags(write=False)
    return array


# ---------------------------------------------------------------------------------------
# column_map


@njit(nogil=True, cache=True)
def _map_block(X, out, r0, r1, source, plain, indicator, fill, center, divisor, factor, offset, low, high):
    for j in range(out.shape[1]):
        s = source[j]
        if plain[j]:
            for r in range(r0, r1):
                out[r, j] = X[r, s]
        elif indicator[j]:
            for r in range(r0, r1):
                out[r, j] = 1.0 if np.isnan(X[r, s]) else 0.0
        else:
            # Each step stores into ``out`` and reads back, so it rounds to out's dtype
            # exactly where scikit-learn's in-place step rounds to its array's dtype.
            f, c, d, k, o, lo, hi = fill[j], center[j], divisor[j], factor[j], offset[j], low[j], high[j]
            for r in range(r0, r1):
                x = X[r, s]
                if np.isnan(x):
                    out[r, j] = f
                else:
                    out[r, j] = x
                if c != 0:
                    out[r, j] = out[r, j] - c
                if d != 1:
                    out[r, j] = out[r, j] / d
                if k != 1:
                    out[r, j] = out[r, j] * k
                if o != 0:
                    out[r, j] = out[r, j] + o
                if out[r, j] < lo:
                    out[r, j] = lo
                elif out[r, j] > hi:
                    out[r, j] = hi


@njit(nogil=True, cache=True)
def _map_serial(X, out, source, plain, indicator, fill, center, divisor, factor, offset, low, high):
    n = X.shape[0]
    for r0 in range(0, n, BLOCK):
        _map_block(
            X, out, r0, min(n, r0 + BLOCK), source, plain, indicator, fill, center, divisor, factor, offset, low, high
        )


@njit(nogil=True, cache=True, parallel=True)
def _map_parallel(X, out, source, plain, indicator, fill, center, divisor, factor, offset, low, high):
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        r0 = b * BLOCK
        _map_block(
            X, out, r0, min(n, r0 + BLOCK), source, plain, indicator, fill, center, divisor, factor, offset, low, high
        )


_MAP_FLOATS = ("fill", "center", "divisor", "factor", "offset", "low", "high")


@register_kind
@dataclass(frozen=True, eq=False)
class ColumnMap:
    """Output column j = the chain of the module docstring applied to input column
    ``source[j]``. A column whose chain is the identity (fill NaN, center 0, divisor 1,
    factor 1, offset 0, no bounds) is copied exactly."""

    kind: ClassVar[str] = "column_map"
    n_in: int
    source: np.ndarray
    fill: np.ndarray
    center: np.ndarray
    divisor: np.ndarray
    factor: np.ndarray
    offset: np.ndarray
    low: np.ndarray
    high: np.ndarray
    indicator: np.ndarray
    # Derived in __post_init__: the output columns that just copy their source.
    _plain: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = "column_map"
        if isinstance(self.n_in, bool) or not isinstance(self.n_in, int) or self.n_in < 1:
            raise InvalidArgument(f"{where}: n_in must be a positive integer, got {self.n_in!r}")
        source = np.asarray(self.source)
        n_out = source.shape[0] if source.ndim == 1 else -1
        if n_out < 1:
            raise InvalidArgument(f"{where}: source must be a non-empty 1-D array")
        source = _int_array(source, n_out, "source", where)
        if source.min() < 0 or source.max() >= self.n_in:
            raise InvalidArgument(f"{where}: source indices must lie in [0, {self.n_in})")
        object.__setattr__(self, "source", source)
        for name in _MAP_FLOATS:
            object.__setattr__(self, name, _float_array(getattr(self, name), n_out, name, where))
        indicator = np.ascontiguousarray(self.indicator, dtype=np.bool_)
        if indicator.shape != (n_out,):
            raise InvalidArgument(f"{where}: indicator has shape {indicator.shape}, expected ({n_out},)")
        indicator.setflags(write=False)
        object.__setattr__(self, "indicator", indicator)
        if np.isnan(self.center).any() or np.isnan(self.divisor).any() or (self.divisor == 0).any():
            raise InvalidArgument(f"{where}: center and divisor must be numbers, divisor non-zero")
        plain = (
            ~indicator
            & np.isnan(self.fill)
            & (self.center == 0)
            & (self.divisor == 1)
            & (self.factor == 1)
            & (self.offset == 0)
            & (self.low == -np.inf)
            & (self.high == np.inf)
        )
        plain.setflags(write=False)
        object.__setattr__(self, "_plain", plain)

    @property
    def n_features(self) -> int:
        return self.n_in

    @property
    def n_outputs(self) -> int:
        return self.source.shape[0]

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {name: getattr(self, name) for name in ("source", "indicator", *_MAP_FLOATS)}
        return {"n_in": self.n_in}, arrays

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> ColumnMap:
        names = ("source", "indicator", *_MAP_FLOATS)
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise InvalidArgument(f"column_map: missing arrays {missing}")
        n_in: Any = params.get("n_in")  # JSON, checked in __post_init__
        return cls(n_in, **{name: arrays[name] for name in names})

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise InvalidArgument(f"column_map: input has shape {X.shape}, expected (n, {self.n_in})")
        X = _as_float(X)
        out = _out_like(X, self.n_outputs)
        if X.shape[0] == 0:
            return out
        threads.run_kernel(
            _map_serial, _map_parallel, X.shape[0],
            X, out, self.source, self._plain, self.indicator,
            self.fill, self.center, self.divisor, self.factor, self.offset, self.low, self.high,
        )  # fmt: skip
        return out


def column_map(n_in: int, ops: list[dict[str, Any]]) -> ColumnMap:
    """A ColumnMap from one dict per output column: ``source`` and any of the chain's
    parameters (the identity's values by default) and ``indicator``."""
    defaults = {
        "fill": math.nan, "center": 0.0, "divisor": 1.0, "factor": 1.0,
        "offset": 0.0, "low": -math.inf, "high": math.inf,
    }  # fmt: skip
    columns = {name: [op.get(name, default) for op in ops] for name, default in defaults.items()}
    return ColumnMap(
        n_in,
        source=np.array([op["source"] for op in ops], dtype=np.int64),
        indicator=np.array([bool(op.get("indicator", False)) for op in ops], dtype=np.bool_),
        **{name: np.array(values, dtype=np.float64) for name, values in columns.items()},
    )


# ---------------------------------------------------------------------------------------
# encode


@njit(nogil=True, cache=True, inline="always")
def _category_index(x, cats, s, k, has_nan):
    """Index of x among cats[s:s+k] (sorted, NaN last when has_nan), or -1."""
    if np.isnan(x):
        return k - 1 if has_nan else -1
    lo = 0
    hi = k - 1 if has_nan else k
    while lo < hi:
        mid = (lo + hi) // 2
        if cats[s + mid] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo < (k - 1 if has_nan else k) and cats[s + lo] == x:
        return lo
    return -1


@njit(nogil=True, cache=True)
def _encode_block(
    X, out, r0, r1, mode, cat_start, categories, has_nan, drop, on_unknown, unknown_value, missing_value,
    out_start, errors, b,
):  # fmt: skip
    for i in range(X.shape[1]):
        o = out_start[i]
        if mode[i] == PASS:
            for r in range(r0, r1):
                out[r, o] = X[r, i]
            continue
        s = cat_start[i]
        k = cat_start[i + 1] - s
        nan_cat = has_nan[i] != 0
        if mode[i] == ONE_HOT:
            width = out_start[i + 1] - o
            d = drop[i]
            for r in range(r0, r1):
                for c in range(width):
                    out[r, o + c] = 0.0
                idx = _category_index(np.float64(X[r, i]), categories, s, k, nan_cat)
                if idx < 0:
                    if on_unknown[i] == ERROR and errors[b, 0] < 0:
                        errors[b, 0] = r
                        errors[b, 1] = i
                elif d < 0 or idx < d:
                    out[r, o + idx] = 1.0
                elif idx > d:
                    out[r, o + idx - 1] = 1.0
        else:
            for r in range(r0, r1):
                idx = _category_index(np.float64(X[r, i]), categories, s, k, nan_cat)
                if idx < 0:
                    if on_unknown[i] == ERROR and errors[b, 0] < 0:
                        errors[b, 0] = r
                        errors[b, 1] = i
                    out[r, o] = unknown_value[i]
                elif nan_cat and idx == k - 1:
                    out[r, o] = missing_value[i]
                else:
                    out[r, o] = idx


@njit(nogil=True, cache=True)
def _encode_serial(X, out, mode, cat_start, categories, has_nan, drop, on_unknown, unknown_value, missing_value,
                   out_start, errors):  # fmt: skip
    n = X.shape[0]
    for r0 in range(0, n, BLOCK):
        _encode_block(
            X, out, r0, min(n, r0 + BLOCK), mode, cat_start, categories, has_nan, drop, on_unknown,
            unknown_value, missing_value, out_start, errors, r0 // BLOCK,
        )  # fmt: skip


@njit(nogil=True, cache=True, parallel=True)
def _encode_parallel(X, out, mode, cat_start, categories, has_nan, drop, on_unknown, unknown_value, missing_value,
                     out_start, errors):  # fmt: skip
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        r0 = b * BLOCK
        _encode_block(
            X, out, r0, min(n, r0 + BLOCK), mode, cat_start, categories, has_nan, drop, on_unknown,
            unknown_value, missing_value, out_start, errors, b,
        )  # fmt: skip


@register_kind
@dataclass(frozen=True, eq=False)
class Encode:
    """Per input column: pass through, one-hot or ordinal, as the module docstring says.

    ``categories[cat_start[i]:cat_start[i + 1]]`` are column i's categories, ascending,
    NaN last when ``has_nan[i]``. One-hot: ``drop[i]`` is the dropped category's index
    (-1 none); an unknown value gives zeros or, with on_unknown "error", InvalidArgument
    naming the column. Ordinal: the category's index, ``missing_value[i]`` for the NaN
    category, ``unknown_value[i]`` (or the error) for an unknown value. ``names`` name the
    input columns in error messages.
    """

    kind: ClassVar[str] = "encode"
    names: tuple[str, ...]
    mode: np.ndarray
    cat_start: np.ndarray
    categories: np.ndarray
    has_nan: np.ndarray
    drop: np.ndarray
    on_unknown: np.ndarray
    unknown_value: np.ndarray
    missing_value: np.ndarray
    # Derived in __post_init__: where each input column's outputs start (n + 1 offsets).
    _out_start: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = "encode"
        names = tuple(self.names)
        n = len(names)
        if n < 1 or not all(isinstance(name, str) for name in names):
            raise InvalidArgument(f"{where}: names must be a non-empty list of strings")
        object.__setattr__(self, "names", names)
        mode = _int_array(self.mode, n, "mode", where)
        if ((mode < PASS) | (mode > ORDINAL)).any():
            raise InvalidArgument(f"{where}: mode values must be 0 (pass), 1 (one-hot) or 2 (ordinal)")
        cat_start = _int_array(self.cat_start, n + 1, "cat_start", where)
        categories = np.ascontiguousarray(self.categories, dtype=np.float64)
        if categories.ndim != 1 or cat_start[0] != 0 or cat_start[-1] != categories.shape[0]:
            raise InvalidArgument(f"{where}: cat_start must run from 0 to len(categories)")
        if (np.diff(cat_start) < 0).any():
            raise InvalidArgument(f"{where}: cat_start must not decrease")
        has_nan = _int_array(self.has_nan, n, "has_nan", where)
        drop = _int_array(self.drop, n, "drop", where)
        on_unknown = _int_array(self.on_unknown, n, "on_unknown", where)
        if ((on_unknown < IGNORE) | (on_unknown > VALUE)).any():
            raise InvalidArgument(f"{where}: on_unknown values must be 0 (ignore), 1 (error) or 2 (value)")
        widths = np.ones(n, dtype=np.int64)
        for i in range(n):
            cats = categories[cat_start[i] : cat_start[i + 1]]
            k = cats.shape[0]
            if mode[i] == PASS:
                continue
            if k < 1:
                raise InvalidArgument(f"{where}: column {names[i]!r} has no categories")
            plain = cats[:-1] if has_nan[i] else cats
            if np.isnan(plain).any() or (has_nan[i] and not np.isnan(cats[-1])) or (np.diff(plain) <= 0).any():
                raise InvalidArgument(
                    f"{where}: column {names[i]!r} categories must be strictly ascending numbers, NaN last if any"
                )
            if mode[i] == ONE_HOT:
                if not -1 <= drop[i] < k:
                    raise InvalidArgument(f"{where}: column {names[i]!r} drops category {drop[i]} of {k}")
                widths[i] = k - (drop[i] >= 0)
        for name, array in (
            ("mode", mode), ("cat_start", cat_start), ("has_nan", has_nan), ("drop", drop), ("on_unknown", on_unknown),
        ):  # fmt: skip
            object.__setattr__(self, name, array)
        categories.setflags(write=False)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "unknown_value", _float_array(self.unknown_value, n, "unknown_value", where))
        object.__setattr__(self, "missing_value", _float_array(self.missing_value, n, "missing_value", where))
        out_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(widths, out=out_start[1:])
        out_start.setflags(write=False)
        object.__setattr__(self, "_out_start", out_start)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def n_outputs(self) -> int:
        return int(self._out_start[-1])

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {
            name: getattr(self, name)
            for name in (
                "mode", "cat_start", "categories", "has_nan", "drop", "on_unknown", "unknown_value", "missing_value",
            )
        }  # fmt: skip
        return {"names": list(self.names)}, arrays

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Encode:
        names = ("mode", "cat_start", "categories", "has_nan", "drop", "on_unknown", "unknown_value", "missing_value")
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise InvalidArgument(f"encode: missing arrays {missing}")
        column_names = params.get("names")
        if not isinstance(column_names, list):
            raise InvalidArgument("encode: 'names' must be a list of column names")
        return cls(tuple(column_names), **{name: arrays[name] for name in names})

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidArgument(f"encode: input has shape {X.shape}, expected (n, {self.n_features})")
        X = _as_float(X)
        out = _out_like(X, self.n_outputs)
        n = X.shape[0]
        if n == 0:
            return out
        errors = np.full(((n + BLOCK - 1) // BLOCK, 2), -1, dtype=np.int64)
        threads.run_kernel(
            _encode_serial, _encode_parallel, n,
            X, out, self.mode, self.cat_start, self.categories, self.has_nan, self.drop, self.on_unknown,
            self.unknown_value, self.missing_value, self._out_start, errors,
        )  # fmt: skip
        failed = np.flatnonzero(errors[:, 0] >= 0)
        if failed.size:
            row, column = errors[failed[0]]
            value = X[row, column]
            raise InvalidArgument(
                f"column {self.names[column]!r} has unknown category {_number(value)} (row {row}); "
                "the encoder was fitted with handle_unknown='error'"
            )
        return out


def _number(value: float) -> str:
    value = float(value)
    return repr(int(value)) if value.is_integer() else repr(value)
