"""scikit-learn linear estimators -> a ``linear`` stage.

Each estimator is reproduced as its default prediction computes it (scikit-learn 1.9):

- regressors: ``X @ coef_ + intercept_`` (identity link);
- LogisticRegression: binary via a sigmoid, giving [1 - p, p]; more classes via softmax
  (1.9 has no ``multi_class`` option left: predict_proba is always multinomial);
- SGDClassifier(loss="log_loss"): binary via a sigmoid; more classes via one-vs-rest
  sigmoids normalised to sum to one. Other losses have no predict_proba we reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.convert.lineage import sklearn_lineage
from scoring_core.linear import LinearModel

REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "SGDRegressor",
)
CLASSIFIERS = ("LogisticRegression", "LogisticRegressionCV", "SGDClassifier")
PACKAGE = "sklearn.linear_model"
NAMES = REGRESSORS + CLASSIFIERS  # the classes of PACKAGE this converter takes


def _dense(array: Any) -> np.ndarray:
    if hasattr(array, "toarray"):  # coef_ after .sparsify()
        array = array.toarray()
    return np.asarray(array, dtype=np.float64)


def convert(estimator: Any) -> Converted:
    name = type(estimator).__name__
    if not hasattr(estimator, "coef_"):
        raise InvalidArgument(f"{name} is not fitted (it has no coef_)")
    coef = _dense(estimator.coef_)
    if coef.ndim == 1:
        coef = coef[None, :]
    intercept = np.broadcast_to(_dense(estimator.intercept_), (coef.shape[0],)).copy()
    names = getattr(estimator, "feature_names_in_", None)
    common: dict[str, Any] = {
        "source": f"{PACKAGE}.{name}",
        "feature_names": None if names is None else [str(n) for n in names],
        "lineage": sklearn_lineage(estimator),
    }
    if name in REGRESSORS:
        if coef.shape[0] != 1:
            raise Unimplemented(
                f"{name} with {coef.shape[0]} targets: multi-output regression is not supported"
            )
        return Converted(LinearModel(coef, intercept, "identity"), "regression", None, **common)

    if name == "SGDClassifier" and estimator.loss != "log_loss":
        raise Unimplemented(
            f"SGDClassifier(loss={estimator.loss!r}) is not supported: scoring_core reproduces "
            "predict_proba, supported for loss='log_loss' only"
        )
    classes = np.asarray(estimator.classes_).tolist()
    if len(classes) == 2:
        link = "logistic"
    elif name == "SGDClassifier":
        link = "ovr_logistic"
    else:
        link = "softmax"
    return Converted(LinearModel(coef, intercept, link), "classification", classes, **common)
