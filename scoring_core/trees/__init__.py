"""Tree ensembles: one IR for XGBoost and LightGBM models, and numba kernels that score it.

    from scoring_core.trees import TreeEnsemble, from_xgboost_json, from_lightgbm_text
    ens = from_xgboost_json("model.json")      # or from_lightgbm_text("model.txt")
    ens.predict(X)                              # X: (n, n_features) float32, NaN = missing
    params, arrays = ens.to_arrays()            # JSON-able dict + numeric arrays, for a bundle
    ens = TreeEnsemble.from_arrays(params, arrays)

Converters read the libraries' own non-executable dumps (XGBoost JSON, LightGBM text),
never pickles; the libraries themselves are needed only to hand over a live Booster.
``predict`` reproduces the library's default prediction (``Booster.predict``).
"""

from __future__ import annotations

from scoring_core.trees.ensemble import TreeEnsemble
from scoring_core.trees.lightgbm_text import from_lightgbm_text
from scoring_core.trees.xgboost_json import from_xgboost_json

__all__ = ["TreeEnsemble", "from_lightgbm_text", "from_xgboost_json"]
