"""XGBoost and LightGBM models -> a ``trees`` stage.

A live Booster, its scikit-learn wrapper (``XGBClassifier``, ``LGBMRegressor``, ...) or a
model file is read by the library's own non-executable dump (``xgboost_json``,
``lightgbm_text``), never a pickle. The ensemble's link decides the task: a sigmoid or
softmax output is a classifier's probabilities, anything else a "prediction" column with
the library's values (see ``scoring_core.trees.stage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scoring_core.convert.converted import Converted
from scoring_core.convert.lightgbm_text import from_lightgbm_text, pandas_categories
from scoring_core.convert.xgboost_json import categories as xgboost_categories
from scoring_core.convert.xgboost_json import from_xgboost_json
from scoring_core.trees.ensemble import TreeEnsemble
from scoring_core.trees.stage import TreeStage


def convert_xgboost(model: Any) -> Converted:
    """An XGBoost Booster, wrapper or ``.json`` model file; XGBoost predicts float32."""
    converted = _converted(from_xgboost_json(model), "xgboost", booster=not _is_wrapper(model), dtype="float32")
    converted.string_inputs = xgboost_categories(model)
    return converted


def convert_lightgbm(model: Any) -> Converted:
    """A LightGBM Booster, wrapper or text model file; LightGBM predicts float64."""
    converted = _converted(from_lightgbm_text(model), "lightgbm", booster=not _is_wrapper(model), dtype="float64")
    converted.string_inputs = pandas_categories(model)
    return converted


def _is_wrapper(model: Any) -> bool:
    """A scikit-learn wrapper (XGBClassifier, LGBMClassifier...), whose default call for a
    classifier is predict_proba's (n, n_classes); a Booster or a model file answers
    Booster.predict's shape, (n,) of P(class 1) for a binary objective."""
    return hasattr(model, "get_booster") or hasattr(model, "booster_")


def is_lightgbm_text(path: Path) -> bool:
    """Whether a file starts as LightGBM's text models do (``tree`` then its header)."""
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"tree")


def _converted(ensemble: TreeEnsemble, source: str, *, booster: bool, dtype: str) -> Converted:
    stage = TreeStage(ensemble)
    classifier = stage.probabilities
    binary_booster = booster and classifier and stage.n_outputs == 2
    return Converted(
        model=stage,
        task="classification" if classifier else "regression",
        classes=list(ensemble.classes or range(stage.n_outputs)) if classifier else None,
        source=source,
        feature_names=ensemble.feature_names,
        lineage={"objective": ensemble.objective},
        predict_ndim=1 if binary_booster else None,
        predict_dtype=dtype,
    )
