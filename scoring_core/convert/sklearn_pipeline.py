"""scikit-learn Pipelines -> feature-transform stages, then the final estimator's stages.

A Pipeline's transform steps (StandardScaler, MinMaxScaler, RobustScaler, SimpleImputer,
OneHotEncoder, OrdinalEncoder, ColumnTransformer, nested Pipelines, identity
FunctionTransformers) become ``column_map`` and ``encode`` stages; its final estimator
goes through the converter registry like any estimator, so whatever is registered
(linear models, MLPs, tree ensembles) also works at the end of a Pipeline.

How the pieces fit:

- Compilation follows the columns. Each transformer is compiled against the columns it
  receives and gives one or more *steps* over exactly those columns. A ColumnTransformer
  first gathers the columns of all its parts side by side (one column_map), then compiles
  each part in turn and widens its steps to the full width, every other column passing
  through, so each part's output lands where scikit-learn puts it.
- String columns are decided by their first consumer: an encoder fitted on strings (or
  a SimpleImputer whose statistic is a string) makes its raw input column a string
  column; it is then read as codes into the encoder's vocabulary (``string_inputs``),
  with the imputer's fill applied to nulls there. Arrow has one null where pandas has
  None and NaN (scikit-learn's imputer fills only NaN, and encoders keep None and NaN
  apart): a null is the encoder's missing category, if it has one, or the fill.
- Baseline statistics: every transformer that sees a raw input column (possibly after
  other transformers, listed in ``after``) records what it learned about it: scaler
  means, variances, ranges, imputer statistics, encoder categories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert import Converted, convert as convert_estimator, register_converter
from scoring_core.convert.lineage import json_param, json_value
from scoring_core.kinds import Stage
from scoring_core.string_inputs import StringColumn
from scoring_core.transforms import ERROR, IGNORE, ONE_HOT, ORDINAL, PASS, VALUE, Encode, column_map

# ---------------------------------------------------------------------------------------
# What compilation tracks


@dataclass(frozen=True)
class _Col:
    """A column of the matrix between two steps."""

    name: str  # for messages and derived names
    origin: int | None  # the raw input column it still describes, None once derived (encoded)
    string: bool = False  # holds the codes of a string input, not encoded yet
    after: tuple[str, ...] = ()  # transformers applied since the raw input


@dataclass
class _Input:
    """A raw input column: its type, once a consumer decides it, and its baseline."""

    name: str
    kind: str | None = None  # "number" or "string"
    categories: tuple[str, ...] | None = None
    unknown: str = "code"
    fill: str | None = None
    missing_category: bool = False  # its encoder has a category for missing values
    baseline: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Context:
    inputs: list[_Input]

    def decide(self, col: _Col, kind: str, who: str) -> None:
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

    def record(self, col: _Col, who: str, stats: dict[str, Any]) -> None:
        if col.origin is not None:
            entry = {"source": who, "after": list(col.after), **{k: json_value(v) for k, v in stats.items()}}
            self.inputs[col.origin].baseline.append(entry)


@dataclass
class _MapStep:
    n_in: int
    ops: list[dict[str, Any]]  # one per output column; see transforms.column_map


@dataclass
class _EncodeStep:
    specs: list[dict[str, Any]]  # one per input column; see _pass_spec

    @property
    def n_in(self) -> int:
        return len(self.specs)


_Step = _MapStep | _EncodeStep
_Compiler = Callable[[Any, list[_Col], _Context], tuple[list[_Step], list[_Col]]]


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


def _check_fitted_width(t: Any, cols: list[_Col]) -> str:
    name = _class_name(t)
    n = getattr(t, "n_features_in_", None)
    if n is None:
        raise InvalidArgument(f"{name} is not fitted (it has no n_features_in_)")
    if n != len(cols):
        raise InvalidArgument(f"{name} was fitted on {n} columns but receives {len(cols)}")
    return name


def _numeric(t: Any, cols: list[_Col], ctx: _Context) -> str:
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


def _after(cols: list[_Col], name: str) -> list[_Col]:
    return [replace(col, after=(*col.after, name)) for col in cols]


def _n_seen(t: Any, i: int) -> Any:
    seen = getattr(t, "n_samples_seen_", None)
    return seen[i] if isinstance(seen, np.ndarray) and seen.ndim == 1 else seen


def _standard_scaler(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
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
    return [_MapStep(n, ops)], _after(cols, name)


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


def _min_max_scaler(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
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
    return [_MapStep(n, ops)], _after(cols, name)


def _robust_scaler(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
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
    return [_MapStep(n, ops)], _after(cols, name)


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _simple_imputer(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    name = _check_fitted_width(t, cols)
    if not _is_nan(t.missing_values):
        raise Unimplemented(f"SimpleImputer(missing_values={t.missing_values!r}) is not supported; use np.nan")
    if t.strategy not in ("mean", "median", "most_frequent", "constant"):
        raise Unimplemented(f"SimpleImputer(strategy={t.strategy!r}) is not supported")
    stats = t.statistics_
    ops: list[dict[str, Any]] = []
    out: list[_Col] = []
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
            out.append(_Col(name=f"missingindicator_{cols[i].name}", origin=None))
    if not ops:
        raise Unimplemented("SimpleImputer drops every column it receives")
    return [_MapStep(len(cols), ops)], out


def _categories(
    cats: np.ndarray, col: _Col, ctx: _Context, who: str, unknown: str
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
        if not (col.string or (col.origin is not None and not col.after)):
            raise Unimplemented(f"{who}: column {col.name!r} has string categories but is not a raw input column")
        ctx.decide(col, "string", who)
        entry = ctx.inputs[col.origin]
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


def _one_hot_encoder(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    name = _check_fitted_width(t, cols)
    _check_frequent_only(t, name)
    if t.handle_unknown not in ("error", "ignore", "infrequent_if_exist", "warn"):
        raise Unimplemented(f"OneHotEncoder(handle_unknown={t.handle_unknown!r}) is not supported")
    refuse = t.handle_unknown == "error"
    drops = t.drop_idx_
    specs, out = [], []
    for i, (col, cats) in enumerate(zip(cols, t.categories_)):
        values, has_nan, _, labels = _categories(cats, col, ctx, name, "error" if refuse else "code")
        ctx.record(col, name, {"categories": labels})
        drop = -1 if drops is None or drops[i] is None else int(drops[i])
        specs.append({
            "name": col.name, "mode": ONE_HOT, "categories": values, "has_nan": has_nan, "drop": drop,
            "on_unknown": ERROR if refuse else IGNORE, "unknown_value": math.nan, "missing_value": math.nan,
        })  # fmt: skip
        out.extend(_Col(name=f"{col.name}_{label}", origin=None) for c, label in enumerate(labels) if c != drop)
    return [_EncodeStep(specs)], out


def _ordinal_encoder(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
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
        out.append(_Col(name=col.name, origin=None))
    return [_EncodeStep(specs)], out


def _function_transformer(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    if t.func is not None:
        raise Unimplemented("FunctionTransformer with a func is not supported (user code cannot be compiled)")
    return [], cols


def _pipeline(p: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    return _run_steps([step for _, step in p.steps], cols, ctx)


def _run_steps(transformers: list[Any], cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    steps: list[_Step] = []
    for t in transformers:
        if t is None or (isinstance(t, str) and t == "passthrough"):
            continue
        more, cols = _transformer(t, cols, ctx)
        steps.extend(more)
    return steps, cols


def _column_transformer(ct: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
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
    steps: list[_Step] = []
    if selection != list(range(len(cols))):
        steps.append(_MapStep(len(cols), [{"source": i} for i in selection]))
    current = [cols[i] for i in selection]
    offset = 0
    widths = getattr(ct, "output_indices_", {})
    for name, t, idx in parts:
        before, local, after = current[:offset], current[offset : offset + len(idx)], current[offset + len(idx) :]
        if isinstance(t, str) and t == "passthrough":
            part_steps, local = [], local
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


def _place(step: _Step, before: list[_Col], after: list[_Col]) -> _Step:
    """Widen a step over some columns to one over ``before + those + after``, the others
    passing through."""
    b, a = len(before), len(after)
    if not b and not a:
        return step
    if isinstance(step, _MapStep):
        ops = (
            [{"source": i} for i in range(b)]
            + [{**op, "source": op["source"] + b} for op in step.ops]
            + [{"source": b + step.n_in + i} for i in range(a)]
        )
        return _MapStep(b + step.n_in + a, ops)
    return _EncodeStep(
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


def _transformer(t: Any, cols: list[_Col], ctx: _Context) -> tuple[list[_Step], list[_Col]]:
    compiler = _compiler_for(t)
    if compiler is None:
        cls = type(t)
        raise Unimplemented(
            f"scoring_core cannot compile the transformer {cls.__name__} ({cls.__module__}.{cls.__qualname__}); "
            f"supported transformers: {', '.join(SUPPORTED_TRANSFORMERS)}"
        )
    return compiler(t, cols, ctx)


# ---------------------------------------------------------------------------------------
# Steps -> stages


def _fuse(steps: list[_Step]) -> list[_Step]:
    """Fold a pure column selection (every op a plain copy) into the map next to it."""
    fused: list[_Step] = []
    for step in steps:
        prev = fused[-1] if fused else None
        if isinstance(step, _MapStep) and isinstance(prev, _MapStep):
            if all(set(op) == {"source"} for op in prev.ops):
                fused[-1] = _MapStep(prev.n_in, [{**op, "source": prev.ops[op["source"]]["source"]} for op in step.ops])
                continue
            if all(set(op) == {"source"} for op in step.ops):
                fused[-1] = _MapStep(prev.n_in, [dict(prev.ops[op["source"]]) for op in step.ops])
                continue
        fused.append(step)
    return fused


def _stage(step: _Step) -> Stage:
    if isinstance(step, _MapStep):
        return column_map(step.n_in, step.ops)
    specs = step.specs
    sizes = [len(s["categories"]) for s in specs]
    return Encode(
        names=tuple(s["name"] for s in specs),
        mode=np.array([s["mode"] for s in specs], dtype=np.int64),
        cat_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        categories=np.concatenate([np.asarray(s["categories"], dtype=np.float64) for s in specs]),
        has_nan=np.array([s["has_nan"] for s in specs], dtype=np.int64),
        drop=np.array([s["drop"] for s in specs], dtype=np.int64),
        on_unknown=np.array([s["on_unknown"] for s in specs], dtype=np.int64),
        unknown_value=np.array([s["unknown_value"] for s in specs], dtype=np.float64),
        missing_value=np.array([s["missing_value"] for s in specs], dtype=np.float64),
    )


def _step_lineage(t: Any) -> dict[str, Any]:
    cls = type(t)
    params = {k: json_param(v) for k, v in sorted(t.get_params(deep=False).items())} if hasattr(t, "get_params") else {}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params}


# ---------------------------------------------------------------------------------------
# The converter


def supports(estimator: Any) -> bool:
    cls = type(estimator)
    return cls.__name__ in ("Pipeline", "ColumnTransformer") and cls.__module__.split(".")[:2] in (
        ["sklearn", "pipeline"],
        ["sklearn", "compose"],
    )


def convert(pipeline: Any) -> Converted:
    import sklearn

    if type(pipeline).__name__ == "ColumnTransformer":
        raise Unimplemented(
            "a ColumnTransformer alone only transforms; compile a Pipeline that ends in an estimator"
        )
    steps = [(name, step) for name, step in pipeline.steps]
    final_name, final = steps[-1]
    if final is None or isinstance(final, str) or _compiler_for(final) not in (None, _pipeline):
        raise Unimplemented(
            f"the Pipeline ends in {final_name!r} ({type(final).__name__}), not an estimator; "
            "scoring_core compiles Pipelines that end in a model"
        )
    n_in = getattr(pipeline, "n_features_in_", None)
    if n_in is None:
        raise InvalidArgument("the Pipeline is not fitted (it has no n_features_in_)")
    names_in = getattr(pipeline, "feature_names_in_", None)
    names = [str(n) for n in names_in] if names_in is not None else [f"f{i}" for i in range(n_in)]
    ctx = _Context([_Input(name) for name in names])
    cols = [_Col(name=name, origin=i) for i, name in enumerate(names)]
    transformers = [t for _, t in steps[:-1]]
    compiled_steps, cols = _run_steps(transformers, cols, ctx)
    final_converted = convert_estimator(final)
    if final_converted.string_inputs and compiled_steps:
        raise Unimplemented(f"{type(final).__name__} reads string columns, which transforms before it cannot give")
    stuck = [col.name for col in cols if col.string]
    if stuck:
        raise Unimplemented(f"string column(s) {stuck!r} reach {type(final).__name__} without an encoder")
    first = final_converted.transforms[0] if final_converted.transforms else final_converted.model
    if first.n_features != len(cols):
        raise InvalidArgument(
            f"{type(final).__name__} takes {first.n_features} features but the transforms give {len(cols)}"
        )
    fused = _fuse(compiled_steps)
    unused = set()
    if fused and isinstance(fused[0], _MapStep):
        unused = set(range(len(names))) - {op["source"] for op in fused[0].ops}
    string_inputs = dict(final_converted.string_inputs)
    for i, entry in enumerate(ctx.inputs):
        if entry.kind == "string" and i not in unused:
            # SimpleImputer fills NaN but not None, Arrow has one null for both. An encoder
            # that learned a missing category but not the fill value saw the nulls unfilled.
            fill = entry.fill
            if fill is not None and entry.missing_category and fill not in (entry.categories or ()):
                fill = None
            string_inputs[i] = StringColumn(entry.categories or (), entry.unknown, fill)
    baseline: dict[str, Any] = {"features": {e.name: e.baseline for e in ctx.inputs if e.baseline}}
    if final_converted.baseline:
        baseline["estimator"] = final_converted.baseline
    lineage = {
        "library": "scikit-learn",
        "library_version": sklearn.__version__,
        "steps": [{"name": name, **_step_lineage(t)} for name, t in steps[:-1] if not isinstance(t, str) and t is not None],
        "estimator": {"name": final_name, "source": final_converted.source, **final_converted.lineage},
    }
    return Converted(
        final_converted.model,
        final_converted.task,
        final_converted.classes,
        source="sklearn.pipeline.Pipeline",
        feature_names=names if names_in is not None else None,
        transforms=[_stage(step) for step in fused] + list(final_converted.transforms),
        lineage=lineage,
        baseline=baseline,
        string_inputs=string_inputs,
        predict_ndim=final_converted.predict_ndim,
        unused_inputs=unused,
    )


register_converter(supports, convert, ("sklearn.pipeline.Pipeline",))
