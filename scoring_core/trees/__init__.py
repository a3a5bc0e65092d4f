"""Tree ensembles: one IR for XGBoost, LightGBM and scikit-learn tree models, and the numba
kernels that score it.

    from scoring_core.convert import from_xgboost_json, from_lightgbm_text
    ens = from_xgboost_json("model.json")      # or from_lightgbm_text("model.txt")
    ens.predict(X)                              # X: (n, n_features) float32, NaN = missing
    params, arrays = ens.to_arrays()            # JSON-able dict + numeric arrays, for a bundle
    ens = TreeEnsemble.from_arrays(params, arrays)

``ensemble`` is the IR, ``builder`` what converters fill it with, ``layouts`` lays it out
for the kernels (``tree_kernels``), ``stage`` makes it a scoring-core stage. The
converters that read the libraries' models are in ``scoring_core.convert``.
``predict`` reproduces the library's default prediction (``Booster.predict``).
"""

from __future__ import annotations

from scoring_core.trees.ensemble import TreeEnsemble

__all__ = ["TreeEnsemble"]
