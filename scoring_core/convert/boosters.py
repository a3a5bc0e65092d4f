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
from scoring_core.convert.lightgbm_text import from_lightgbm_text
from scoring_core.convert.xgboost_json import from_xgboost_json
from scoring_core.trees.ensemble import TreeEnsemble
from scoring_core.trees.stage import TreeStage


def convert_xgboost(model: Any) -> Converted:
    """An XGBoost Booster, wrapper or ``.json`` model file."""
    return _converted(from_xgboost_json(model), "xgboost")


def convert_lightgbm(model: Any) -> Converted:
    """A LightGBM Booster, wrapper or text model file."""
    return _converted(from_lightgbm_text(model), "lightgbm")


def is_lightgbm_text(path: Path) -> bool:
    """Whether a file starts as LightGBM's text models do (``tree`` then its header)."""
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"tree")


def _converted(ensemble: TreeEnsemble, source: str) -> Converted:
    stage = TreeStage(ensemble)
    classifier = stage.probabilities
    return Converted(
        model=stage,
        task="classification" if classifier else "regression",
        classes=list(ensemble.classes or range(stage.n_outputs)) if classifier else None,
        source=source,
        feature_names=ensemble.feature_names,
        lineage={"objective": ensemble.objective},
    )
