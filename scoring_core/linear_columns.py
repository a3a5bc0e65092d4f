"""The linear kernel over named Arrow columns as they are: no copy into one matrix.

Arrow batches of one column per feature used to be copied, column by column, into a
Fortran-ordered matrix before the column-major kernel read it (scoring_core.arrow_input):
three passes over memory for one, and the first touch of a fresh matrix as large as the
input. Here each feature's own buffer is read in place (a numba typed List of 1-D views,
float32 or float64, without nulls), in the blocks, passes (``linear._passes``) and
prefetches of linear's column-major kernel (``linear.column_block_rows``,
``COLUMN_AHEAD_ROWS``), and finished by its ``combine_lanes``.

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
    _LINE,
    _LINK_CODE,
    COLUMN_AHEAD_ROWS,
    LANES,
    LOGISTIC,
    _counted_loop,
    _data_pointer,
    _is_float_array,
    _passes,
    _prefetch,
    _splat,
    add_weighted_rows,
    column_block_rows,
    combine_lanes,
    zero_lanes,
)

MIN_ROWS = 16_384


def _segments_pass_intrinsic(columns: int) -> Any:
    """``f(acc, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)``: for
    ``r < 16 * (n // 16)``, ``acc[r] = ((acc[r] + w0 * x0[r0 + r]) + w1 * x1[r0 + r]) + ...``
    over the first ``columns`` of the 1-D arrays (the others are unused): linear's column
    pass, reading each column from its own buffer, while it prefetches ``y0 .. y3`` from
    row ``ahead`` on, a line each per 16 rows. Plain vector loads, fpext, fmul and fadd with
    no fast-math flags, so each row's sum is the scalar code's."""

    @intrinsic
    def segments_pass(typingctx: Any, acc: Any, x0: Any, x1: Any, x2: Any, x3: Any, r0: Any, n: Any,
                      w0: Any, w1: Any, w2: Any, w3: Any, y0: Any, y1: Any, y2: Any, y3: Any,
                      ahead: Any) -> Any:
        xs = (x0, x1, x2, x3, y0, y1, y2, y3)
        if not (_is_float_array(acc, "C") and acc.dtype == types.float64 and acc.ndim == 1
                and all(_is_float_array(x, "C") and x.ndim == 1 and x.dtype == x0.dtype for x in xs)
                and all(isinstance(t, types.Integer) for t in (r0, n, ahead))
                and all(isinstance(t, types.Float) for t in (w0, w1, w2, w3))):
            return None
        sig = types.void(acc, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            t = signature.args
            i64 = ir.IntType(64)
            start = context.cast(builder, args[5], t[5], types.int64)
            count = context.cast(builder, args[6], t[6], types.int64)
            cols = [_data_pointer(context, builder, t[1 + q], args[1 + q], start) for q in range(columns)]
            weights = [_splat(builder, context.cast(builder, args[7 + q], t[7 + q], types.float64))
                       for q in range(columns)]
            sums = _data_pointer(context, builder, t[0], args[0], ir.Constant(i64, 0))
            soon = context.cast(builder, args[15], t[15], types.int64)
            later = [_data_pointer(context, builder, t[11 + q], args[11 + q], soon) for q in range(4)]
            step = 2 * LANES
            per_line = _LINE // (t[1].dtype.bitwidth // 8)

            def rows16(i: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                base = builder.mul(i, ir.Constant(i64, step))
                for y in later:
                    for line in range(0, step, per_line):
                        _prefetch(builder, builder.gep(y, [builder.add(base, ir.Constant(i64, line))]))
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
def _pass(a, columns, j, m, coef, c, r0, n, y0, y1, y2, y3, ahead):
    """``a[r] += coef[c, j + 8q] * x[j + 8q][r0 + r]`` for ``q < m`` in order, every ``r < n``,
    prefetching ``y0 .. y3`` from row ``ahead``."""
    x0 = columns[j]
    x1 = columns[j + LANES] if m > 1 else x0
    x2 = columns[j + 2 * LANES] if m > 2 else x0
    x3 = columns[j + 3 * LANES] if m > 3 else x0
    w0 = coef[c, j]
    w1 = coef[c, j + LANES] if m > 1 else 0.0
    w2 = coef[c, j + 2 * LANES] if m > 2 else 0.0
    w3 = coef[c, j + 3 * LANES] if m > 3 else 0.0
    if m == 4:
        _PASS_4(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)
    elif m == 3:
        _PASS_3(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)
    elif m == 2:
        _PASS_2(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)
    else:
        _PASS_1(a, x0, x1, x2, x3, r0, n, w0, w1, w2, w3, y0, y1, y2, y3, ahead)
    for r in range(n - n % (2 * LANES), n):  # the rows after the last 16
        s = a[r]
        for q in range(m):
            s = s + coef[c, j + q * LANES] * np.float64(columns[j + q * LANES][r0 + r])
        a[r] = s


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _column(columns, q, j, m):
    """The pass's column ``q`` (of ``m`` from ``j``; the last one again past ``m``)."""
    return columns[j + min(q, m - 1) * LANES]


@njit(nogil=True, cache=True, fastmath=False)
def _block(columns, coef, intercept, link, out, r0, r1, scores, acc, passes):
    """Rows ``r0 .. r1``; ``scores`` (k, rows), ``acc`` (k, LANES, rows) scratch, ``passes``
    from ``linear._passes``: linear's ``_block_by_columns`` over these columns, with its
    prefetches (down a pass's own columns, then into the next pass's)."""
    n = r1 - r0
    k = coef.shape[0]
    n_passes = passes.shape[0]
    zero_lanes(acc, n)
    split = n - COLUMN_AHEAD_ROWS if n > COLUMN_AHEAD_ROWS else 0
    for p in range(n_passes):
        j = passes[p, 0]
        m = passes[p, 1]
        after = (p + 1) // n_passes  # 1 for the last pass: the next block's first
        row = min(r0 + after * scores.shape[1], max(0, out.shape[0] - COLUMN_AHEAD_ROWS))
        nj, nm = passes[(p + 1) % n_passes, 0], passes[(p + 1) % n_passes, 1]
        lane = j % LANES
        for c in range(k):
            if split:
                _pass(acc[c, lane], columns, j, m, coef, c, r0, split, _column(columns, 0, j, m),
                      _column(columns, 1, j, m), _column(columns, 2, j, m), _column(columns, 3, j, m),
                      r0 + COLUMN_AHEAD_ROWS)
            _pass(acc[c, lane][split:], columns, j, m, coef, c, r0 + split, n - split,
                  _column(columns, 0, nj, nm), _column(columns, 1, nj, nm), _column(columns, 2, nj, nm),
                  _column(columns, 3, nj, nm), row)
    combine_lanes(acc, intercept, link, scores, out, r0, 0, n)


@njit(nogil=True, cache=True, fastmath=False)
def _serial(columns, coef, intercept, link, out, rows):
    n = out.shape[0]
    k = coef.shape[0]
    scores = np.empty((k, rows))
    acc = np.empty((k, LANES, rows))
    passes = _passes(len(columns))
    for r0 in range(0, n, rows):
        _block(columns, coef, intercept, link, out, r0, min(n, r0 + rows), scores, acc, passes)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _parallel(columns, coef, intercept, link, out, rows):
    n = out.shape[0]
    k = coef.shape[0]
    passes = _passes(len(columns))
    for b in prange((n + rows - 1) // rows):
        scores = np.empty((k, rows))
        acc = np.empty((k, LANES, rows))
        r0 = b * rows
        _block(columns, coef, intercept, link, out, r0, min(n, r0 + rows), scores, acc, passes)


def score_columns(columns: list[np.ndarray], coef: np.ndarray, intercept: np.ndarray, link: str) -> np.ndarray:
    """``linear.score`` of the matrix whose columns are ``columns`` (1-D, equal length, all
    float32 or all float64, in the model's feature order), without building it."""
    code = _LINK_CODE[link]
    n = len(columns[0])
    out = np.empty((n, 2 if code == LOGISTIC else coef.shape[0]), dtype=np.float64)
    if n:
        rows = column_block_rows(coef.shape[0], n, threads.num_threads())
        threads.run_kernel(_serial, _parallel, n, typed.List(columns), coef, intercept, code, out, rows)
    return out
