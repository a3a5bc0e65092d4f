"""Tree ensembles as a scoring-core stage (kind "trees"), and the XGBoost and LightGBM converters
(scikit-learn's trees register from ``scoring_core.convert.sklearn_trees``, imported last).

The stage maps a TreeEnsemble's prediction onto CompiledModel's contract: a
probabilistic classifier (sigmoid or softmax link, or an ensemble marked
``probabilities``, such as a forest's averaged class distributions) gives (n, n_classes)
probabilities, binary included as [1 - p, p]; everything else the library
returns as one value per row (regression, raw margins, hinge labels,
multi:softmax class indices) is a "prediction" column, with the library's values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scoring_core.convert import Converted, register_converter
from scoring_core.kinds import register_kind
from scoring_core.trees.ensemble import TreeEnsemble
from scoring_core.trees.lightgbm_text import from_lightgbm_text
from scoring_core.trees.xgboost_json import from_xgboost_json

_PROBABILITY_LINKS = ("sigmoid", "softmax")


@register_kind
class TreeStage:
    kind: ClassVar[str] = "trees"

    def __init__(self, ensemble: TreeEnsemble) -> None:
        self.ensemble = ensemble
        params, _ = ensemble.to_arrays()
        self.probabilities = ensemble.task == "classification" and (
            params["link"] in _PROBABILITY_LINKS or ensemble.probabilities)
        self._binary = self.probabilities and ensemble.n_outputs == 1

    @property
    def n_features(self) -> int:
        return self.ensemble.n_features

    @property
    def n_outputs(self) -> int:
        return 2 if self._binary else self.ensemble.n_outputs

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.ensemble.to_arrays()

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> TreeStage:
        return cls(TreeEnsemble.from_arrays(params, arrays))

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.ensemble.predict(X), dtype=np.float64)
        if self._binary:
            return np.column_stack([1.0 - out, out])
        return out.reshape(len(out), -1) if out.ndim == 1 else np.ascontiguousarray(out)


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


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _is_path_with(suffixes: tuple[str, ...], obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and Path(obj).suffix.lower() in suffixes and Path(obj).is_file()


def _is_lightgbm_text(obj: Any) -> bool:
    if not _is_path_with((".txt", ".model"), obj):
        return False
    with open(obj, "rb") as f:
        return f.read(4096).lstrip().startswith(b"tree")


register_converter(
    lambda m: _module_of(m) == "xgboost" or _is_path_with((".json",), m),
    lambda m: _converted(from_xgboost_json(m), "xgboost"),
    ("xgboost.Booster", "xgboost.XGBClassifier", "xgboost.XGBRegressor", "XGBoost JSON model file"),
)
register_converter(
    lambda m: _module_of(m) == "lightgbm" or _is_lightgbm_text(m),
    lambda m: _converted(from_lightgbm_text(m), "lightgbm"),
    ("lightgbm.Booster", "lightgbm.LGBMClassifier", "lightgbm.LGBMRegressor", "LightGBM text model file"),
)

from scoring_core.convert import sklearn_trees  # noqa: E402,F401
