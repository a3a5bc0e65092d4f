"""Spark ML PipelineModels -> feature-transform stages and a model stage, without a JVM.

``scoring_core.compile`` takes a directory written by ``PipelineModel.save`` (or by a
single fitted model's ``save``), read with pyarrow (``spark_ml_saved``), or a fitted
``pyspark.ml`` model, which is first saved to a local temporary directory (so it needs a
driver that writes ``file://`` paths itself: a local master; on a cluster, save to
shared storage and compile that path).

Stages: VectorAssembler, Imputer, StringIndexer, OneHotEncoder, StandardScaler,
MinMaxScaler, then one predictor last: LogisticRegression, LinearRegression, or a
decision tree, random forest or gradient-boosted trees classifier or regressor
(``spark_ml_trees``). Stages whose outputs the model never reads (a StringIndexer of
the label, say) are left out, and so are their inputs.

Inputs are the columns the pipeline reads and no stage writes, in order of first use: a
StringIndexer's input is a string column whose vocabulary is its labels; a vector read
by a scaler or by the model itself is ``name[0]``, ``name[1]``, ... (or one
fixed-size-list column); any other input is a number.

Outputs, and the Spark columns they stand for:

- classifiers: ``probabilities`` is Spark's ``probability``; Spark's ``prediction`` is
  the index of its largest entry (a binary LogisticRegression with a ``threshold`` other
  than 0.5 compares p(1) with it instead); ``classes`` are those indices, or the labels of
  the StringIndexer that made the model's ``labelCol``, in index order. ``predict`` gives
  the probabilities, (n, n_classes) float64. ``rawPrediction`` is not given.
- regressors: ``prediction`` is Spark's ``prediction``; ``predict`` gives (n,) float64.

What each stage computes in Spark 3.x and 4.x, reproduced here:

- VectorAssembler: its inputs side by side. handleInvalid 'error' fails Spark's job on a
  NaN or null, where the core scores the row (NaN flows on); 'skip' drops rows: refused.
- Imputer: null and NaN become the column's surrogate; a missingValue other than NaN is refused.
- StringIndexer: a label's index in its labels; handleInvalid 'keep': unseen labels and
  null become the number of labels; 'error': InvalidArgument naming the column; 'skip' refused.
  A number column is looked up as Spark casts it to text (``2``, ``2.0``, ``NaN``:
  ``scoring_core.string_inputs``).
- OneHotEncoder: index i -> a one at position i of categorySize places, the last dropped
  with dropLast; handleInvalid 'keep': an invalid index is one more category (the one
  dropLast drops); 'error': InvalidArgument. Spark truncates a fractional index; here
  it is invalid (indices come from a StringIndexer, whole numbers).
- StandardScaler: ``(x - mean) * (1 / std)``, by withMean and withStd, 0 where std is 0.
- MinMaxScaler: ``(x - originalMin) * ((max - min) / range) + min``; a constant feature
  gives ``(min + max) / 2``; NaN stays NaN.
- LogisticRegression: a sigmoid of the margin (binary), a softmax (multinomial);
  LinearRegression: the margin.

Precision: Spark computes in double, the core in its input's dtype (float32 for Arrow
batches, float64 for a float64 numpy array), each transform rounding as it stores; so
probabilities and predictions agree well within 1e-5, and a tree split after an imputer
or a scaler could differ only for a value within float32 rounding of its threshold.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted, unsupported
from scoring_core.convert.lineage import json_param
from scoring_core.convert.spark_ml_columns import Flow, Value, one_hot, ordinal
from scoring_core.convert.spark_ml_saved import (
    PIPELINE_MODEL,
    SavedStage,
    is_saved_spark_model,
    matrix,
    pipeline_stages,
    read_stage,
    vector,
)
from scoring_core.convert.spark_ml_trees import CLASSIFIERS, REGRESSORS, convert_tree_model
from scoring_core.kinds import Stage
from scoring_core.linear import LinearModel
from scoring_core.string_inputs import StringColumn

MODELS = ("LogisticRegressionModel", "LinearRegressionModel", *CLASSIFIERS, *REGRESSORS)
# What the converter table lists: the pipeline and the models it may end in (also alone).
LISTED = ("pyspark.ml.PipelineModel",
          *(f"pyspark.ml.{'regression' if name in ('LinearRegressionModel', *REGRESSORS) else 'classification'}.{name}"
            for name in MODELS))

is_saved_model = is_saved_spark_model


def convert_path(path: str | Path) -> Converted:
    """A directory saved by a Spark ML PipelineModel (or a single model)."""
    top = read_stage(Path(path))
    stages = pipeline_stages(top) if top.cls == PIPELINE_MODEL else [top]
    converted = _compile(stages)
    converted.source = _python_name(top.cls)
    return converted


def convert_object(model: Any) -> Converted:
    """A fitted ``pyspark.ml`` model: saved to a temporary local directory, then read."""
    from pyspark.ml import Model

    if not isinstance(model, Model):
        if hasattr(model, "fit"):
            raise InvalidArgument(f"{type(model).__name__} is an estimator: fit it and compile the fitted model")
        raise unsupported(model, LISTED)
    with tempfile.TemporaryDirectory(prefix="milepost-spark-") as tmp:
        path = Path(tmp) / "model"
        writable: Any = model  # every pyspark.ml Model is MLWritable
        writable.write().save(path.as_uri())
        return convert_path(path)


def _python_name(cls: str) -> str:
    return cls.replace("org.apache.spark.ml", "pyspark.ml", 1)


# ---------------------------------------------------------------------------------------
# The stages


def _io(stage: SavedStage) -> tuple[list[str], list[str]]:
    """The columns ``stage`` reads and writes."""
    p = stage.params
    if stage.name in MODELS:
        return [p.get("featuresCol", "features")], []
    ins = list(p["inputCols"]) if "inputCols" in p else [p["inputCol"]]
    outs = list(p["outputCols"]) if "outputCols" in p and stage.name != "VectorAssembler" else [p["outputCol"]]
    return ins, outs


def _refuse_invalid(stage: SavedStage, allowed: tuple[str, ...]) -> str:
    mode = str(stage.params.get("handleInvalid", "error"))
    if mode not in allowed:
        why = " ('skip' drops rows, which scoring cannot)" if mode == "skip" else ""
        raise Unimplemented(f"{stage.name}(handleInvalid={mode!r}) is not supported{why}; supported: {', '.join(allowed)}")
    return mode


def _assembler(flow: Flow, stage: SavedStage) -> None:
    _refuse_invalid(stage, ("error", "keep"))
    ins, (out,) = _io(stage)
    flow.columns[out] = [e for name in ins for e in flow.read(name, stage.name)]


def _imputer(flow: Flow, stage: SavedStage) -> None:
    missing = float(stage.params.get("missingValue", "NaN"))
    if not math.isnan(missing):
        raise Unimplemented(f"Imputer(missingValue={missing!r}): only NaN (and null) can be imputed")
    row = stage.row()
    for source, target in zip(*_io(stage)):
        flow.affine(source, target, [{"fill": float(row[source])}], stage.name)


def _string_indexer(flow: Flow, stage: SavedStage) -> None:
    keep = _refuse_invalid(stage, ("error", "keep")) == "keep"
    labels = stage.row()["labelsArray"]
    flow.encode([(source, target, ordinal(len(vocabulary), float(len(vocabulary)) if keep else None))
                 for (source, target), vocabulary in zip(zip(*_io(stage)), labels)], stage.name)


def _one_hot_encoder(flow: Flow, stage: SavedStage) -> None:
    keep = _refuse_invalid(stage, ("error", "keep")) == "keep"
    drop_last = bool(stage.params.get("dropLast", True))
    sizes = [int(size) for size in stage.row()["categorySizes"]]
    pairs = list(zip(*_io(stage)))
    if keep and not drop_last:
        # An invalid index is one more category, kept: index every column first, invalid -> size.
        indexed = [(source, f"{target}\0index", ordinal(size, float(size))) for (source, target), size in zip(pairs, sizes)]
        flow.encode(indexed, stage.name)
        pairs = [(index, target) for (_, target), (_, index, _) in zip(pairs, indexed)]
        sizes = [size + 1 for size in sizes]
    # keep with dropLast: the dropped category is the invalid one, so every index has its place.
    flow.encode([(source, target, one_hot(size, size - 1 if drop_last and not keep else -1, refuse_unknown=not keep))
                 for (source, target), size in zip(pairs, sizes)], stage.name)


def _standard_scaler(flow: Flow, stage: SavedStage) -> None:
    row = stage.row()
    mean, std = vector(row["mean"], "StandardScaler mean"), vector(row["std"], "StandardScaler std")
    with_mean, with_std = bool(stage.params.get("withMean", False)), bool(stage.params.get("withStd", True))
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0)
    ops = [{**({"center": m} if with_mean else {}), **({"factor": s} if with_std else {})}
           for m, s in zip(mean.tolist(), inverse.tolist())]
    (source,), (target,) = _io(stage)
    flow.affine(source, target, ops, stage.name)


def _min_max_scaler(flow: Flow, stage: SavedStage) -> None:
    row = stage.row()
    low, high = vector(row["originalMin"], "MinMaxScaler originalMin"), vector(row["originalMax"], "MinMaxScaler originalMax")
    out_min, out_max = float(stage.params.get("min", 0.0)), float(stage.params.get("max", 1.0))
    ops = []
    for lo, hi in zip(low.tolist(), high.tolist()):
        if hi - lo != 0:
            ops.append({"center": lo, "factor": (out_max - out_min) / (hi - lo), "offset": out_min})
        else:  # a constant feature: the middle of the range
            ops.append({"factor": 0.0, "offset": (out_min + out_max) / 2})
    (source,), (target,) = _io(stage)
    flow.affine(source, target, ops, stage.name)


_FEATURE_STAGES: dict[str, Callable[[Flow, SavedStage], None]] = {
    "VectorAssembler": _assembler,
    "ImputerModel": _imputer,
    "StringIndexerModel": _string_indexer,
    "OneHotEncoderModel": _one_hot_encoder,
    "StandardScalerModel": _standard_scaler,
    "MinMaxScalerModel": _min_max_scaler,
}
_VECTOR_READERS = {"StandardScalerModel": "mean", "MinMaxScalerModel": "originalMin"}


def _model(stage: SavedStage) -> tuple[Stage, int | None]:
    """The model stage and its number of classes (None: a regressor)."""
    if stage.name == "LogisticRegressionModel":
        row = stage.row()
        coef = matrix(row["coefficientMatrix"], "LogisticRegression coefficients")
        intercept = vector(row["interceptVector"], "LogisticRegression intercepts")
        n_classes = int(row["numClasses"])
        return LinearModel(coef, intercept, "softmax" if row["isMultinomial"] else "logistic"), max(n_classes, 2)
    if stage.name == "LinearRegressionModel":
        row = stage.row()
        coef = vector(row["coefficients"], "LinearRegression coefficients")
        return LinearModel(coef[None, :], np.array([float(row["intercept"])]), "identity"), None
    return convert_tree_model(stage)


def _compile(stages: list[SavedStage]) -> Converted:
    known = {*_FEATURE_STAGES, *MODELS}
    at = [i for i, s in enumerate(stages) if s.name in MODELS]
    if not at:
        raise Unimplemented("the Spark pipeline has no model stage; supported models: " + ", ".join(MODELS))
    if len(at) > 1 or at[0] != len(stages) - 1:
        after = stages[at[0] + 1]
        raise Unimplemented(f"the Spark pipeline has {after.name} after its model {stages[at[0]].name}; "
                            "scoring_core compiles pipelines that end in their one model")
    model_stage = stages[-1]
    (features,), _ = _io(model_stage)

    needed, live = {features}, []
    for stage in reversed(stages[:-1]):  # only what the model reads, and what that reads
        try:
            ins, outs = _io(stage)
        except KeyError:  # no inputCol(s)/outputCol(s): what it reads and writes is unknown
            ins, outs = [], None
        if outs is not None and not set(outs) & needed:
            continue
        if stage.name not in known:
            raise Unimplemented(f"Spark stage {_python_name(stage.cls)} is not supported; supported: "
                                + ", ".join(sorted(known)))
        live.append(stage)
        needed = (needed - set(outs or ())) | set(ins)
    live.reverse()
    model, n_classes = _model(model_stage)
    names, string_inputs, columns = _inputs([*live, model_stage], model.n_features)
    flow = Flow(len(names), columns)
    for i, stage in enumerate(live):
        flow.live_after = {name for s in [*live[i + 1:], model_stage] for name in _io(s)[0]}
        _FEATURE_STAGES[stage.name](flow, stage)
        flow.columns = {name: values for name, values in flow.columns.items() if name in flow.live_after}
    flow.finish(features, model_stage.name, model.n_features)

    classes = None if n_classes is None else _class_labels(stages, model_stage, n_classes)
    return Converted(
        model=model,
        task="regression" if n_classes is None else "classification",
        classes=classes,
        source=_python_name(model_stage.cls),
        feature_names=names,
        transforms=flow.stages,
        lineage={
            "library": "spark",
            "library_version": str(model_stage.metadata.get("sparkVersion", "")),
            "stages": [{"class": _python_name(s.cls), "uid": s.uid,
                        "params": {k: json_param(v) for k, v in sorted(s.params.items())}} for s in [*live, model_stage]],
        },
        string_inputs=string_inputs,
        predict_ndim=1 if n_classes is None else 2,
    )


def _inputs(stages: list[SavedStage], n_model_features: int
            ) -> tuple[list[str], dict[int, StringColumn], dict[str, list[Value]]]:
    """The pipeline's input columns (read, never written), each's string vocabulary, and
    its values in the first matrix."""
    names: list[str] = []
    string_inputs: dict[int, StringColumn] = {}
    columns: dict[str, list[Value]] = {}
    kinds: dict[str, str] = {}
    written: set[str] = set()
    for stage in stages:
        ins, outs = _io(stage)
        for k, name in enumerate(ins):
            if name in written:
                continue
            if stage.name == "StringIndexerModel":
                kind, width = "string", 1
            elif stage.name in _VECTOR_READERS or stage.name in MODELS:
                key = _VECTOR_READERS.get(stage.name)
                width = n_model_features if key is None else vector(stage.row()[key], stage.name).size
                kind = f"vector of {width}"
            else:
                kind, width = "number", 1
            if kinds.setdefault(name, kind) != kind:
                raise Unimplemented(f"input column {name!r} is read as a {kinds[name]} and as a {kind} ({stage.name})")
            if kind == "string":  # read as codes into the indexer's labels: the index itself
                unknown = "code" if stage.params.get("handleInvalid") == "keep" else "error"
                entry = StringColumn(tuple(stage.row()["labelsArray"][k]), unknown, numbers="text")
                if string_inputs.setdefault(columns[name][0].source if name in columns else len(names), entry) != entry:
                    raise Unimplemented(f"input column {name!r} is indexed twice with different labels or rules")
            if name not in columns:
                parts = [f"{name}[{i}]" for i in range(width)] if kind.startswith("vector") else [name]
                columns[name] = [Value(len(names) + i) for i in range(len(parts))]
                names.extend(parts)
        written.update(outs)
    return names, string_inputs, columns


def _class_labels(stages: list[SavedStage], model: SavedStage, n_classes: int) -> list[Any]:
    """The labels of the StringIndexer that made the model's label column, if one did and
    they are as many as the classes; else the class indices, which Spark predicts."""
    label = model.params.get("labelCol", "label")
    for stage in stages:
        if stage.name == "StringIndexerModel" and _io(stage)[1] == [label]:
            labels = stage.row()["labelsArray"][0]
            if len(labels) == n_classes:
                return list(labels)
    return list(range(n_classes))
