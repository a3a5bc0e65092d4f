"""scikit-learn MLPClassifier and MLPRegressor -> an ``mlp`` stage.

As ``_forward_pass_fast`` computes them (scikit-learn 1.9): every hidden layer applies the
estimator's ``activation``, the output layer its ``out_activation_``: ``logistic`` for a
binary classifier (predict_proba gives [1 - p, p]), ``softmax`` for more classes,
``identity`` for regression. Weights keep their dtype, so a network fitted on float32
data is computed in float32, as scikit-learn computes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.convert.lineage import sklearn_lineage
from scoring_core.mlp import mlp_from_layers

PACKAGE = "sklearn.neural_network"
NAMES = ("MLPClassifier", "MLPRegressor")  # the classes of PACKAGE this converter takes
_HIDDEN = {"identity": "identity", "logistic": "logistic", "tanh": "tanh", "relu": "relu"}


def convert(estimator: Any) -> Converted:
    name = type(estimator).__name__
    if not hasattr(estimator, "coefs_"):
        raise InvalidArgument(f"{name} is not fitted (it has no coefs_)")
    hidden = _HIDDEN.get(estimator.activation)
    if hidden is None:
        raise Unimplemented(f"{name}(activation={estimator.activation!r}) is not supported")
    coefs = [np.asarray(c) for c in estimator.coefs_]
    intercepts = [np.asarray(b) for b in estimator.intercepts_]
    dtype = "float32" if all(c.dtype == np.float32 for c in coefs + intercepts) else "float64"
    out = estimator.out_activation_
    n_outputs = coefs[-1].shape[1]
    head = "none"
    if name == "MLPClassifier":
        classes = np.asarray(estimator.classes_).tolist()
        if out == "softmax":
            task_out = [("softmax", 0.0)]
        elif out == "logistic" and n_outputs == 1 and len(classes) == 2:
            task_out, head = [("logistic", 0.0)], "binary"
        else:
            raise Unimplemented(
                f"MLPClassifier with {n_outputs} logistic outputs (multilabel) is not supported"
            )
        task = "classification"
        predict_ndim = 2
    else:
        if out != "identity":
            raise Unimplemented(f"MLPRegressor with output activation {out!r} is not supported")
        classes, task_out, task = None, [], "regression"
        predict_ndim = 1 if n_outputs == 1 else 2
    layers = []
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        last = i == len(coefs) - 1
        layers.append((w, b, task_out if last else [(hidden, 0.0)]))
    names = getattr(estimator, "feature_names_in_", None)
    return Converted(
        mlp_from_layers(layers, head=head, dtype=dtype),
        task,
        classes,
        source=f"{PACKAGE}.{name}",
        feature_names=None if names is None else [str(n) for n in names],
        lineage=sklearn_lineage(estimator),
        predict_ndim=predict_ndim,
    )
