"""The linear kernel over named Arrow columns as they are: no copy into one matrix.

Arrow batches of one column per feature used to be copied, column by column, into a
Fortran-ordered matrix before the column-major kernel read it (scoring_core.arrow_input):
three passes over memory for one, and the first touch of a fresh matrix as large as the
input. Here each feature's own buffer is read in place (a numba typed List of 1-D views,
float32 or float64, without nulls), in blocks of rows (``_block_rows``).

The sums are the ones scoring_core.linear defines, so the three layouts (row-major, one
column-major matrix, these columns) give bit-identical scores: lane ``k`` of a row adds
``coef[c, j] * float64(x[j])`` for ``j = k, k + 8, ...`` in that order, and the score is
``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + intercept[c]``. Each inner loop runs
down one column's segment, element by element, which LLVM turns into vector operations
without reordering any sum (each row's lane is its own accumulator).

Building the typed List costs about 2 us a column, so batches below ``MIN_ROWS`` keep the
matrix path, where that is the larger cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, typed, types
from numba.extending import intrinsic

from scoring_core import threads
from scoring_core.linear import (
    _LINK_CODE,
    LANES,
    LOGISTIC,
    _counted_loop,
    _data_pointer,
    _finish,
    _is_float_array,
    _splat,
    add_weighted_rows,
)

MIN_ROWS = 16_384
LANE_BYTES = 1 << 20  # lane sums a block keeps: (outputs, 8, rows) doubles, in L2
MIN_BLOCK_ROWS = 2048
TOGETHER = 4  # columns of one lane added in one pass


def _segments_pass_intrinsic(columns: int) -> Any:
    """``f(acc, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)``: for ``r < 16 * (n // 16)``,
    ``acc[r] = ((acc[r] + w0 * x0[r0 + r]) + w1 * x1[r0 + r]) + ...`` over the first
    ``columns`` of the 1-D arrays (the others are unused): linear's column pass, reading
    each column from its own buffer. Plain vector loads, fpext, fmul and fadd with no
    fast-math flags, so each row's sum is the scalar code's."""

    @intrinsic
    def segments_pass(typingctx: Any, acc: Any, x0: Any, x1: Any, x2: Any, x3: Any, r0: Any, n: Any,
                      w0: Any, w1: Any, w2: Any, w3: Any) -> Any:
        xs = (x0, x1, x2, x3)
        if not (_is_float_array(acc, "C") and acc.dtype == types.float64 and acc.ndim == 1
                and all(_is_float_array(x, "C") and x.ndim == 1 and x.dtype == x0.dtype for x in xs)
                and all(isinstance(t, types.Integer) for t in (r0, n))
                and all(isinstance(t, types.Float) for t in (w0, w1, w2, w3))):
            return None
        sig = types.void(acc, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            t = signature.args
            i64 = ir.IntType(64)
            start = context.cast(builder, args[5], t[5], types.int64)
            count = context.cast(builder, args[6], t[6], types.int64)
            cols = [_data_pointer(context, builder, t[1 + q], args[1 + q], start) for q in range(columns)]
            weights = [_splat(builder, context.cast(builder, args[7 + q], t[7 + q], types.float64))
                       for q in range(columns)]
            sums = _data_pointer(context, builder, t[0], args[0], ir.Constant(i64, 0))
            step = 2 * LANES

            def rows16(i: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                base = builder.mul(i, ir.Constant(i64, step))
                for half in range(2):
                    add_weighted_rows(builder, context, sums, cols, weights, builder.add(base, ir.Constant(i64, half * LANES)),
                                      t[1].dtype)
                return carried

            _counted_loop(builder, builder.sdiv(count, ir.Constant(i64, step)), [], rows16)
            return context.get_dummy_value()

        return sig, codegen

    return segments_pass


_PASS_1 = _segments_pass_intrinsic(1)
_PASS_2 = _segments_pass_intrinsic(2)
_PASS_3 = _segments_pass_intrinsic(3)
_PASS_4 = _segments_pass_intrinsic(4)


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _pass(a, columns, j, m, coef, c, r0, n):
    """``a[r] += coef[c, j + 8q] * x[j + 8q][r0 + r]`` for ``q < m`` in order, every ``r < n``."""
    x0 = columns[j]
    x1 = columns[j + LANES] if m > 1 else x0
    x2 = columns[j + 2 * LANES] if m > 2 else x0
    x3 = columns[j + 3 * LANES] if m > 3 else x0
    w0 = coef[c, j]
    w1 = coef[c, j + LANES] if m > 1 else 0.0
    w2 = coef[c, j + 2 * LANES] if m > 2 else 0.0
    w3 = coef[c, j + 3 * LANES] if m > 3 else 0.0
    if m == 4:
        _PASS_4(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)
    elif m == 3:
        _PASS_3(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)
    elif m == 2:
        _PASS_2(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)
    else:
        _PASS_1(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3)
    for r in range(n - n % (2 * LANES), n):  # the rows after the last 16
        s = a[r]
        for q in range(m):
            s = s + coef[c, j + q * LANES] * np.float64(columns[j + q * LANES][r0 + r])
        a[r] = s


@njit(nogil=True, cache=True, fastmath=False)
def _block(columns, coef, intercept, link, out, r0, r1, scores, acc):
    """Rows ``r0 .. r1``; ``scores`` (k, rows), ``acc`` (k, LANES, rows) scratch. Lane by
    lane, up to four of the lane's columns a pass (added in their order), so that the lane
    sums are read and written once for four columns read."""
    n = r1 - r0
    k = coef.shape[0]
    f = len(columns)
    for c in range(k):
        for lane in range(LANES):
            a = acc[c, lane]
            for r in range(n):
                a[r] = 0.0
    for lane in range(min(LANES, f)):
        for j in range(lane, f, TOGETHER * LANES):
            m = min(TOGETHER, (f - j + LANES - 1) // LANES)
            for c in range(k):
                _pass(acc[c, lane], columns, j, m, coef, c, r0, n)
    for c in range(k):
        a0, a1, a2, a3 = acc[c, 0], acc[c, 1], acc[c, 2], acc[c, 3]
        a4, a5, a6, a7 = acc[c, 4], acc[c, 5], acc[c, 6], acc[c, 7]
        b = intercept[c]
        s = scores[c]
        for r in range(n):
            s[r] = (((a0[r] + a4[r]) + (a2[r] + a6[r])) + ((a1[r] + a5[r]) + (a3[r] + a7[r]))) + b
    _finish(scores, 0, n, link, out, r0)


@njit(nogil=True, cache=True)
def _block_rows(k):
    """Rows a block for ``k`` outputs: as many as keep the lane sums within LANE_BYTES (a
    block's fixed cost, fetching 200 columns from the list, is paid less often), a multiple
    of 16."""
    return max(MIN_BLOCK_ROWS, (LANE_BYTES // (8 * LANES * k)) // 16 * 16)


@njit(nogil=True, cache=True, fastmath=False)
def _serial(columns, coef, intercept, link, out):
    n = out.shape[0]
    k = coef.shape[0]
    rows = _block_rows(k)
    scores = np.empty((k, rows))
    acc = np.empty((k, LANES, rows))
    for r0 in range(0, n, rows):
        _block(columns, coef, intercept, link, out, r0, min(n, r0 + rows), scores, acc)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _parallel(columns, coef, intercept, link, out):
    n = out.shape[0]
    k = coef.shape[0]
    rows = _block_rows(k)
    for b in prange((n + rows - 1) // rows):
        scores = np.empty((k, rows))
        acc = np.empty((k, LANES, rows))
        r0 = b * rows
        _block(columns, coef, intercept, link, out, r0, min(n, r0 + rows), scores, acc)


def score_columns(columns: list[np.ndarray], coef: np.ndarray, intercept: np.ndarray, link: str) -> np.ndarray:
    """``linear.score`` of the matrix whose columns are ``columns`` (1-D, equal length, all
    float32 or all float64, in the model's feature order), without building it."""
    code = _LINK_CODE[link]
    n = len(columns[0])
    out = np.empty((n, 2 if code == LOGISTIC else coef.shape[0]), dtype=np.float64)
    if n:
        threads.run_kernel(_serial, _parallel, n, typed.List(columns), coef, intercept, code, out)
    return out
