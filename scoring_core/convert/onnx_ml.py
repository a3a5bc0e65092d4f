"""The ai.onnx.ml operators the core can express, except trees (``onnx_trees``), as
onnxruntime computes them (checked against onnxruntime 1.2x in tests/scoring_core/test_onnx.py).

- Scaler ``(x - offset) * scale`` and Imputer (NaN -> the imputed value) become column
  chains; OneHotEncoder a one-hot encoding of integer codes. onnxruntime casts a float
  to an integer before it looks the category up (1.7 counts as category 1); the core
  compares the value itself, so a non-integer value is an unknown category here.
- LinearRegressor: ``X @ coef.T + intercept``. LinearClassifier: the same scores, then
  its post_transform: SOFTMAX; LOGISTIC, one sigmoid a class (a binary model's two
  opposite rows make the usual [1 - p, p]); NONE, the raw scores.
- Normalizer: over feature rows (L1, L2), a ``row_norm`` stage; L1 after a classifier's
  probabilities, as skl2onnx emits it, a no-op on probabilities that already sum to one,
  and one-vs-rest sigmoids normalised otherwise.
- ZipMap and ArrayFeatureExtractor: the plumbing of skl2onnx's outputs and labels.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument
from scoring_core.convert.onnx_values import ArgMaxOf, Col, Const, Label, OneHot, Rows, Scores, Value, Zipped, refuse
from scoring_core.linear import LinearModel
from scoring_core.mlp import mlp_from_layers
from scoring_core.row_norm import RowNorm

Attrs = dict[str, Any]


def per_column(op: str, attrs: Attrs, name: str, width: int, default: float | None = None) -> np.ndarray:
    """An attribute holding one value for every column, or a single value for all."""
    values = attrs.get(name)
    if values is None:
        if default is None:
            raise InvalidArgument(f"ONNX {op}: attribute {name!r} is missing")
        values = [default]
    array = np.asarray(values, np.float64).reshape(-1)
    if array.size == 1:
        return np.full(width, array[0])
    if array.size != width:
        raise InvalidArgument(f"ONNX {op}: {name} has {array.size} values for {width} columns")
    return array


def class_labels(op: str, attrs: Attrs, prefix: str = "classlabels_") -> list[Any]:
    ints, strings = attrs.get(prefix + "ints", attrs.get(prefix + "int64s")), attrs.get(prefix + "strings")
    labels = list(ints) if ints else list(strings or [])
    if not labels:
        raise InvalidArgument(f"ONNX {op}: no class labels")
    return [int(v) for v in labels] if ints else [str(v) for v in labels]


def rows_arg(op: str, args: list[Value | None], i: int = 0) -> Rows:
    value = args[i] if i < len(args) else None
    if not isinstance(value, Rows):
        raise refuse(op, f"input {i} is {_what(value)}, not feature rows")
    return value


def const_arg(op: str, args: list[Value | None], i: int) -> np.ndarray:
    value = args[i] if i < len(args) else None
    if not isinstance(value, Const):
        raise refuse(op, f"input {i} is {_what(value)}, not a constant (an initializer)")
    return value.value


def _what(value: Value | None) -> str:
    return "missing" if value is None else f"a {type(value).__name__.lower()}"


# ---------------------------------------------------------------------------------------


def scaler(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args).plain(op)
    offset = per_column(op, attrs, "offset", rows.width, 0.0)
    scale = per_column(op, attrs, "scale", rows.width, 1.0)
    return [replace(rows, cols=tuple(col.scaled(op, offset[j], scale[j]) for j, col in enumerate(rows.cols)))]


def imputer(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args).plain(op)
    if attrs.get("imputed_value_int64s"):
        raise refuse(op, "integer imputation")
    if not np.isnan(float(attrs.get("replaced_value_float", 0.0))):
        raise refuse(op, "it replaces a number other than NaN")
    fill = per_column(op, attrs, "imputed_value_floats", rows.width)
    return [replace(rows, cols=tuple(col.filled(op, fill[j]) for j, col in enumerate(rows.cols)))]


def one_hot_encoder(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args)
    if rows.layers or rows.nested:
        raise refuse(op, "it follows dense layers or another encoder")
    if attrs.get("cats_strings"):
        raise refuse(op, "string categories")
    categories = tuple(float(c) for c in attrs.get("cats_int64s") or ())
    if not categories or len(set(categories)) != len(categories):
        raise InvalidArgument(f"ONNX {op}: cats_int64s must list distinct categories")
    refuse_unknown = int(attrs.get("zeros", 1)) == 0
    cols: list[Col] = []
    for col in rows.cols:
        if col.onehot is not None or col.post:
            raise refuse(op, "a column is encoded twice")
        cols.extend(Col(col.source, col.pre, OneHot(categories, k, refuse_unknown)) for k in range(len(categories)))
    return [replace(rows, cols=tuple(cols), nested=True, as_int=False)]


def array_feature_extractor(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    """Columns of feature rows; or, on a constant of class labels and an ArgMax, the label."""
    if isinstance(args[0], Const) and len(args) > 1 and isinstance(args[1], ArgMaxOf):
        return [Label(args[1].rows, np.asarray(args[0].value).reshape(-1).tolist())]
    return [select(op, rows_arg(op, args), const_arg(op, args, 1))]


def select(op: str, rows: Rows, indices: np.ndarray) -> Rows:
    rows = rows.plain(op)
    picked = np.asarray(indices).reshape(-1).astype(np.int64)
    if picked.size == 0 or np.any((picked < -rows.width) | (picked >= rows.width)):
        raise InvalidArgument(f"ONNX {op}: column indices {picked.tolist()} out of range for {rows.width} columns")
    return replace(rows, cols=tuple(rows.cols[int(i)] for i in picked))


def zipmap(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    of = args[0]
    if not isinstance(of, (Scores, Rows)):
        raise refuse(op, f"its input is {_what(of)}, not a model's scores")
    return [Zipped(of, class_labels(op, attrs))]


def normalizer(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    scores = args[0]
    norm = str(attrs.get("norm", "MAX"))
    if isinstance(scores, Rows):
        rows = scores.plain(op)
        if norm not in ("L1", "L2"):
            raise refuse(op, f"norm {norm} of feature rows")
        stages = (*rows.stages(), RowNorm(rows.width, norm.lower()))
        return [Rows(tuple(Col(j) for j in range(rows.width)), rows.width, stages)]
    if not isinstance(scores, Scores):
        raise refuse(op, f"its input is {_what(scores)}")
    if norm != "L1":
        raise refuse(op, f"norm {norm} of a model's scores")
    if scores.normalised:
        return [scores]
    if scores.sigmoids is not None:
        coef, intercept = scores.sigmoids
        return [Scores(scores.rows, LinearModel(coef, intercept, "ovr_logistic"), scores.classes, normalised=True)]
    raise refuse(op, "L1 normalisation of raw scores")


# ---------------------------------------------------------------------------------------
# Linear models


def _coefficients(op: str, attrs: Attrs, rows: Rows, k: int) -> tuple[np.ndarray, np.ndarray]:
    coef = np.asarray(attrs.get("coefficients") or [], np.float64)
    if coef.size != k * rows.width:
        raise InvalidArgument(f"ONNX {op}: {coef.size} coefficients for {k} outputs of {rows.width} features")
    intercept = np.asarray(attrs.get("intercepts") or [0.0] * k, np.float64)
    if intercept.size != k:
        raise InvalidArgument(f"ONNX {op}: {intercept.size} intercepts for {k} outputs")
    return coef.reshape(k, rows.width), intercept


def _post_transform(attrs: Attrs) -> str:
    return str(attrs.get("post_transform", "NONE"))


def linear_regressor(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args).plain(op)
    if _post_transform(attrs) != "NONE":
        raise refuse(op, f"post_transform {_post_transform(attrs)}")
    coef, intercept = _coefficients(op, attrs, rows, int(attrs.get("targets", 1)))
    return [Scores(rows, LinearModel(coef, intercept, "identity"), None)]


def linear_classifier(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args).plain(op)
    classes = class_labels(op, attrs)
    k = len(np.asarray(attrs.get("intercepts") or [])) or len(classes)
    if k != len(classes):
        raise refuse(op, f"{k} score rows for {len(classes)} classes (onnxruntime's one-row binary form)")
    coef, intercept = _coefficients(op, attrs, rows, k)
    post = _post_transform(attrs)
    scores: Scores
    if post == "SOFTMAX":
        scores = Scores(rows, LinearModel(coef, intercept, "softmax"), classes, normalised=True)
    elif post == "LOGISTIC" and k == 2 and np.array_equal(coef[0], -coef[1]) and intercept[0] == -intercept[1]:
        scores = Scores(rows, LinearModel(coef[1:], intercept[1:], "logistic"), classes, normalised=True)
    elif post == "LOGISTIC":
        network = mlp_from_layers([(coef.T, intercept, [("logistic", 0.0)])], dtype="float64")
        scores = Scores(rows, network, classes, sigmoids=(coef, intercept))
    elif post == "NONE":
        scores = Scores(rows, LinearModel(coef, intercept, "identity"), classes)
    else:
        raise refuse(op, f"post_transform {post}")
    return [Label(scores, classes), scores]
