"""Output link functions: what turns a model's raw scores into its prediction.

One implementation of each, shared by the linear, MLP and tree kernels (numba functions,
called from inside their jitted loops); each kernel keeps its own table of which link a
model uses. The formulas are the source libraries' own (scikit-learn's ``expit`` and
``softmax``, XGBoost's and LightGBM's output transforms), in the order they compute them,
since one ulp can change a probability that is compared with a threshold downstream.

``softmax`` computes in the type of its ``zero`` argument: the tree kernels pass a float64
zero to compute a float32 row in double and round once on store (as XGBoost does), the
MLP kernels a zero of the block's dtype to stay in float32 as torch and scikit-learn do.
``sigmoid_in_place`` is the same sigmoid over a whole block with numpy's vectorised
ufuncs: numba's scalar ``exp`` loop is several times slower there.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def sigmoid(x):
    """``1 / (1 + exp(-x))``: the logistic function, scikit-learn's ``expit``."""
    return 1 / (1 + np.exp(-x))


def sigmoid_in_place(v: np.ndarray) -> None:
    """``v[:] = sigmoid(v)`` with numpy's vectorised ufuncs; ``exp(-x)`` overflows to inf
    for very negative ``x``, which gives exactly 0."""
    with np.errstate(over="ignore"):
        np.negative(v, out=v)
        np.exp(v, out=v)
        v += 1
        np.reciprocal(v, out=v)


@njit(nogil=True, cache=True)
def softmax(x, out, zero):
    """``out[:] = softmax(x)`` over one row (``out`` may be ``x``), in ``zero``'s type:
    subtract the row's max, exponentiate, normalise, as scikit-learn, torch and XGBoost do."""
    n = x.shape[0]
    top = x[0] + zero  # typed as the wider of x's dtype and zero's: the row's arithmetic
    for j in range(1, n):
        if x[j] > top:
            top = x[j]
    total = zero
    for j in range(n):
        e = np.exp(x[j] - top)
        out[j] = e
        total += e
    for j in range(n):
        out[j] = out[j] / total


@njit(nogil=True, cache=True)
def normalised_sigmoids(x, out):
    """One-vs-rest: ``out[:] = sigmoid(x)`` normalised to sum to one (uniform when every
    sigmoid is 0), as scikit-learn's SGDClassifier(loss="log_loss").predict_proba."""
    k = x.shape[0]
    s = 0.0
    for c in range(k):
        p = sigmoid(x[c])
        out[c] = p
        s += p
    for c in range(k):
        out[c] = 1.0 / k if s == 0.0 else out[c] / s


@njit(nogil=True, cache=True)
def hinge(x):
    """1.0 for a positive margin, else 0.0 (XGBoost binary:hinge)."""
    return 1.0 if x > 0.0 else 0.0


@njit(nogil=True, cache=True)
def log1p_exp(x):
    """``log(1 + exp(x))`` (LightGBM cross_entropy_lambda)."""
    return np.log1p(np.exp(x))


@njit(nogil=True, cache=True)
def signed_square(x):
    """``sign(x) * x * x`` (LightGBM regression with ``sqrt``)."""
    return x * abs(x)
