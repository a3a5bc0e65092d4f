"""Tree ensembles as a scoring-core stage (kind "trees").

The stage maps a TreeEnsemble's prediction onto CompiledModel's contract: a
probabilistic classifier (sigmoid or softmax link, or an ensemble marked
``probabilities``, such as a forest's averaged class distributions) gives (n, n_classes)
probabilities, binary included as [1 - p, p]; everything else the library
returns as one value per row (regression, raw margins, hinge labels,
multi:softmax class indices) is a "prediction" column, with the library's values.
The converters that build it live in ``scoring_core.convert``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from scoring_core.kinds import register_kind
from scoring_core.trees.ensemble import TreeEnsemble

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
        out = self.ensemble.predict(X)
        if self._binary:
            return _probability_pairs(out)
        out = np.asarray(out, dtype=np.float64)
        return out.reshape(-1, 1) if out.ndim == 1 else np.ascontiguousarray(out)  # (0,) too


@njit(nogil=True, cache=True)
def _probability_pairs(p):
    """(1 - p, p) for each row's probability ``p``, in float64: one call, where the four numpy
    calls it replaces (a cast, an empty, a subtract, a copy) took a sixth of a one-row score."""
    both = np.empty((p.shape[0], 2))
    for i in range(p.shape[0]):
        v = np.float64(p[i])
        both[i, 0] = 1.0 - v
        both[i, 1] = v
    return both
