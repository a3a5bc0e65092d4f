"""Linear models: the IR (coefficients, intercepts, a link) and its numba kernels.

Scores are accumulated in float64 whatever the input precision, so that a float32
batch reproduces scikit-learn to well under 1e-5. Two kernels exist because Arrow
batches arrive column-major and network tensors row-major, and either transposing
a whole batch costs far more than scoring it (PERF_NOTES technique 7):

- column-major: for a block of rows, add ``coef[c, j] * X[rows, j]`` feature by feature
  (four at a time); the inner loop runs down contiguous columns and vectorises.
- row-major: four rows at a time, each its own dot product, so four independent
  sums hide the add latency (fastmath stays off, so order is fixed and both kernels
  sum each row in the same order and give bit-identical results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numba import njit, prange

from milepost.core.errors import InvalidArgument
from scoring_core import threads
from scoring_core.kinds import register_kind
from scoring_core.links import normalised_sigmoids, sigmoid, softmax

LINKS = ("identity", "logistic", "softmax", "ovr_logistic")
_LINK_CODE = {name: code for code, name in enumerate(LINKS)}
IDENTITY, LOGISTIC, SOFTMAX, OVR_LOGISTIC = range(4)

# Rows per block: long enough runs down each column for the prefetcher, and the
# (n_outputs, BLOCK) float64 accumulators still sit in L2.
BLOCK = 1024


@njit(nogil=True, cache=True, fastmath=False)
def _finish_row(acc, r, link, out, row):
    """Write one row's outputs from its raw scores ``acc[:, r]`` through the link."""
    k = acc.shape[0]
    if link == IDENTITY:
        for c in range(k):
            out[row, c] = acc[c, r]
    elif link == LOGISTIC:
        # Binary: [1 - p, p], as scikit-learn's predict_proba.
        p = sigmoid(acc[0, r])
        out[row, 0] = 1.0 - p
        out[row, 1] = p
    elif link == SOFTMAX:
        softmax(acc[:, r], out[row], 0.0)
    else:
        # One-vs-rest sigmoids normalised to sum to one (SGDClassifier, log loss).
        normalised_sigmoids(acc[:, r], out[row])


@njit(nogil=True, cache=True, fastmath=False)
def _block_by_columns(X, coef, intercept, link, out, r0, r1, acc):
    n = r1 - r0
    k, f = coef.shape
    for c in range(k):
        b = intercept[c]
        for r in range(n):
            acc[c, r] = b
    # Four columns per pass over the accumulators: a quarter of the loads and stores,
    # and the additions still happen in feature order.
    j = 0
    while j + 4 <= f:
        x0 = X[r0:r1, j]
        x1 = X[r0:r1, j + 1]
        x2 = X[r0:r1, j + 2]
        x3 = X[r0:r1, j + 3]
        for c in range(k):
            w0 = coef[c, j]
            w1 = coef[c, j + 1]
            w2 = coef[c, j + 2]
            w3 = coef[c, j + 3]
            a = acc[c]
            for r in range(n):
                a[r] = (
                    ((a[r] + w0 * np.float64(x0[r])) + w1 * np.float64(x1[r])) + w2 * np.float64(x2[r])
                ) + w3 * np.float64(x3[r])
        j += 4
    while j < f:
        x0 = X[r0:r1, j]
        for c in range(k):
            w0 = coef[c, j]
            a = acc[c]
            for r in range(n):
                a[r] += w0 * np.float64(x0[r])
        j += 1
    for r in range(n):
        _finish_row(acc, r, link, out, r0 + r)


@njit(nogil=True, cache=True, fastmath=False)
def _block_by_rows(X, coef, intercept, link, out, r0, r1, acc):
    n = r1 - r0
    k, f = coef.shape
    r = 0
    while r + 4 <= n:
        x0 = X[r0 + r]
        x1 = X[r0 + r + 1]
        x2 = X[r0 + r + 2]
        x3 = X[r0 + r + 3]
        for c in range(k):
            b = intercept[c]
            s0 = b
            s1 = b
            s2 = b
            s3 = b
            for j in range(f):
                w = coef[c, j]
                s0 += w * np.float64(x0[j])
                s1 += w * np.float64(x1[j])
                s2 += w * np.float64(x2[j])
                s3 += w * np.float64(x3[j])
            acc[c, r] = s0
            acc[c, r + 1] = s1
            acc[c, r + 2] = s2
            acc[c, r + 3] = s3
        r += 4
    while r < n:
        x0 = X[r0 + r]
        for c in range(k):
            s0 = intercept[c]
            for j in range(f):
                s0 += coef[c, j] * np.float64(x0[j])
            acc[c, r] = s0
        r += 1
    for r in range(n):
        _finish_row(acc, r, link, out, r0 + r)


@njit(nogil=True, cache=True, fastmath=False)
def _score_columns_serial(X, coef, intercept, link, out):
    n = X.shape[0]
    acc = np.empty((coef.shape[0], BLOCK))
    for r0 in range(0, n, BLOCK):
        _block_by_columns(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), acc)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _score_columns_parallel(X, coef, intercept, link, out):
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        acc = np.empty((coef.shape[0], BLOCK))
        r0 = b * BLOCK
        _block_by_columns(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), acc)


@njit(nogil=True, cache=True, fastmath=False)
def _score_rows_serial(X, coef, intercept, link, out):
    n = X.shape[0]
    acc = np.empty((coef.shape[0], BLOCK))
    for r0 in range(0, n, BLOCK):
        _block_by_rows(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), acc)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _score_rows_parallel(X, coef, intercept, link, out):
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        acc = np.empty((coef.shape[0], BLOCK))
        r0 = b * BLOCK
        _block_by_rows(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), acc)


def score(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, link: str) -> np.ndarray:
    """Scores of a linear model on a float32/float64 (n, f) array in C or F order.

    Returns a C-ordered float64 (n, n_outputs) array; the binary logistic link gives
    two columns from one coefficient row.
    """
    k = coef.shape[0]
    code = _LINK_CODE[link]
    n_out = 2 if code == LOGISTIC else k
    out = np.empty((X.shape[0], n_out), dtype=np.float64)
    if X.shape[0] == 0:
        return out
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.flags.c_contiguous:
        serial, parallel = _score_rows_serial, _score_rows_parallel
    else:
        if not X.flags.f_contiguous:
            X = np.asfortranarray(X)
        serial, parallel = _score_columns_serial, _score_columns_parallel
    threads.run_kernel(serial, parallel, X.shape[0], X, coef, intercept, code, out)
    return out


@register_kind
@dataclass(frozen=True, eq=False)
class LinearModel:
    """``link(X @ coef.T + intercept)``: every scikit-learn linear estimator we compile.

    ``coef`` is (k, n_features) float64, ``intercept`` (k,) float64. Links:
    identity (regression, k = 1), logistic (binary, k = 1, two outputs),
    softmax (multinomial), ovr_logistic (one-vs-rest sigmoids normalised).
    """

    kind: ClassVar[str] = "linear"
    coef: np.ndarray
    intercept: np.ndarray
    link: str

    def __post_init__(self) -> None:
        coef = np.ascontiguousarray(self.coef, dtype=np.float64)
        intercept = np.ascontiguousarray(self.intercept, dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] < 1 or coef.shape[1] < 1:
            raise InvalidArgument(f"linear: coef must be a non-empty 2-D array, got shape {coef.shape}")
        if intercept.shape != (coef.shape[0],):
            raise InvalidArgument(
                f"linear: intercept has shape {intercept.shape}, expected ({coef.shape[0]},)"
            )
        if self.link not in _LINK_CODE:
            raise InvalidArgument(f"linear: unknown link {self.link!r}; known: {', '.join(LINKS)}")
        if self.link == "logistic" and coef.shape[0] != 1:
            raise InvalidArgument("linear: the logistic link takes exactly one coefficient row")
        coef.setflags(write=False)
        intercept.setflags(write=False)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def n_features(self) -> int:
        return self.coef.shape[1]

    @property
    def n_outputs(self) -> int:
        return 2 if self.link == "logistic" else self.coef.shape[0]

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"link": self.link}, {"coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LinearModel:
        missing = {"coef", "intercept"} - set(arrays)
        if missing:
            raise InvalidArgument(f"linear: missing arrays {sorted(missing)}")
        return cls(coef=arrays["coef"], intercept=arrays["intercept"], link=params.get("link", ""))

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidArgument(f"linear: input has shape {X.shape}, expected (n, {self.n_features})")
        return score(X, self.coef, self.intercept, self.link)
