"""TreeSHAP for a ``TreeEnsemble``: its paths built once, then ``treeshap``'s kernels."""

from __future__ import annotations

import numpy as np

from milepost.core.errors import FailedPrecondition
from scoring_core.explain import treeshap
from scoring_core.trees.ensemble import TreeEnsemble


class TreeExplainer:
    """Contributions of one ensemble's margins, (n, n_groups, n_features + 1)."""

    def __init__(self, ensemble: TreeEnsemble) -> None:
        if not ensemble.has_covers:
            raise FailedPrecondition(
                "this tree ensemble has no node covers, which TreeSHAP weighs branches by: it was compiled "
                "before explanations kept them, or from a format that stores none (ONNX TreeEnsemble); "
                "compile it again from the source model (XGBoost, LightGBM, scikit-learn, CatBoost, Spark ML)")
        params, arrays = ensemble.to_arrays()
        self._arrays = arrays
        self.n_groups = ensemble.n_groups
        self.leaf_width = ensemble.leaf_width
        self.divisor = float(params["divisor"])
        self.paths = treeshap.build_paths(arrays, self.n_groups, self.leaf_width, self.divisor)

    def __call__(self, X: np.ndarray, *, parallel: bool | None = None) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype != np.float32:
            X = X.astype(np.float32)  # as the ensemble scores it
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            X = np.ascontiguousarray(X)
        return treeshap.contributions(self._arrays, self.paths, X, self.n_groups, self.leaf_width,
                                      self.divisor, parallel=parallel)
