"""The linear and transform kernels (``scoring_core.cuda.dense`` says what they do); this
module imports ``numba.cuda``, and is imported only when a first kernel is built."""

# mypy: ignore-errors
# (kernel bodies are numba-cuda's dialect: cuda.grid, threadIdx and local arrays have no Python types)

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, types

from scoring_core import linear as cpu_linear
from scoring_core import transforms as cpu_transforms


def linear_kernel(k: int) -> Any:
    K = k

    @cuda.jit
    def linear(X, coef, intercept, link, out):
        r = cuda.grid(1)
        if r >= X.shape[0]:
            return
        f = X.shape[1]
        scores = cuda.local.array(K, types.float64)
        for c in range(K):
            l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0
            j = 0
            while j + 8 <= f:
                l0 += coef[c, j] * np.float64(X[r, j])
                l1 += coef[c, j + 1] * np.float64(X[r, j + 1])
                l2 += coef[c, j + 2] * np.float64(X[r, j + 2])
                l3 += coef[c, j + 3] * np.float64(X[r, j + 3])
                l4 += coef[c, j + 4] * np.float64(X[r, j + 4])
                l5 += coef[c, j + 5] * np.float64(X[r, j + 5])
                l6 += coef[c, j + 6] * np.float64(X[r, j + 6])
                l7 += coef[c, j + 7] * np.float64(X[r, j + 7])
                j += 8
            rest = f - j
            if rest > 0:
                l0 += coef[c, j] * np.float64(X[r, j])
            if rest > 1:
                l1 += coef[c, j + 1] * np.float64(X[r, j + 1])
            if rest > 2:
                l2 += coef[c, j + 2] * np.float64(X[r, j + 2])
            if rest > 3:
                l3 += coef[c, j + 3] * np.float64(X[r, j + 3])
            if rest > 4:
                l4 += coef[c, j + 4] * np.float64(X[r, j + 4])
            if rest > 5:
                l5 += coef[c, j + 5] * np.float64(X[r, j + 5])
            if rest > 6:
                l6 += coef[c, j + 6] * np.float64(X[r, j + 6])
            scores[c] = (((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))) + intercept[c]
        if link == cpu_linear.IDENTITY:
            for c in range(K):
                out[r, c] = scores[c]
        elif link == cpu_linear.LOGISTIC:
            p = 1 / (1 + math.exp(-scores[0]))
            out[r, 0] = 1.0 - p
            out[r, 1] = p
        elif link == cpu_linear.SOFTMAX:
            top = scores[0]
            for c in range(1, K):
                if scores[c] > top:
                    top = scores[c]
            total = 0.0
            for c in range(K):
                e = math.exp(scores[c] - top)
                out[r, c] = e
                total += e
            for c in range(K):
                out[r, c] = out[r, c] / total
        else:  # one-vs-rest sigmoids, normalised (links.normalised_sigmoids)
            s = 0.0
            for c in range(K):
                p = 1 / (1 + math.exp(-scores[c]))
                out[r, c] = p
                s += p
            for c in range(K):
                out[r, c] = 1.0 / K if s == 0.0 else out[r, c] / s

    return linear


def map_kernel() -> Any:
    @cuda.jit
    def column_map(X, out, source, plain, indicator, fill, center, divisor, factor, offset, low, high):
        r = cuda.grid(1)
        if r >= X.shape[0]:
            return
        for j in range(out.shape[1]):
            x = X[r, source[j]]
            if plain[j]:
                out[r, j] = x
            elif indicator[j]:
                out[r, j] = 1.0 if x != x else 0.0
            else:
                # Stored after every step: it rounds to out's dtype where the CPU's does.
                out[r, j] = fill[j] if x != x else x
                if center[j] != 0:
                    out[r, j] = out[r, j] - center[j]
                if divisor[j] != 1:
                    out[r, j] = out[r, j] / divisor[j]
                if factor[j] != 1:
                    out[r, j] = out[r, j] * factor[j]
                if offset[j] != 0:
                    out[r, j] = out[r, j] + offset[j]
                if out[r, j] < low[j]:
                    out[r, j] = low[j]
                elif out[r, j] > high[j]:
                    out[r, j] = high[j]

    return column_map


# The CPU encoder's category lookup, compiled from the same Python function for the GPU.
category_index = cuda.jit(device=True)(cpu_transforms._category_index.py_func)


def encode_kernel() -> Any:
    PASS, ONE_HOT, ERROR = cpu_transforms.PASS, cpu_transforms.ONE_HOT, cpu_transforms.ERROR

    @cuda.jit
    def encode(X, out, mode, cat_start, categories, has_nan, drop, on_unknown, unknown_value, missing_value,
               out_start, errors):
        r = cuda.grid(1)
        if r >= X.shape[0]:
            return
        errors[r] = -1
        for i in range(X.shape[1]):
            o = out_start[i]
            if mode[i] == PASS:
                out[r, o] = X[r, i]
                continue
            s = cat_start[i]
            k = cat_start[i + 1] - s
            nan_cat = has_nan[i] != 0
            idx = category_index(np.float64(X[r, i]), categories, s, k, nan_cat)
            if idx < 0 and on_unknown[i] == ERROR and errors[r] < 0:
                errors[r] = i
            if mode[i] == ONE_HOT:
                for c in range(out_start[i + 1] - o):
                    out[r, o + c] = 0.0
                d = drop[i]
                if idx >= 0:
                    if d < 0 or idx < d:
                        out[r, o + idx] = 1.0
                    elif idx > d:
                        out[r, o + idx - 1] = 1.0
            elif idx < 0:
                out[r, o] = unknown_value[i]
            elif nan_cat and idx == k - 1:
                out[r, o] = missing_value[i]
            else:
                out[r, o] = idx

    return encode


def row_norm_kernel(dtype: str) -> Any:
    ZERO = np.dtype(dtype).type(0)  # the sum runs in X's dtype, as numpy's on the CPU

    @cuda.jit
    def row_norm(X, out, l1):
        r = cuda.grid(1)
        if r >= X.shape[0]:
            return
        total = ZERO
        for j in range(X.shape[1]):
            x = X[r, j]
            total += abs(x) if l1 else x * x
        norm = total if l1 else math.sqrt(total)
        if norm == 0:
            norm = norm + 1
        for j in range(X.shape[1]):
            out[r, j] = X[r, j] / norm

    return row_norm


def column_major_kernel():
    @cuda.jit
    def column_major(X, out):
        r = cuda.grid(1)
        if r < X.shape[0]:
            for j in range(X.shape[1]):
                out[r, j] = X[r, j]

    return column_major
