"""scikit-learn Pipelines -> feature-transform stages, then the final estimator's stages.

A Pipeline's transform steps (StandardScaler, MinMaxScaler, RobustScaler, SimpleImputer,
OneHotEncoder, OrdinalEncoder, ColumnTransformer, nested Pipelines, identity
FunctionTransformers) become ``column_map`` and ``encode`` stages; its final estimator
goes through the converter table (``scoring_core.convert``) like any estimator, so
whatever it lists (linear models, MLPs, tree ensembles) also works at the end of a Pipeline.
The transformers are compiled in ``sklearn_transformers``; this module fuses their steps
into stages and assembles the result.

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

from collections.abc import Callable
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.convert.lineage import json_param
from scoring_core.convert.sklearn_transformers import Col, Context, Input, MapStep, Step, is_transformer, run_steps
from scoring_core.kinds import Stage
from scoring_core.string_inputs import StringColumn
from scoring_core.transforms import Encode, column_map

# ---------------------------------------------------------------------------------------
# Steps -> stages


def _fuse(steps: list[Step]) -> list[Step]:
    """Fold a pure column selection (every op a plain copy) into the map next to it."""
    fused: list[Step] = []
    for step in steps:
        prev = fused[-1] if fused else None
        if isinstance(step, MapStep) and isinstance(prev, MapStep):
            if all(set(op) == {"source"} for op in prev.ops):
                fused[-1] = MapStep(prev.n_in, [{**op, "source": prev.ops[op["source"]]["source"]} for op in step.ops])
                continue
            if all(set(op) == {"source"} for op in step.ops):
                fused[-1] = MapStep(prev.n_in, [dict(prev.ops[op["source"]]) for op in step.ops])
                continue
        fused.append(step)
    return fused


def _stage(step: Step) -> Stage:
    if isinstance(step, MapStep):
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


def convert(pipeline: Any, convert_estimator: Callable[[Any], Converted]) -> Converted:
    """A fitted Pipeline: its transform steps compiled here, its final estimator converted
    by ``convert_estimator`` (``scoring_core.convert.convert``, whose table leads here)."""
    import sklearn

    if type(pipeline).__name__ == "ColumnTransformer":
        raise Unimplemented(
            "a ColumnTransformer alone only transforms; compile a Pipeline that ends in an estimator"
        )
    steps = [(name, step) for name, step in pipeline.steps]
    final_name, final = steps[-1]
    if final is None or isinstance(final, str) or is_transformer(final):
        raise Unimplemented(
            f"the Pipeline ends in {final_name!r} ({type(final).__name__}), not an estimator; "
            "scoring_core compiles Pipelines that end in a model"
        )
    n_in = getattr(pipeline, "n_features_in_", None)
    if n_in is None:
        raise InvalidArgument("the Pipeline is not fitted (it has no n_features_in_)")
    names_in = getattr(pipeline, "feature_names_in_", None)
    names = [str(n) for n in names_in] if names_in is not None else [f"f{i}" for i in range(n_in)]
    ctx = Context([Input(name) for name in names])
    cols = [Col(name=name, origin=i) for i, name in enumerate(names)]
    transformers = [t for _, t in steps[:-1]]
    compiled_steps, cols = run_steps(transformers, cols, ctx)
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
    if fused and isinstance(fused[0], MapStep):
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
