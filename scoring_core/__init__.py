"""scoring_core: Arrow in, Arrow out, numba-compiled scoring of trained models.

The public surface is small::

    model = scoring_core.compile(estimator)          # a CompiledModel
    version = model.save("bundles/churn")            # content-addressed bundle dir
    model = scoring_core.load("bundles/churn", version=version)
    model.predict_arrow(batch)                       # pa.RecordBatch -> pa.RecordBatch

``compile`` takes scikit-learn linear models and MLPs, XGBoost and LightGBM models,
torch ``nn.Sequential`` MLPs, ONNX graphs of the standard ML and MLP operators (a
``.onnx`` file or an ``onnx.ModelProto``), and scikit-learn Pipelines (scalers, imputers, encoders,
ColumnTransformers) ending in any of them; CatBoost models (a ``.json`` export or the
model); Spark ML PipelineModels (a saved directory, read without a JVM, or the fitted
object): ``scoring_core.convert`` holds the one table of what it takes.
``scoring_core.bundle`` reads, verifies, packs and unpacks bundles; ``register_kind``
lets further stage kinds be loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument

# Imported for their stage kinds ("linear", "mlp", "column_map", "encode", "row_norm", "trees"),
# which they register as they load: load reads every bundle even where compile never ran.
from scoring_core import bundle, drift, linear, mlp, row_norm, transforms  # noqa: F401 - imported to register stage kinds
from scoring_core.convert import convert as _convert
from scoring_core.kinds import register_kind, registered_kinds
from scoring_core.model import CompiledModel, load
from scoring_core.threads import set_num_threads
from scoring_core.trees import stage as _tree_stage  # noqa: F401 - imported to register the stage kind "trees"

__all__ = [
    "CompiledModel",
    "bundle",
    "compile",
    "load",
    "register_kind",
    "registered_kinds",
    "set_num_threads",
]


def compile(model: Any, *, feature_names: list[str] | None = None, baseline: Any = None) -> CompiledModel:
    """Compile a trained estimator into a CompiledModel that predicts as it does.

    Feature names come from ``feature_names``, else the estimator's ``feature_names_in_``,
    else ``f0 .. f{n-1}``. Unsupported estimators raise Unimplemented naming the class
    and listing what is supported. ``baseline``: training data (as ``predict`` takes it);
    the distribution of each feature and of the predictions on it go into the bundle
    (metadata ``drift_baseline``, scoring_core.drift), for drift checks once it serves.
    """
    converted = _convert(model)
    n_features = (converted.transforms[0] if converted.transforms else converted.model).n_features
    if feature_names is not None:
        names = list(feature_names)
        if len(names) != n_features:
            raise InvalidArgument(f"feature_names has {len(names)} names; the model takes {n_features} features")
    elif converted.feature_names is not None:
        names = converted.feature_names
    else:
        names = [f"f{i}" for i in range(n_features)]
    metadata = {"source": converted.source, "lineage": converted.lineage, "baseline": converted.baseline}
    compiled = CompiledModel(
        converted.model,
        feature_names=names,
        task=converted.task,
        classes=converted.classes,
        metadata=metadata,
        transforms=converted.transforms,
        string_columns={names[i]: column for i, column in converted.string_inputs.items()},
        predict_ndim=converted.predict_ndim,
        unused_columns=[names[i] for i in sorted(converted.unused_inputs)],
        predict_dtype=converted.predict_dtype,
        output_name=converted.output_name,
    )
    if baseline is not None:
        columns = _columns(baseline, names)
        compiled.metadata["drift_baseline"] = drift.training_baseline(columns, compiled.predict(baseline))
    return compiled


def _columns(data: Any, names: list[str]) -> dict[str, Any]:
    """Training data as named columns: a DataFrame's or Arrow table's own, a matrix's by ``names``."""
    if hasattr(data, "to_pydict"):  # pyarrow Table / RecordBatch
        return {n: data.column(n).to_numpy(zero_copy_only=False) for n in data.column_names}
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # pandas DataFrame
        return {str(n): data[n].to_numpy() for n in data.columns}
    matrix = np.asarray(data)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise InvalidArgument(f"baseline must be training data with {len(names)} columns, got shape {matrix.shape}")
    return {name: matrix[:, i] for i, name in enumerate(names)}
