"""scikit-learn transformers -> ``column_map`` and ``encode`` steps, following the columns.

Each transformer (StandardScaler, MinMaxScaler, RobustScaler, SimpleImputer,
OneHotEncoder, OrdinalEncoder, identity FunctionTransformers, and the ColumnTransformers
and Pipelines that combine them) is compiled against the columns it receives (``Col``)
and gives one or more steps (``MapStep``, ``EncodeStep``) over exactly those columns; a
``Context`` keeps, per raw input column, its type once a consumer decides it and the
baseline statistics the transformers learned about it. ``sklearn_pipeline`` turns the
steps into stages (see its docstring for how the pieces fit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import unsupported
from scoring_core.convert.lineage import json_value
from scoring_core.transforms import ERROR, IGNORE, ONE_HOT, ORDINAL, PASS, VALUE

# ---------------------------------------------------------------------------------------
# What compilation tracks


@dataclass(frozen=True)
class Col:
    """A column of the matrix between two steps."""

    name: str  # for messages and derived names
    origin: int | None  # the raw input column it still describes, None once derived (encoded)
    string: bool = False  # holds the codes of a string input, not encoded yet
    after: tuple[str, ...] = ()  # transformers applied since the raw input


@dataclass
class Input:
    """A raw input column: its type, once a consumer decides it, and its baseline."""

    name: str
    kind: str | None = None  # "number" or "string"
    categories: tuple[str, ...] | None = None
    unknown: str = "code"
    fill: str | None = None
    missing_category: bool = False  # its encoder has a category for missing values
    baseline: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Context:
    inputs: list[Input]

    def decide(self, col: Col, kind: str, who: str) -> None:
        if col.origin is None:
            if kind == "string":
                raise Unimplemented(f"{who} sees strings in column {col.name!r}, which is not a raw input column")
            return
        entry = self.inputs[col.origin]
        if entry.kind is None:
            entry.kind = kind
        elif entry.kind != kind:
            raise Unimplemented(
                f"input column {entry.name!r} is read as {entry.kind} by one transformer and as {kind} by {who}"
            )

    def record(self, col: Col, who: str, stats: dict[str, Any]) -> None:
        if col.origin is not None:
            entry = {"source": who, "after": list(col.after), **{k: json_value(v) for k, v in stats.items()}}
            self.inputs[col.origin].baseline.append(entry)


@dataclass
class MapStep:
    n_in: int
    ops: list[dict[str, Any]]  # one per output column; see transforms.column_map


@dataclass
class EncodeStep:
    specs: list[dict[str, Any]]  # one per input column; see _pass_spec

    @property
    def n_in(self) -> int:
        return len(self.specs)


Step = MapStep | EncodeStep
_Compiler = Callable[[Any, list[Col], Context], tuple[list[Step], list[Col]]]


def _pass_spec(name: str) -> dict[str, Any]:
    return {
        "name": name, "mode": PASS, "categories": np.empty(0), "has_nan": False, "drop": -1,
        "on_unknown": IGNORE, "unknown_value": math.nan, "missing_value": math.nan,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# Transformers


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return cls.__name__


def _check_fitted_width(t: Any, cols: list[Col]) -> str:
    name = _class_name(t)
    n = getattr(t, "n_features_in_", None)
    if n is None:
        raise InvalidArgument(f"{name} is not fitted (it has no n_features_in_)")
    if n != len(cols):
        raise InvalidArgument(f"{name} was fitted on {n} columns but receives {len(cols)}")
    return name


def _numeric(t: Any, cols: list[Col], ctx: Context) -> str:
    name = _check_fitted_width(t, cols)
    for col in cols:
        if col.string:
            raise Unimplemented(f"{name} receives the string column {col.name!r}; only encoders take strings")
        ctx.decide(col, "number", name)
    return name


def _per_column(value: Any, n: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(n, default)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))


def _after(cols: list[Col], name: str) -> list[Col]:
    return [replace(col, after=(*col.after, name)) for col in cols]


def _n_seen(t: Any, i: int) -> Any:
    seen = getattr(t, "n_samples_seen_", None)
    return seen[i] if isinstance(seen, np.ndarray) and seen.ndim == 1 else seen


def _standard_scaler(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _numeric(t, cols, ctx)
    n = len(cols)
    # mean_ is learned even with with_mean=False, but then transform does not subtract it.
    mean = _per_column(t.mean_ if t.with_mean else None, n, 0.0)
    scale = _per_column(t.scale_ if t.with_std else None, n, 1.0)
    var = getattr(t, "var_", None)
    for i, col in enumerate(cols):
        ctx.record(col, name, {
            "mean": None if t.mean_ is None else t.mean_[i],
            "var": None if var is None else var[i],
            "n_samples_seen": _n_seen(t, i),
        })  # fmt: skip
    if _rounds_params_to_float32(t, mean, scale):
        mean, scale = mean.astype(np.float32).astype(np.float64), scale.astype(np.float32).astype(np.float64)
    ops = [{"source": i, "center": mean[i], "divisor": scale[i]} for i in range(n)]
    return [MapStep(n, ops)], _after(cols, name)


def _rounds_params_to_float32(t: Any, mean: np.ndarray, scale: np.ndarray) -> bool:
    """Whether this scikit-learn rounds mean_ and scale_ to float32 before scaling float32 data.

    scikit-learn 1.9 does (round32(round32(x - m32) / s32)); earlier releases subtract the
    float64 mean (round32(x - m)). One ulp decides tree branches near thresholds, so the
    installed version is asked with a probe rather than assumed. Parameters that are
    float32 values stored as float64 make the column-map kernel round exactly like it.
    """
    n = len(mean)
    probe = (np.random.default_rng(0).normal(size=(64, n)) * scale + mean).astype(np.float32)
    try:
        seen = np.asarray(t.transform(probe), dtype=np.float32)
    except Exception:  # noqa: BLE001 - a transformer that refuses the probe keeps float64 parameters
        return False
    m32, s32 = mean.astype(np.float32), scale.astype(np.float32)
    return bool(np.array_equal(seen, (probe - m32) / s32))


def _min_max_scaler(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _numeric(t, cols, ctx)
    n = len(cols)
    low, high = (float(t.feature_range[0]), float(t.feature_range[1])) if t.clip else (-math.inf, math.inf)
    for i, col in enumerate(cols):
        ctx.record(col, name, {
            "data_min": t.data_min_[i], "data_max": t.data_max_[i], "n_samples_seen": _n_seen(t, i),
        })  # fmt: skip
    ops = [
        {"source": i, "factor": t.scale_[i], "offset": t.min_[i], "low": low, "high": high} for i in range(n)
    ]
    return [MapStep(n, ops)], _after(cols, name)


def _robust_scaler(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _numeric(t, cols, ctx)
    n = len(cols)
    center = _per_column(t.center_ if t.with_centering else None, n, 0.0)
    scale = _per_column(t.scale_ if t.with_scaling else None, n, 1.0)
    for i, col in enumerate(cols):
        ctx.record(col, name, {
            "center": None if t.center_ is None else t.center_[i],
            "scale": None if t.scale_ is None else t.scale_[i],
            "quantile_range": list(t.quantile_range),
        })  # fmt: skip
    ops = [{"source": i, "center": center[i], "divisor": scale[i]} for i in range(n)]
    return [MapStep(n, ops)], _after(cols, name)


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _simple_imputer(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _check_fitted_width(t, cols)
    if not _is_nan(t.missing_values):
        raise Unimplemented(f"SimpleImputer(missing_values={t.missing_values!r}) is not supported; use np.nan")
    if t.strategy not in ("mean", "median", "most_frequent", "constant"):
        raise Unimplemented(f"SimpleImputer(strategy={t.strategy!r}) is not supported")
    stats = t.statistics_
    ops: list[dict[str, Any]] = []
    out: list[Col] = []
    for i, (col, stat) in enumerate(zip(cols, stats)):
        if stat is None or _is_nan(stat):
            # scikit-learn drops a column that was all missing in training (no statistic).
            if stats.dtype == object and col.origin is not None and ctx.inputs[col.origin].kind is None:
                ctx.decide(col, "string", name)
            continue
        ctx.record(col, name, {"strategy": t.strategy, "statistic": stat})
        if isinstance(stat, str):
            if col.origin is None or col.after:
                raise Unimplemented(
                    f"SimpleImputer fills column {col.name!r} with the string {stat!r}; strings can be "
                    "imputed only in raw input columns"
                )
            ctx.decide(col, "string", name)
            entry = ctx.inputs[col.origin]
            if entry.fill is not None and entry.fill != stat:
                raise Unimplemented(f"input column {col.name!r} is imputed with two strings: {entry.fill!r}, {stat!r}")
            entry.fill = stat  # applied to nulls as the column is read
            ops.append({"source": i})
            out.append(replace(col, string=True, after=(*col.after, name)))
        else:
            if col.string:
                raise Unimplemented(f"SimpleImputer fills the string column {col.name!r} with the number {stat!r}")
            ctx.decide(col, "number", name)
            ops.append({"source": i, "fill": float(stat)})
            out.append(replace(col, after=(*col.after, name)))
    if t.add_indicator:
        for i in t.indicator_.features_:
            if cols[i].string or (cols[i].origin is not None and ctx.inputs[cols[i].origin].kind == "string"):
                raise Unimplemented(f"SimpleImputer(add_indicator=True) on the string column {cols[i].name!r}")
            ops.append({"source": int(i), "indicator": True})
            out.append(Col(name=f"missingindicator_{cols[i].name}", origin=None))
    if not ops:
        raise Unimplemented("SimpleImputer drops every column it receives")
    return [MapStep(len(cols), ops)], out


def _categories(
    cats: np.ndarray, col: Col, ctx: Context, who: str, unknown: str
) -> tuple[np.ndarray, bool, bool, list[Any]]:
    """A column's categories as the encode stage sees them: (sorted float values with NaN
    last, whether a missing category exists, whether it is NaN (not None), labels)."""
    cats = np.asarray(cats)
    strings = [c for c in cats if isinstance(c, str)] if cats.dtype == object else []
    if strings:
        rest = [c for c in cats if not isinstance(c, str)]
        if len(rest) > 1 or (rest and not (rest[0] is None or _is_nan(rest[0]))) or (
            rest and not (cats[-1] is None or _is_nan(cats[-1]))
        ):
            raise Unimplemented(f"{who}: column {col.name!r} mixes strings and other categories {rest!r}")
        origin = col.origin  # a string column (col.string) is always a raw input's
        if origin is None or not (col.string or not col.after):
            raise Unimplemented(f"{who}: column {col.name!r} has string categories but is not a raw input column")
        ctx.decide(col, "string", who)
        entry = ctx.inputs[origin]
        if entry.categories is not None and entry.categories != tuple(strings):
            raise Unimplemented(f"input column {col.name!r} is encoded twice with different categories")
        entry.categories = tuple(strings)
        entry.missing_category = entry.missing_category or bool(rest)
        if unknown == "error":
            entry.unknown = "error"
        codes = np.arange(len(strings), dtype=np.float64)
        has_missing = bool(rest)
        if has_missing:
            codes = np.append(codes, math.nan)
        return codes, has_missing, has_missing and rest[0] is not None, [*strings, *([None] if rest else [])]
    if col.string:
        raise Unimplemented(f"{who}: column {col.name!r} holds strings but its categories are numbers")
    ctx.decide(col, "number", who)
    try:
        values = np.asarray(cats, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise Unimplemented(f"{who}: column {col.name!r} has categories {cats!r} of an unsupported type") from err
    has_nan = bool(values.size) and bool(np.isnan(values[-1]))
    plain = values[:-1] if has_nan else values
    if np.isnan(plain).any() or (np.diff(plain) <= 0).any():
        raise Unimplemented(f"{who}: column {col.name!r} categories are not ascending numbers")
    return values, has_nan, True, [None if math.isnan(v) else v for v in values.tolist()]


def _check_frequent_only(t: Any, name: str) -> None:
    if getattr(t, "_infrequent_enabled", False):
        raise Unimplemented(f"{name} with infrequent categories (min_frequency or max_categories) is not supported")


def _one_hot_encoder(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _check_fitted_width(t, cols)
    _check_frequent_only(t, name)
    if t.handle_unknown not in ("error", "ignore", "infrequent_if_exist", "warn"):
        raise Unimplemented(f"OneHotEncoder(handle_unknown={t.handle_unknown!r}) is not supported")
    refuse = t.handle_unknown == "error"
    drops = t.drop_idx_
    specs: list[dict[str, Any]] = []
    out: list[Col] = []
    for i, (col, cats) in enumerate(zip(cols, t.categories_)):
        values, has_nan, _, labels = _categories(cats, col, ctx, name, "error" if refuse else "code")
        ctx.record(col, name, {"categories": labels})
        drop = -1 if drops is None or drops[i] is None else int(drops[i])
        specs.append({
            "name": col.name, "mode": ONE_HOT, "categories": values, "has_nan": has_nan, "drop": drop,
            "on_unknown": ERROR if refuse else IGNORE, "unknown_value": math.nan, "missing_value": math.nan,
        })  # fmt: skip
        out.extend(Col(name=f"{col.name}_{label}", origin=None) for c, label in enumerate(labels) if c != drop)
    return [EncodeStep(specs)], out


def _ordinal_encoder(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    name = _check_fitted_width(t, cols)
    _check_frequent_only(t, name)
    if t.handle_unknown not in ("error", "use_encoded_value"):
        raise Unimplemented(f"OrdinalEncoder(handle_unknown={t.handle_unknown!r}) is not supported")
    refuse = t.handle_unknown == "error"
    unknown_value = math.nan if refuse or t.unknown_value is None else float(t.unknown_value)
    specs, out = [], []
    for col, cats in zip(cols, t.categories_):
        values, has_nan, missing_is_nan, labels = _categories(cats, col, ctx, name, "error" if refuse else "code")
        ctx.record(col, name, {"categories": labels})
        # scikit-learn encodes a NaN category as encoded_missing_value, a None category by its index.
        missing = float(t.encoded_missing_value) if missing_is_nan else float(len(values) - 1)
        specs.append({
            "name": col.name, "mode": ORDINAL, "categories": values, "has_nan": has_nan, "drop": -1,
            "on_unknown": ERROR if refuse else VALUE, "unknown_value": unknown_value, "missing_value": missing,
        })  # fmt: skip
        out.append(Col(name=col.name, origin=None))
    return [EncodeStep(specs)], out


def _function_transformer(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    if t.func is not None:
        raise Unimplemented("FunctionTransformer with a func is not supported (user code cannot be compiled)")
    return [], cols


def _pipeline(p: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    return run_steps([step for _, step in p.steps], cols, ctx)


def run_steps(transformers: list[Any], cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    """Compile ``transformers`` in turn over ``cols`` (None and "passthrough" skipped): their
    steps, and the columns the last one gives."""
    steps: list[Step] = []
    for t in transformers:
        if t is None or (isinstance(t, str) and t == "passthrough"):
            continue
        more, cols = _transformer(t, cols, ctx)
        steps.extend(more)
    return steps, cols


def _column_transformer(ct: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    _check_fitted_width(ct, cols)
    if ct.transformer_weights:
        raise Unimplemented("ColumnTransformer(transformer_weights=...) is not supported")
    indices = getattr(ct, "_transformer_to_input_indices", None)
    if indices is None:
        raise Unimplemented("this scikit-learn version's ColumnTransformer does not list its input indices")
    parts = []
    for name, t, _ in ct.transformers_:
        idx = [int(i) for i in indices.get(name, [])]
        if not idx or (isinstance(t, str) and t == "drop"):
            continue
        parts.append((name, t, idx))
    selection = [i for _, _, idx in parts for i in idx]
    steps: list[Step] = []
    if selection != list(range(len(cols))):
        steps.append(MapStep(len(cols), [{"source": i} for i in selection]))
    current = [cols[i] for i in selection]
    offset = 0
    widths = getattr(ct, "output_indices_", {})
    for name, t, idx in parts:
        before, local, after = current[:offset], current[offset : offset + len(idx)], current[offset + len(idx) :]
        if isinstance(t, str) and t == "passthrough":
            part_steps: list[Step] = []
        else:
            part_steps, local = _transformer(t, local, ctx)
        steps.extend(_place(step, before, after) for step in part_steps)
        expected = widths.get(name)
        if isinstance(expected, slice) and expected.stop - expected.start != len(local):
            raise RuntimeError(f"ColumnTransformer part {name!r}: compiled {len(local)} columns, sklearn gives "
                               f"{expected.stop - expected.start}")  # fmt: skip
        current = before + local + after
        offset += len(local)
    return steps, current


def _place(step: Step, before: list[Col], after: list[Col]) -> Step:
    """Widen a step over some columns to one over ``before + those + after``, the others
    passing through."""
    b, a = len(before), len(after)
    if not b and not a:
        return step
    if isinstance(step, MapStep):
        ops = (
            [{"source": i} for i in range(b)]
            + [{**op, "source": op["source"] + b} for op in step.ops]
            + [{"source": b + step.n_in + i} for i in range(a)]
        )
        return MapStep(b + step.n_in + a, ops)
    return EncodeStep(
        [_pass_spec(c.name) for c in before] + step.specs + [_pass_spec(c.name) for c in after]
    )


_TRANSFORMERS: dict[tuple[str, str], _Compiler] = {
    ("sklearn.preprocessing", "StandardScaler"): _standard_scaler,
    ("sklearn.preprocessing", "MinMaxScaler"): _min_max_scaler,
    ("sklearn.preprocessing", "RobustScaler"): _robust_scaler,
    ("sklearn.preprocessing", "OneHotEncoder"): _one_hot_encoder,
    ("sklearn.preprocessing", "OrdinalEncoder"): _ordinal_encoder,
    ("sklearn.preprocessing", "FunctionTransformer"): _function_transformer,
    ("sklearn.impute", "SimpleImputer"): _simple_imputer,
    ("sklearn.compose", "ColumnTransformer"): _column_transformer,
    ("sklearn.pipeline", "Pipeline"): _pipeline,
}
SUPPORTED_TRANSFORMERS = tuple(f"{module}.{name}" for module, name in _TRANSFORMERS)


def _compiler_for(obj: Any) -> _Compiler | None:
    cls = type(obj)
    for (module, name), compiler in _TRANSFORMERS.items():
        if cls.__name__ == name and (cls.__module__ == module or cls.__module__.startswith(module + ".")):
            return compiler
    return None


def is_transformer(obj: Any) -> bool:
    """Whether ``obj`` is a transformer compiled here, other than a Pipeline (which may
    end in an estimator, and is then converted as one)."""
    return _compiler_for(obj) not in (None, _pipeline)


def _transformer(t: Any, cols: list[Col], ctx: Context) -> tuple[list[Step], list[Col]]:
    compiler = _compiler_for(t)
    if compiler is None:
        raise unsupported(t, SUPPORTED_TRANSFORMERS, "transformer")
    return compiler(t, cols, ctx)
