"""Explanations: per-feature contributions that sum, with a bias, to a model's output margin.

    contributions = model.explain(X)        # CompiledModel.explain, (n, n_features + 1)
    explanation = explain_row(model, row)   # one row: values, margin, top features, text

The layout is XGBoost's ``pred_contribs``: the bias (the expected margin) last; one margin
(regression, binary classification) gives (n, n_features + 1), several (multiclass) give
(n, n_groups, n_features + 1). The margin is the raw score before the link (log-odds for
a logistic model, summed leaves for a tree ensemble, the averaged probability of class 1
or of each class for a forest).

- Tree ensembles (``treeshap``): exact path-dependent TreeSHAP, as XGBoost, LightGBM and
  shap's TreeExplainer compute it. The ensemble needs its node covers; a bundle written
  before they were kept (or converted from ONNX, which stores none) is refused with
  FailedPrecondition.
- Linear models (``linear``): coefficient times feature, bias the intercept, as XGBoost's
  gblinear ``pred_contribs`` gives them.
- Feature transforms before either (scalers, imputers, encoders, column selection: the
  ``column_map`` and ``encode`` stages, where every output column comes from one input
  column): the model is explained on the transformed columns and each column's share is
  given to the input it came from, so contributions are in the input feature space and
  still sum to the margin. A scaler before a linear model thus gives
  ``coef * (x - mean) / scale``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from milepost.core.errors import FailedPrecondition
from scoring_core.arrow_input import matrix_from_data
from scoring_core.explain import linear as _linear
from scoring_core.explain.fold import input_sources
from scoring_core.explain.summary import Explanation, explanation_of, summary

if TYPE_CHECKING:
    from scoring_core.model import CompiledModel

__all__ = ["Explanation", "explain", "explain_row", "explain_rows", "explainable", "summary"]


def explainable(model: CompiledModel) -> str | None:
    """None when ``model`` can be explained, else the reason it cannot (what
    FailedPrecondition would say)."""
    try:
        _explainer(model)
    except FailedPrecondition as err:
        return str(err)
    return None


def explain(model: CompiledModel, data: Any) -> np.ndarray:
    """Contributions for ``data`` (what ``model.predict`` takes), float64, in the layout of
    the module docstring. FailedPrecondition when the model cannot be explained."""
    X = matrix_from_data(data, model.feature_names, model.string_columns, model.unused_columns)
    return _explainer(model)(X)


def explain_row(model: CompiledModel, row: Any, *, top: int = 5) -> Explanation:
    """One row explained: contributions, bias, margin and the ``top`` features that moved it
    most, with a text summary. ``row``: a mapping of feature name to value, a sequence in
    feature order, or anything ``predict`` takes holding one row. This is the library call
    behind ``milepost explain`` (a bundle: ``explain_row(scoring_core.load(path), row)``)."""
    data = _one_row(model, row)
    _, explanations = explain_rows(model, data, top=top)
    if len(explanations) != 1:
        from milepost.core.errors import InvalidArgument

        raise InvalidArgument(f"explain_row takes one row, got {len(explanations)}")
    return explanations[0]


def explain_rows(model: CompiledModel, data: Any, *, top: int = 5) -> tuple[np.ndarray, list[Explanation]]:
    """Contributions for ``data`` (what ``predict`` takes) and one Explanation a row; values
    of string columns are shown as their categories."""
    X = matrix_from_data(data, model.feature_names, model.string_columns, model.unused_columns)
    contributions = _explainer(model)(X)
    labels = _labels(model)
    explanations = [
        explanation_of(contributions[r], model.feature_names, _row_values(model, X[r]), labels, top=top)
        for r in range(X.shape[0])
    ]
    return contributions, explanations


def _row_values(model: CompiledModel, x: np.ndarray) -> list[Any]:
    values: list[Any] = []
    for name, value in zip(model.feature_names, x.tolist()):
        column = model.string_columns.get(name)
        if column is not None and value == value and 0 <= int(value) < len(column.categories):
            value = column.categories[int(value)]
        values.append(value)
    return values


def _one_row(model: CompiledModel, row: Any) -> Any:
    if isinstance(row, dict):
        missing = [n for n in model.feature_names if n not in row]
        if missing:
            from milepost.core.errors import InvalidArgument

            raise InvalidArgument(f"the row lacks features {missing[:10]!r}")
        return [[row[n] for n in model.feature_names]]
    if isinstance(row, (list, tuple)) and row and not isinstance(row[0], (list, tuple, np.ndarray)):
        return [list(row)]
    return row


def _labels(model: CompiledModel) -> list[str] | None:
    """Names of the margins when there are several (one a class, or a regression output)."""
    explainer = _explainer(model)
    if explainer.n_groups == 1:
        return None
    if model.classes is not None and len(model.classes) == explainer.n_groups:
        return [str(c) for c in model.classes]
    return [f"output {k}" for k in range(explainer.n_groups)]


class _Explainer:
    """Explains one CompiledModel: the model stage's contributions, folded back through the
    transforms onto the input features."""

    def __init__(self, model: CompiledModel) -> None:
        from scoring_core.explain.trees import TreeExplainer

        self.sources = input_sources(model.transforms, model.n_features)
        stage = model.model
        if stage.kind == "trees":
            self.stage_explainer: Any = TreeExplainer(stage.ensemble)  # type: ignore[attr-defined]
        elif stage.kind == "linear":
            self.stage_explainer = _linear.LinearExplainer(stage)
        else:
            raise FailedPrecondition(
                f"model stage {stage.kind!r} cannot be explained: explanations cover tree ensembles and "
                "linear models (and the feature transforms before them)")
        self.transforms = model.transforms
        self.n_features = model.n_features
        self.n_groups: int = self.stage_explainer.n_groups

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Z = X
        for stage in self.transforms:
            Z = stage.predict(Z)
        inner = self.stage_explainer(Z)  # (n, n_groups, width + 1)
        if self.transforms:
            n, g, _ = inner.shape
            out = np.zeros((n, g, self.n_features + 1))
            np.add.at(out, (slice(None), slice(None), self.sources), inner[:, :, :-1])  # type: ignore[arg-type]
            out[:, :, -1] = inner[:, :, -1]
        else:
            out = inner
        return out[:, 0, :] if self.n_groups == 1 else out


def _explainer(model: CompiledModel) -> _Explainer:
    """The model's explainer, built once (TreeSHAP's paths) and kept on the model."""
    cached = model.__dict__.get("_explainer")
    if cached is None:
        cached = _Explainer(model)
        model.__dict__["_explainer"] = cached
    return cached
