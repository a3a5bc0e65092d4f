"""The column-major linear kernel: named Arrow columns read where they are, and
F-ordered matrices.

Arrow batches of one column per feature used to be copied, column by column, into a
Fortran-ordered matrix before a column-major kernel read it (scoring_core.arrow_input):
three passes over memory for one, and the first touch of a fresh matrix as large as the
input. Here each feature's own buffer is read in place: ``FloatColumns`` is a table of
the columns' addresses (float32 or float64, without nulls), from an Arrow batch
(``arrow_input.float_columns``), a list of arrays, or an F-ordered matrix, whose columns
are one table like any other (``linear.score`` sends those here). One kernel for both
means one set of passes, prefetches and blocks to tune.

The sums are the ones scoring_core.linear defines, so every layout (row-major, an
F-ordered matrix, named columns) gives bit-identical scores: lane ``k`` of a row adds
``coef[c, j] * float64(x[j])`` for ``j = k, k + 8, ...`` in that order, and the score is
``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + intercept[c]``. A block of rows keeps
each lane's sums as a vector of its rows; a pass advances one lane by up to four of its
columns, down contiguous column segments, and prefetches down its own columns
``COLUMN_AHEAD_ROWS`` ahead and, over its last rows, into the next pass's. Each inner
loop runs down one column's segment, element by element: LLVM IR (``add_weighted_rows``)
of plain vector loads, fpext, fmul and fadd, which reorders no sum (each row's lane is
its own accumulator).

A binary logistic model's link is done a block late, inside the next block's passes:
each step of 16 rows of a four-column pass also links one row of the previous block's
scores (libm's ``exp``, an add and a division, as ``links.sigmoid``), until the block is
linked; a thread runs a contiguous run of blocks for that, and links its last block
after it. Linked after its own passes, as the other links still are, a block's
~2.5 ns a row ran with memory idle: 0.70-0.71 of the read limit on one thread at
1M x 200 (the identity link 0.78), against 0.79-0.80 linked this way. Spreading the
rows evenly over every four-column pass (0.77) or two rows a step (0.79 against 0.81)
did worse than one row a step from the first pass on; so did folding the lanes into the
score within the last passes instead of one loop over the block (no gain, twice the
compile time), five to eight columns a pass (0.63-0.69) and two or three (0.64-0.66).

The kernel reads the columns through that address table rather than a numba typed List
of arrays: taking an array out of a typed List (a call and two reference counts) cost 4%
of a 1M x 200 score, 24 of them a pass, and building the List 0.2 ms more. An address is
read only while the ``FloatColumns`` holding its owner is alive (``score_columns`` takes
that object, not bare addresses). Named batches below ``MIN_ROWS`` take the matrix path,
where a block's fixed costs would weigh more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from scoring_core import threads
from scoring_core.linear import (
    _LINE,
    _LINK_CODE,
    BLOCK,
    LANES,
    LOGISTIC,
    _counted_loop,
    _data_pointer,
    _finish,
    _is_float_array,
    _prefetch,
    _splat,
    add_weighted_rows,
)

# Columns a pass: four column loads per lane-sum store.
COLUMNS_TOGETHER = 4
# Column-major blocks: as many rows as keep a block's lane sums (n_outputs, LANES, rows)
# float64 within LANE_BYTES (in L2), at least BLOCK: long column segments read better
# than short ones (with the prefetch below, 8-16% better than 2048 at 1M x 200).
LANE_BYTES = 1 << 20
# Rows ahead, down its own columns, that a column pass prefetches; over its last
# COLUMN_AHEAD_ROWS rows it prefetches the start of the next pass's columns instead.
# 512 against 1024 at 1M x 200, one thread: 0.70-0.71 of the read limit against
# 0.66-0.68 (256: 0.63, 2048: 0.67; an extra prefetch into L2 4-16 KiB ahead: 0.59-0.64).
COLUMN_AHEAD_ROWS = 512

MIN_ROWS = 16_384


@njit(nogil=True, cache=True, fastmath=False)
def _passes(f):
    """The column-major kernel's passes over a block, in order: lane by lane, up to four
    of the lane's columns at a time; ``(first column, columns)`` of each."""
    count = 0
    for lane in range(min(LANES, f)):
        count += (f - lane + COLUMNS_TOGETHER * LANES - 1) // (COLUMNS_TOGETHER * LANES)
    table = np.empty((count, 2), np.int64)
    p = 0
    for lane in range(min(LANES, f)):
        for j in range(lane, f, COLUMNS_TOGETHER * LANES):
            table[p, 0] = j
            table[p, 1] = min(COLUMNS_TOGETHER, (f - j + LANES - 1) // LANES)
            p += 1
    return table


def column_block_rows(k: int, n: int, parts: int) -> int:
    """Rows a column-major block has for ``k`` outputs (``LANE_BYTES``), a multiple of 16,
    but no more than give each of ``parts`` threads a block of the ``n`` rows."""
    share = ((n + parts - 1) // parts + 15) // 16 * 16
    return max(BLOCK, min(share, (LANE_BYTES // (8 * LANES * k)) // 16 * 16))


@njit(nogil=True, cache=True, inline="always")
def zero_lanes(acc, n):
    """The first ``n`` rows of every lane sum of ``acc`` (k, LANES, rows) set to 0.0: where a
    block's sums start when some lane has no column (fewer than LANES features), and so no
    first pass to start it."""
    for c in range(acc.shape[0]):
        for lane in range(LANES):
            a = acc[c, lane]
            for r in range(n):
                a[r] = 0.0


@dataclass(frozen=True)
class FloatColumns:
    """Equal-length float columns, all float32 or all float64, none with nulls, given by
    the addresses of their values (``addresses``, int64, in the model's feature order);
    ``owner`` holds the memory they point into for as long as this object lives."""

    addresses: np.ndarray
    dtype: np.dtype
    rows: int
    owner: object

    @classmethod
    def of_arrays(cls, arrays: list[np.ndarray]) -> FloatColumns:
        """The columns of C-contiguous 1-D numpy arrays (all of one float dtype and length)."""
        if not arrays or any(a.ndim != 1 or not a.flags.c_contiguous or a.dtype != arrays[0].dtype
                             or len(a) != len(arrays[0]) for a in arrays):
            raise ValueError("FloatColumns.of_arrays takes contiguous 1-D arrays of one dtype and length")
        addresses = np.array([a.ctypes.data for a in arrays], dtype=np.int64)
        return cls(addresses, arrays[0].dtype, len(arrays[0]), tuple(arrays))

    @classmethod
    def of_matrix(cls, X: np.ndarray) -> FloatColumns:
        """The columns of an F-ordered float32/float64 matrix: each one ``X.shape[0]``
        values after the last."""
        if X.ndim != 2 or not X.flags.f_contiguous or X.dtype not in (np.float32, np.float64):
            raise ValueError("FloatColumns.of_matrix takes an F-ordered float32 or float64 matrix")
        step = X.shape[0] * X.itemsize
        addresses = X.ctypes.data + step * np.arange(X.shape[1], dtype=np.int64)
        return cls(addresses, X.dtype, X.shape[0], X)


def _column_pointer(context: Any, builder: ir.IRBuilder, table_type: Any, table: Any, element: Any,
                    column: ir.Value, row: ir.Value) -> ir.Value:
    """Pointer to row ``row`` of column ``column`` of the address table ``table``."""
    address = builder.load(_data_pointer(context, builder, table_type, table, column))
    values = builder.inttoptr(address, context.get_data_type(element).as_pointer())
    return builder.gep(values, [row])


def _typed_value(typingctx: Any, table: Any, kind: Any, column: Any, row: Any) -> Any:
    """``_value(table, kind, column, row)``: ``float64`` of row ``row`` of column ``column``
    (values of ``kind``'s dtype)."""
    if not (_is_float_array(kind, "C") and isinstance(table, types.Array) and table.dtype == types.int64
            and isinstance(column, types.Integer) and isinstance(row, types.Integer)):
        return None

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        t = signature.args
        pointer = _column_pointer(context, builder, t[0], args[0], t[1].dtype,
                                  context.cast(builder, args[2], t[2], types.int64),
                                  context.cast(builder, args[3], t[3], types.int64))
        value = builder.load(pointer)
        return value if t[1].dtype == types.float64 else builder.fpext(value, ir.DoubleType())

    return types.float64(table, kind, column, row), codegen


_value: Any = intrinsic(_typed_value)


def _segments_pass_intrinsic(columns: int, fresh: bool = False) -> Any:
    """``f(acc, table, kind, i0, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead,
    before, out, lo, count, b0)``: for ``r < 16 * (n // 16)``,
    ``acc[r] = ((acc[r] + w0 * x[i0][r0 + r]) + w1 * x[i1][r0 + r]) + ...`` over the first
    ``columns`` of columns ``i0 .. i3`` of the address table (values of ``kind``'s dtype),
    reading each column from its own buffer, while it prefetches columns ``k0 .. k3`` from
    row ``ahead`` on, a line each per 16 rows. Plain vector loads, fpext, fmul and fadd with
    no fast-math flags, so each row's sum is the scalar code's.

    A pass of four columns also links, one a step, ``count`` rows of the previous block's
    scores ``before`` from row ``lo``: ``out[b0 + r] = (1 - p, p)``, ``p`` the logistic
    function computed as ``links.sigmoid`` does (libm's ``exp``, then an add and a
    division), so that the link's arithmetic runs while the pass waits for memory.

    A ``fresh`` pass (a lane's first) starts its sums at 0.0 instead of reading them: the
    same additions, one read of the lane sums fewer, and no zeroing pass over the block
    (0.82 against 0.81 of the read limit on one thread at 1M x 200, in the same runs)."""

    @intrinsic
    def segments_pass(typingctx: Any, acc: Any, table: Any, kind: Any, i0: Any, i1: Any, i2: Any, i3: Any,
                      r0: Any, n: Any, w0: Any, w1: Any, w2: Any, w3: Any, k0: Any, k1: Any, k2: Any, k3: Any,
                      ahead: Any, before: Any, out: Any, lo: Any, count: Any, b0: Any) -> Any:
        indices = (i0, i1, i2, i3, r0, n, k0, k1, k2, k3, ahead, lo, count, b0)
        if not (_is_float_array(acc, "C") and acc.dtype == types.float64 and acc.ndim == 1
                and _is_float_array(before, "C") and before.dtype == types.float64 and before.ndim == 1
                and _is_float_array(out, "C") and out.dtype == types.float64 and out.ndim == 2
                and _is_float_array(kind, "C") and isinstance(table, types.Array) and table.dtype == types.int64
                and all(isinstance(t, types.Integer) for t in indices)
                and all(isinstance(t, types.Float) for t in (w0, w1, w2, w3))):
            return None
        sig = types.void(acc, table, kind, i0, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead,
                         before, out, lo, count, b0)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            t = signature.args
            element = t[2].dtype
            i64 = ir.IntType(64)
            double = ir.DoubleType()

            def int64(k: int) -> ir.Value:
                return context.cast(builder, args[k], t[k], types.int64)

            start, count, soon = int64(7), int64(8), int64(17)
            cols = [_column_pointer(context, builder, t[1], args[1], element, int64(3 + q), start)
                    for q in range(columns)]
            weights = [_splat(builder, context.cast(builder, args[9 + q], t[9 + q], types.float64))
                       for q in range(columns)]
            sums = _data_pointer(context, builder, t[0], args[0], ir.Constant(i64, 0))
            later = [_column_pointer(context, builder, t[1], args[1], element, int64(13 + q), soon)
                     for q in range(4)]
            linking = columns == COLUMNS_TOGETHER
            if linking:
                scores = _data_pointer(context, builder, t[18], args[18], int64(20))
                pairs = _data_pointer(context, builder, t[19], args[19], builder.mul(
                    builder.add(int64(22), int64(20)), ir.Constant(i64, 2)))
                links = int64(21)
                exp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(double, [double]), "llvm.exp.f64")
                one = ir.Constant(double, 1.0)
            step = 2 * LANES
            per_line = _LINE // (element.bitwidth // 8)

            def rows16(i: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                base = builder.mul(i, ir.Constant(i64, step))
                for y in later:
                    for line in range(0, step, per_line):
                        _prefetch(builder, builder.gep(y, [builder.add(base, ir.Constant(i64, line))]))
                for half in range(2):
                    add_weighted_rows(builder, context, sums, cols, weights, builder.add(base, ir.Constant(i64, half * LANES)),
                                      element, fresh)
                if linking:
                    with builder.if_then(builder.icmp_signed("<", i, links), likely=True):
                        x = builder.load(builder.gep(scores, [i]))
                        p = builder.fdiv(one, builder.fadd(one, builder.call(exp, [builder.fneg(x)])))
                        pair = builder.gep(pairs, [builder.mul(i, ir.Constant(i64, 2))])
                        builder.store(builder.fsub(one, p), pair)
                        builder.store(p, builder.gep(pair, [ir.Constant(i64, 1)]))
                return carried

            _counted_loop(builder, builder.sdiv(count, ir.Constant(i64, step)), [], rows16)
            return context.get_dummy_value()

        return sig, codegen

    return segments_pass


_PASS_1 = _segments_pass_intrinsic(1)
_PASS_2 = _segments_pass_intrinsic(2)
_PASS_3 = _segments_pass_intrinsic(3)
_PASS_4 = _segments_pass_intrinsic(4)
_FRESH_1, _FRESH_2, _FRESH_3, _FRESH_4 = (_segments_pass_intrinsic(m, fresh=True) for m in range(1, 5))  # a lane's first


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _pass(a, table, kind, j, m, coef, c, r0, n, k0, k1, k2, k3, ahead, before, out, lo, count, b0):
    """``a[r] += coef[c, j + 8q] * x[j + 8q][r0 + r]`` for ``q < m`` in order, every ``r < n``
    (``a[r]`` taken as 0.0 in a lane's first pass, ``j < LANES``),
    prefetching columns ``k0 .. k3`` from row ``ahead``; a pass of four columns links
    ``count`` rows of ``before`` from ``lo`` (at most one per 16 of its rows)."""
    i1 = j + LANES if m > 1 else j
    i2 = j + 2 * LANES if m > 2 else j
    i3 = j + 3 * LANES if m > 3 else j
    w0 = coef[c, j]
    w1 = coef[c, i1] if m > 1 else 0.0
    w2 = coef[c, i2] if m > 2 else 0.0
    w3 = coef[c, i3] if m > 3 else 0.0
    if j < LANES and m == 4:
        _FRESH_4(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, count, b0)
    elif j < LANES and m == 3:
        _FRESH_3(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    elif j < LANES and m == 2:
        _FRESH_2(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    elif j < LANES:
        _FRESH_1(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    elif m == 4:
        _PASS_4(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, count, b0)
    elif m == 3:
        _PASS_3(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    elif m == 2:
        _PASS_2(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    else:
        _PASS_1(a, table, kind, j, i1, i2, i3, r0, n, w0, w1, w2, w3, k0, k1, k2, k3, ahead, before, out, lo, 0, b0)
    for r in range(n - n % (2 * LANES), n):  # the rows after the last 16
        s = 0.0 if j < LANES else a[r]
        for q in range(m):
            s = s + coef[c, j + q * LANES] * _value(table, kind, j + q * LANES, r0 + r)
        a[r] = s


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _column(q, j, m):
    """The pass's column ``q`` (of ``m`` from ``j``; the last one again past ``m``)."""
    return j + min(q, m - 1) * LANES


@njit(nogil=True, cache=True, fastmath=False)
def _block(table, kind, coef, intercept, link, out, r0, r1, scores, acc, passes, before, b0, nb):
    """Rows ``r0 .. r1`` into their scores ``scores`` (k, rows); ``acc`` (k, LANES, rows)
    scratch, ``passes`` from ``_passes``. A pass prefetches down its own columns
    ``COLUMN_AHEAD_ROWS`` ahead, and over its last rows the first rows of the next pass (of
    the next block after the last), so that the reads run on from one segment into the
    next. For a binary logistic model the four-column passes also link the previous
    block's scores ``before`` (rows ``b0 .. b0 + nb`` of ``out``), as many as they have
    16-row steps: returns how many they linked (the caller links the rest)."""
    n = r1 - r0
    k = coef.shape[0]
    n_passes = passes.shape[0]
    if table.shape[0] < LANES:  # lanes with no columns stay 0.0; the others' first pass starts there
        zero_lanes(acc, n)
    split = n - COLUMN_AHEAD_ROWS if n > COLUMN_AHEAD_ROWS else 0
    linked = 0
    wanted = nb if link == LOGISTIC else 0
    for p in range(n_passes):
        j = passes[p, 0]
        m = passes[p, 1]
        after = (p + 1) // n_passes  # 1 for the last pass: the next block's first
        row = min(r0 + after * scores.shape[1], max(0, out.shape[0] - COLUMN_AHEAD_ROWS))
        nj, nm = passes[(p + 1) % n_passes, 0], passes[(p + 1) % n_passes, 1]
        lane = j % LANES
        for c in range(k):
            if split:
                share = min(wanted - linked, split // (2 * LANES)) if m == COLUMNS_TOGETHER else 0
                _pass(acc[c, lane], table, kind, j, m, coef, c, r0, split, _column(0, j, m), _column(1, j, m),
                      _column(2, j, m), _column(3, j, m), r0 + COLUMN_AHEAD_ROWS, before, out, linked, share, b0)
                linked += share
            share = min(wanted - linked, (n - split) // (2 * LANES)) if m == COLUMNS_TOGETHER else 0
            _pass(acc[c, lane][split:], table, kind, j, m, coef, c, r0 + split, n - split, _column(0, nj, nm),
                  _column(1, nj, nm), _column(2, nj, nm), _column(3, nj, nm), row, before, out, linked, share, b0)
            linked += share
    _scores(acc, intercept, scores, n)
    return linked


@njit(nogil=True, cache=True, fastmath=False)
def _scores(acc, intercept, scores, n):
    """Rows ``0 .. n`` of ``scores`` from their lane sums: the module's lane order, the intercept."""
    for c in range(acc.shape[0]):
        a0, a1, a2, a3 = acc[c, 0], acc[c, 1], acc[c, 2], acc[c, 3]
        a4, a5, a6, a7 = acc[c, 4], acc[c, 5], acc[c, 6], acc[c, 7]
        b = intercept[c]
        s = scores[c]
        for r in range(n):
            s[r] = (((a0[r] + a4[r]) + (a2[r] + a6[r])) + ((a1[r] + a5[r]) + (a3[r] + a7[r]))) + b


@njit(nogil=True, cache=True, fastmath=False)
def _run(table, kind, coef, intercept, link, out, rows, first, end):
    """Blocks ``first .. end`` in turn, each block's link done as the next one's passes run."""
    n = out.shape[0]
    k = coef.shape[0]
    scores = np.empty((2, k, rows))
    acc = np.empty((k, LANES, rows))
    passes = _passes(table.shape[0])
    b0, nb = 0, 0
    for b in range(first, end):
        r0 = b * rows
        r1 = min(n, r0 + rows)
        before = scores[(b + 1) % 2]
        linked = _block(table, kind, coef, intercept, link, out, r0, r1, scores[b % 2], acc, passes, before[0], b0, nb)
        _finish(before, linked, nb, link, out, b0)
        b0, nb = r0, r1 - r0
    _finish(scores[(end + 1) % 2], 0, nb, link, out, b0)


@njit(nogil=True, cache=True, fastmath=False)
def _serial(table, kind, coef, intercept, link, out, rows, parts):
    """Every block in turn (``parts``, the parallel kernel's, is not used)."""
    _run(table, kind, coef, intercept, link, out, rows, 0, (out.shape[0] + rows - 1) // rows)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _parallel(table, kind, coef, intercept, link, out, rows, parts):
    """``parts`` contiguous runs of blocks, one a thread, so that each block's link still
    overlaps the next one's passes."""
    blocks = (out.shape[0] + rows - 1) // rows
    for t in prange(parts):
        _run(table, kind, coef, intercept, link, out, rows, t * blocks // parts, (t + 1) * blocks // parts)


def score_columns(columns: FloatColumns, coef: np.ndarray, intercept: np.ndarray, link: str) -> np.ndarray:
    """``linear.score`` of the matrix whose columns are ``columns`` (in the model's feature
    order), without building it."""
    code = _LINK_CODE[link]
    n = columns.rows
    if len(columns.addresses) != coef.shape[1]:
        raise ValueError(f"score_columns: {len(columns.addresses)} columns for {coef.shape[1]} coefficients")
    out = np.empty((n, 2 if code == LOGISTIC else coef.shape[0]), dtype=np.float64)
    if n:
        wanted = threads.num_threads()
        rows = column_block_rows(coef.shape[0], n, wanted)
        kind = np.empty(0, dtype=columns.dtype)
        parts = min(wanted, (n + rows - 1) // rows)
        threads.run_kernel(_serial, _parallel, n, columns.addresses, kind, coef, intercept, code, out, rows, parts)
    return out
