"""Linear models: the IR (coefficients, intercepts, a link) and its numba kernels.

Scores are accumulated in float64 whatever the input precision, so that a float32
batch reproduces scikit-learn to well under 1e-5. A linear model reads every input
value once and does two flops with it: it is bound by memory bandwidth, and the
kernels are written to stream the input at close to the machine's read limit.

One summation order, two kernels. Arrow batches arrive column-major and network
tensors row-major, and transposing a whole batch costs far more than scoring it
(PERF_NOTES technique 7), so each layout has its own kernel: the row-major one here,
the column-major one in scoring_core.linear_columns. Both compute, for every row and
output ``c``, exactly this (fastmath off, no fused multiply-add):

- ``LANES`` = 8 partial sums; lane ``k`` starts at 0.0 and adds
  ``coef[c, j] * float64(x[j])`` for ``j = k, k + 8, k + 16, ...`` in that order;
- the score is ``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + intercept[c]``.

So the two give bit-identical results, whatever the row count, block boundaries or
thread count, and the order is one that SIMD hardware runs without reassociation:

- row-major (``_ROW_SCORES``): one 8-wide vector of lane sums per row, advanced 8
  features at a time, four rows together; the last ``f % 8`` features come in by a
  masked load (the lanes it misses get ``+ 0.0``, which changes no sum that started at
  0.0), then the lanes are combined in the vector. The first output's loop also
  prefetches the rows 16 KiB ahead, as many values a step as it reads, and the link
  is applied four rows at a time, so memory stays busy while the vectors work;
- column-major (scoring_core.linear_columns): for a block of rows, each lane is a vector
  of its rows' sums, advanced by up to four of its columns per pass down contiguous
  column segments; a pass prefetches down its own columns ``COLUMN_AHEAD_ROWS`` ahead,
  and over its last rows the start of the next pass's columns.

numba's own loop vectoriser gives neither shape (it vectorises no fixed-order
reduction, and loses the column loop when it is cut into prefetch chunks), so the two
inner loops are LLVM IR written here as numba intrinsics: plain vector loads,
``fpext``, ``fmul`` and ``fadd`` with no fast-math flags, whose rounding is the
scalar code's. Vectors of 8 doubles are split by LLVM where the CPU has narrower
registers; the results do not change.

Where the time goes (AMD EPYC, LLVM's znver5, 1M x 200 float32, logistic; interleaved
rounds on a shared 2-core machine, fractions of the read limit of the same round).
From L1 the dot product alone runs ~125M rows/s a core, from L2 ~105M; a whole
kernel from cache ~60M, the rest being per row: the link (an ``exp`` and a division,
~5 ns a row in four-row groups), the lane totals and stores. One core streams ~45-50M
rows/s from memory, so a kernel reaches the read limit only as far as its arithmetic
overlaps the reads:

- row-major: a separate loop of prefetches per four-row group cost ~2.5 ns a row from
  cache; folded into the dot-product loop, the kernel went from 0.68-0.82 to
  0.86-0.87 of the limit on one thread and from 0.77-0.83 to 0.88-0.92 on two. Linking a whole
  block at the end is faster from cache (60M against 45M rows/s) but slower from
  memory (it leaves memory idle): rejected. Prefetching into L2 only, or 4 KiB or
  64 KiB ahead, did worse.
- column-major (scoring_core.linear_columns, which has its own figures since): as fast
  as row-major from cache, L3 included (~55M rows/s), but
  ~0.6-0.7 of the limit on one thread from memory (~0.65-0.85 on two). Reading
  column segments is itself slower than one stream: a plain sum over them, no
  arithmetic, reaches ~0.79 of the flat read in 2048-row segments and ~0.86 in
  16384-row ones (one thread; four columns interleaved or one at a time alike), so
  blocks are ``LANE_BYTES`` of lane sums (16384 rows for one output) with the
  prefetch above: +8-16% over 2048-row blocks prefetching four passes ahead, in
  the same runs. Tried and not better: one, two or eight columns a pass (fewer cost
  more lane-sum traffic than they save), prefetching the next pass's segments one
  after another, a kernel holding 16 rows x 8 lanes in registers over every column
  at once (bit-identical, as fast from cache, but 200 streams: 0.3 of the limit
  without prefetch, 0.6-0.7 with), prefetching whole column runs a tile ahead,
  finishing each block in chunks between the next one's passes (linking it inside those
  passes, one row a step, did pay: scoring_core.linear_columns), blocks of 4096 to 32768 rows.
  A float32 block transpose into the row kernel costs about as many shuffles as the
  dot product costs arithmetic.
- numerics kept: fused multiply-adds gained 0-4% (noise here) and would change every
  kernel's bits; float32 products added in pairs before widening (half the
  conversions, ~40% faster from L1) miss scikit-learn's float64 predictions by up to
  2.6e-4 on a LinearRegression whose outputs are ~1e3, with columns scaled 1e-3..1e3
  or not, and a LogisticRegression's decision values by up to 7e-6 (probabilities
  1.3e-6), where these kernels stay within 3e-12 (7e-14): beyond the 1e-5 contract,
  not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from milepost.core.errors import InvalidArgument
from scoring_core import threads
from scoring_core.kinds import register_kind
from scoring_core.links import normalised_sigmoids, sigmoid, softmax

LINKS = ("identity", "logistic", "softmax", "ovr_logistic")
_LINK_CODE = {name: code for code, name in enumerate(LINKS)}
IDENTITY, LOGISTIC, SOFTMAX, OVR_LOGISTIC = range(4)

# Partial sums per row and output: one vector of float64 (see the module docstring).
LANES = 8
# Rows scored together in the row-major kernel: four independent vector chains.
ROWS_TOGETHER = 4
# Rows per block of the row-major kernel: the (n_outputs, BLOCK) scores and the launch grain.
BLOCK = 2048
# Bytes ahead of the row being scored that the row-major kernel prefetches: 16 KiB
# and 32 KiB did better than 4 KiB and 64 KiB here at 1M x 200.
ROW_PREFETCH_BYTES = 16384
_LINE = 64


# ---------------------------------------------------------------------------------------
# LLVM IR pieces


def _data_pointer(context: Any, builder: ir.IRBuilder, array_type: types.Array, value: Any,
                  index: ir.Value) -> ir.Value:
    """Address of ``array.flat[index]`` in memory order (the array is C or F contiguous)."""
    array = context.make_array(array_type)(context, builder, value)
    return builder.gep(array.data, [index])


def _prefetch(builder: ir.IRBuilder, pointer: ir.Value) -> None:
    """A read prefetch into every cache level; it never faults, wherever it points."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(pointer, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                      ir.Constant(i32, 1)])


def _load_as_doubles(builder: ir.IRBuilder, pointer: ir.Value, element: types.Float,
                     context: Any) -> ir.Value:
    """``LANES`` consecutive values at ``pointer`` as a vector of float64."""
    vector = ir.VectorType(context.get_data_type(element), LANES)
    value = builder.load(builder.bitcast(pointer, vector.as_pointer()), align=element.bitwidth // 8)
    if element != types.float64:
        value = builder.fpext(value, ir.VectorType(ir.DoubleType(), LANES))
    return value


def _counted_loop(builder: ir.IRBuilder, count: ir.Value, carried: list[ir.Value],
                  body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]]) -> list[ir.Value]:
    """``for i in range(count): carried = body(i, carried)``; returns the final values."""
    i64 = ir.IntType(64)
    entry = builder.basic_block
    head = builder.append_basic_block("loop.head")
    step = builder.append_basic_block("loop.body")
    done = builder.append_basic_block("loop.done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    phis = []
    for value in carried:
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, count), step, done)
    builder.position_at_end(step)
    updated = body(i, phis)
    end = builder.basic_block
    i.add_incoming(builder.add(i, ir.Constant(i64, 1)), end)
    for phi, value in zip(phis, updated):
        phi.add_incoming(value, end)
    builder.branch(head)
    builder.position_at_end(done)
    return phis


def _is_float_array(t: Any, layout: str) -> bool:
    return isinstance(t, types.Array) and t.layout == layout and t.dtype in (types.float32, types.float64)


def _masked_load_as_doubles(builder: ir.IRBuilder, pointer: ir.Value, element: types.Float,
                            mask: ir.Value, context: Any) -> ir.Value:
    """Like ``_load_as_doubles`` for the lanes where ``mask`` is set, 0.0 in the others
    (which are not read)."""
    typ = context.get_data_type(element)
    vector = ir.VectorType(typ, LANES)
    name = f"llvm.masked.load.v{LANES}{'f32' if element == types.float32 else 'f64'}.p0"
    fnty = ir.FunctionType(vector, [vector.as_pointer(), ir.IntType(32), mask.type, vector])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    zero = ir.Constant(vector, [0.0] * LANES)
    value = builder.call(fn, [builder.bitcast(pointer, vector.as_pointer()),
                              ir.Constant(ir.IntType(32), element.bitwidth // 8), mask, zero])
    if element != types.float64:
        value = builder.fpext(value, ir.VectorType(ir.DoubleType(), LANES))
    return value


def _lane_total(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`` of the 8 lanes of ``v``."""
    i32 = ir.IntType(32)

    def pick(vec: ir.Value, lanes: list[int]) -> ir.Value:
        return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(i32, len(lanes)), lanes))

    half = builder.fadd(pick(v, [0, 1, 2, 3]), pick(v, [4, 5, 6, 7]))  # l0+l4, l1+l5, l2+l6, l3+l7
    quarter = builder.fadd(pick(half, [0, 1]), pick(half, [2, 3]))
    return builder.fadd(builder.extract_element(quarter, ir.Constant(i32, 0)),
                        builder.extract_element(quarter, ir.Constant(i32, 1)))


def _row_scores_intrinsic(rows: int, prefetch: bool = False) -> Any:
    """``f(X, r, coef, c, b, dst, d, ahead)``: for the C-ordered ``X`` and ``q < rows``,
    ``dst[d + q]`` = the score of row ``r + q`` for output ``c`` (intercept ``b``), in the
    module's one order. The ``f % 8`` last features go in by a masked load: the lanes
    they miss get ``+ 0.0 * 0.0``, which leaves a sum that started at 0.0 unchanged.

    With ``prefetch``, each step of 8 features also prefetches the next ``rows * 8``
    values from ``X.flat[ahead]`` on, so the loop prefetches as many values as it reads
    (``ahead`` is ignored otherwise)."""

    @intrinsic
    def row_scores(typingctx: Any, X: Any, r: Any, coef: Any, c: Any, b: Any, dst: Any, d: Any,
                   ahead: Any) -> Any:
        if not (_is_float_array(X, "C") and X.ndim == 2 and _is_float_array(coef, "C")
                and coef.dtype == types.float64 and _is_float_array(dst, "C")
                and dst.dtype == types.float64 and isinstance(b, types.Float)
                and all(isinstance(t, types.Integer) for t in (r, c, d, ahead))):
            return None
        sig = types.void(X, r, coef, c, b, dst, d, ahead)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            x_type, r_type, coef_type, c_type, b_type, dst_type, d_type, ahead_type = signature.args
            i64 = ir.IntType(64)
            soon = _data_pointer(context, builder, x_type, args[0],
                                 context.cast(builder, args[7], ahead_type, types.int64))
            per_line = _LINE // (x_type.dtype.bitwidth // 8)
            width = builder.extract_value(context.make_array(x_type)(context, builder, args[0]).shape, 1)
            row = context.cast(builder, args[1], r_type, types.int64)
            out = context.cast(builder, args[3], c_type, types.int64)
            rows_x = [_data_pointer(context, builder, x_type, args[0],
                                    builder.mul(builder.add(row, ir.Constant(i64, q)), width))
                      for q in range(rows)]
            weights = _data_pointer(context, builder, coef_type, args[2], builder.mul(out, width))
            zero = ir.Constant(ir.VectorType(ir.DoubleType(), LANES), [0.0] * LANES)

            def chunk(i: ir.Value, sums: list[ir.Value]) -> list[ir.Value]:
                j = builder.mul(i, ir.Constant(i64, LANES))
                if prefetch:
                    at = builder.gep(soon, [builder.mul(i, ir.Constant(i64, LANES * rows))])
                    for line in range(0, LANES * rows, per_line):
                        _prefetch(builder, builder.gep(at, [ir.Constant(i64, line)]))
                w = _load_as_doubles(builder, builder.gep(weights, [j]), types.float64, context)
                return [builder.fadd(s, builder.fmul(w, _load_as_doubles(
                    builder, builder.gep(x, [j]), x_type.dtype, context))) for s, x in zip(sums, rows_x)]

            chunks = builder.sdiv(width, ir.Constant(i64, LANES))
            sums = _counted_loop(builder, chunks, [zero] * rows, chunk)
            # The last f % 8 features, into lanes 0 .. f % 8 - 1.
            j = builder.mul(chunks, ir.Constant(i64, LANES))
            rest = builder.sub(width, j)
            index = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
            splat_rest = builder.shuffle_vector(
                builder.insert_element(ir.Constant(ir.VectorType(i64, LANES), ir.Undefined), rest,
                                       ir.Constant(ir.IntType(32), 0)),
                ir.Constant(ir.VectorType(i64, LANES), ir.Undefined),
                ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
            mask = builder.icmp_signed("<", index, splat_rest)
            w = _masked_load_as_doubles(builder, builder.gep(weights, [j]), types.float64, mask, context)
            b = context.cast(builder, args[4], b_type, types.float64)
            target = _data_pointer(context, builder, dst_type, args[5],
                                   context.cast(builder, args[6], d_type, types.int64))
            for q, (s, x) in enumerate(zip(sums, rows_x)):
                tail = _masked_load_as_doubles(builder, builder.gep(x, [j]), x_type.dtype, mask, context)
                total = _lane_total(builder, builder.fadd(s, builder.fmul(w, tail)))
                builder.store(builder.fadd(total, b), builder.gep(target, [ir.Constant(i64, q)]))
            return context.get_dummy_value()

        return sig, codegen

    return row_scores


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """A vector of ``LANES`` copies of the float64 ``value``."""
    vector = ir.Constant(ir.VectorType(ir.DoubleType(), LANES), ir.Undefined)
    for lane in range(LANES):
        vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
    return vector


def add_weighted_rows(builder: ir.IRBuilder, context: Any, sums: ir.Value, cols: list[ir.Value],
                      weights: list[ir.Value], r: ir.Value, element: types.Float, fresh: bool = False) -> None:
    """``sums[r + i] = ((sums[r + i] + w0 * cols[0][r + i]) + w1 * cols[1][r + i]) + ...`` for
    ``i < LANES``: one vector of rows, the columns added in their order (the column passes).
    ``fresh``: the sums start at 0.0 instead of being read (a lane's first pass)."""
    target = builder.bitcast(builder.gep(sums, [r]), ir.VectorType(ir.DoubleType(), LANES).as_pointer())
    s = ir.Constant(ir.VectorType(ir.DoubleType(), LANES), [0.0] * LANES) if fresh else builder.load(target, align=8)
    for col, w in zip(cols, weights):
        s = builder.fadd(s, builder.fmul(w, _load_as_doubles(builder, builder.gep(col, [r]), element, context)))
    builder.store(s, target, align=8)


_ROW_SCORES = _row_scores_intrinsic(ROWS_TOGETHER)
_ROW_SCORES_AHEAD = _row_scores_intrinsic(ROWS_TOGETHER, prefetch=True)
_ROW_SCORES_1 = _row_scores_intrinsic(1)


# ---------------------------------------------------------------------------------------
# Kernels


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _finish(scores, i0, i1, link, out, r0):
    """Write rows ``r0 + i0 .. r0 + i1`` of ``out`` from their raw scores
    ``scores[:, i0:i1]`` through the link."""
    k = scores.shape[0]
    if link == IDENTITY:
        for i in range(i0, i1):
            for c in range(k):
                out[r0 + i, c] = scores[c, i]
    elif link == LOGISTIC:
        # Binary: [1 - p, p], as scikit-learn's predict_proba.
        s = scores[0]
        for i in range(i0, i1):
            p = sigmoid(s[i])
            out[r0 + i, 0] = 1.0 - p
            out[r0 + i, 1] = p
    elif link == SOFTMAX:
        for i in range(i0, i1):
            softmax(scores[:, i], out[r0 + i], 0.0)
    else:
        # One-vs-rest sigmoids normalised to sum to one (SGDClassifier, log loss).
        for i in range(i0, i1):
            normalised_sigmoids(scores[:, i], out[r0 + i])


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _rows_linked(X, coef, intercept, link, out, r0, r1, scores):
    """``_block_by_rows`` for one link: inlined with ``link`` a constant, so that the
    link's branch leaves the row loop."""
    n_rows, f = X.shape
    k = coef.shape[0]
    row_bytes = f * X.itemsize
    ahead = (ROW_PREFETCH_BYTES + row_bytes - 1) // row_bytes
    last = (n_rows - ROWS_TOGETHER) * f  # the last group's first value: prefetches stay in X
    r = r0
    while r + ROWS_TOGETHER <= r1:
        # The first output's loop prefetches the group ``ahead`` rows on, as many
        # values a step as it reads: a separate loop of prefetches cost more than it hid.
        _ROW_SCORES_AHEAD(X, r, coef, 0, intercept[0], scores[0], r - r0, min(last, (r + ahead) * f))
        for c in range(1, k):
            _ROW_SCORES(X, r, coef, c, intercept[c], scores[c], r - r0, 0)
        # The link right away, while the prefetched rows arrive: done after the
        # block, it left memory idle for its whole duration.
        _finish(scores, r - r0, r - r0 + ROWS_TOGETHER, link, out, r0)
        r += ROWS_TOGETHER
    while r < r1:
        for c in range(k):
            _ROW_SCORES_1(X, r, coef, c, intercept[c], scores[c], r - r0, 0)
        _finish(scores, r - r0, r - r0 + 1, link, out, r0)
        r += 1


@njit(nogil=True, cache=True, fastmath=False)
def _block_by_rows(X, coef, intercept, link, out, r0, r1, scores):
    """Rows ``r0 .. r1`` of a C-ordered ``X``; ``scores`` (k, BLOCK) scratch."""
    if link == IDENTITY:
        _rows_linked(X, coef, intercept, IDENTITY, out, r0, r1, scores)
    elif link == LOGISTIC:
        _rows_linked(X, coef, intercept, LOGISTIC, out, r0, r1, scores)
    elif link == SOFTMAX:
        _rows_linked(X, coef, intercept, SOFTMAX, out, r0, r1, scores)
    else:
        _rows_linked(X, coef, intercept, OVR_LOGISTIC, out, r0, r1, scores)


@njit(nogil=True, cache=True, fastmath=False)
def _score_rows_serial(X, coef, intercept, link, out):
    n = X.shape[0]
    scores = np.empty((coef.shape[0], BLOCK))
    for r0 in range(0, n, BLOCK):
        _block_by_rows(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), scores)


@njit(nogil=True, cache=True, fastmath=False, parallel=True)
def _score_rows_parallel(X, coef, intercept, link, out):
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        scores = np.empty((coef.shape[0], BLOCK))
        r0 = b * BLOCK
        _block_by_rows(X, coef, intercept, link, out, r0, min(n, r0 + BLOCK), scores)


def score(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray, link: str) -> np.ndarray:
    """Scores of a linear model on a float32/float64 (n, f) array in C or F order;
    ``coef`` (k, f) and ``intercept`` (k,) C-contiguous float64, as ``LinearModel``
    keeps them.

    Returns a C-ordered float64 (n, n_outputs) array; the binary logistic link gives
    two columns from one coefficient row. C and F order give bit-identical results.
    """
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.shape[0] and not X.flags.c_contiguous:
        # The column-major kernel builds on this module's IR pieces, so it is imported here.
        from scoring_core import linear_columns

        columns = linear_columns.FloatColumns.of_matrix(X if X.flags.f_contiguous else np.asfortranarray(X))
        return linear_columns.score_columns(columns, coef, intercept, link)
    code = _LINK_CODE[link]
    out = np.empty((X.shape[0], 2 if code == LOGISTIC else coef.shape[0]), dtype=np.float64)
    if X.shape[0]:
        threads.run_kernel(_score_rows_serial, _score_rows_parallel, X.shape[0], X, coef, intercept, code, out)
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
