"""Row normalisation, a feature transform stage (kind "row_norm"): every row divided by its
L1 or L2 norm, as ONNX's Normalizer (and scikit-learn's Normalizer) computes it.

Unlike ``column_map`` and ``encode``, an output here depends on the whole row, so it is a
stage of its own. As onnxruntime does, a row whose norm is zero is left as it is, a NaN
anywhere in a row makes the whole row NaN (its norm is NaN), and the arithmetic stays in
the input's dtype (float32 for Arrow batches); the sum's order differs from onnxruntime's
by float rounding only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from milepost.core.errors import InvalidArgument
from scoring_core.kinds import register_kind

NORMS = ("l1", "l2")


@register_kind
@dataclass(frozen=True)
class RowNorm:
    """``x / ||x||`` per row over ``n`` columns; ``norm`` "l1" (sum of absolute values) or "l2"."""

    kind: ClassVar[str] = "row_norm"
    n: int
    norm: str

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise InvalidArgument(f"row_norm: n must be a positive integer, got {self.n!r}")
        if self.norm not in NORMS:
            raise InvalidArgument(f"row_norm: norm {self.norm!r} is not one of {NORMS}")

    @property
    def n_features(self) -> int:
        return self.n

    @property
    def n_outputs(self) -> int:
        return self.n

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n": self.n, "norm": self.norm}, {}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RowNorm:
        n: Any = params.get("n")  # JSON, checked in __post_init__
        return cls(n, str(params.get("norm", "")))

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n:
            raise InvalidArgument(f"row_norm: input has shape {X.shape}, expected (n, {self.n})")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if self.norm == "l1":
            norm = np.abs(X).sum(axis=1, keepdims=True)
        else:
            norm = np.sqrt(np.square(X).sum(axis=1, keepdims=True))
        norm[norm == 0] = 1
        return X / norm
