"""What a bundle records about where a model came from: the library, its version and the
estimator's parameters, as deterministic JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_param(value: Any) -> Any:
    """A parameter value as deterministic JSON: objects (random states, arrays, nested
    estimators) become their type name, so the bundle version never depends on a memory
    address."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return json_param(value.item())
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return [json_param(v) for v in value]
    return f"<{type(value).__name__}>"


def json_value(value: Any) -> Any:
    """Statistics as JSON: arrays become lists, NaN and infinities become None (the
    manifest refuses them), numpy scalars become Python ones."""
    if isinstance(value, np.ndarray):
        return [json_value(v) for v in value.tolist()] if value.dtype != object else [json_value(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def sklearn_lineage(estimator: Any) -> dict[str, Any]:
    import sklearn

    params = {k: json_param(v) for k, v in sorted(estimator.get_params(deep=False).items())}
    return {"library": "scikit-learn", "library_version": sklearn.__version__, "params": params}
