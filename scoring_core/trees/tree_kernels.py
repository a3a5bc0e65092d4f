"""numba kernels that score a tree ensemble (``layouts`` builds the node layouts they walk).

Every kernel works the same way (PERF_NOTES techniques 3, 5, 6, 7): rows go in blocks of
``BLOCK`` rows; each block is gathered from ``X`` (C- or F-ordered) into a small scratch,
with the per-feature input rules of the source library applied on the way (see
``TRANSFORM_*``); then trees outer, rows inner, leaf values summed into the output rows,
which start at the base margin; last the link function. A ``prange`` over blocks in the
parallel driver, a plain loop in the serial one.

Canonical node semantics (what the converters reduce both libraries to):

- a numerical node sends ``x`` right iff ``x >= threshold`` (float32 against float32),
  and a NaN the way its ``FLAG_NAN_RIGHT`` bit says;
- a categorical node (``FLAG_CATEGORICAL``) looks the integer ``x`` up in a bitset of
  32-bit words; a member goes right if ``FLAG_CAT_IN_SET_RIGHT`` else left, and a
  non-member (negative, or past the bitset) goes the other way; NaN per ``FLAG_NAN_RIGHT``.

Kernel form (``kernel_form``): a numerical node whose NaN goes right is mirrored, so that
every numerical node sends NaN to its *first* child and no descent step tests for NaN.
The mirrored node tests ``-x >= t'`` on a negated copy of its feature, which the gather
appends to the scratch row (``-x >= nextafter(-t, +inf)`` is exactly ``x < t``), and its
children swap places. A step is then ``i = child(i, x[f] >= t)``, whatever the input.

Order keys: where every node is numerical (the complete and compact layouts), the gather
turns each float32 into an int32 *key* (``order_keys``) and the layout holds its
thresholds as keys, so that a step compares integers: ``key(x) >= key(t)`` exactly when
``x >= t`` for non-NaN ``x`` and ``t`` (-0.0 and +0.0 share a key), a NaN ``x`` has the
smallest key of all (first child) and a NaN ``t`` the largest (nothing goes right). An
integer compare is a shorter step than a float one (17% on XGBoost 300 x depth 7 here).

Two layouts:

- *complete*: each tree padded to a complete binary tree of its own depth, nodes in level
  order, descent ``i = 2*i + 1 + (x >= t)`` with no branch (technique 1); numerical only.
- *compact*: per tree, internal nodes in depth-first order, then its leaves as nodes that
  lead to themselves, children in ``children[2*i + step]``. Numerical trees take a fixed
  number of steps (the tree's depth) with no branch; trees with categorical nodes walk.

Neither layout is sliced per tree or per group of rows: a slice costs two atomic reference
counts, and those were 10% of the walk (XGBoost 300 x 7, 1 thread); the kernels index the
whole arrays at the tree's offset. (Global node numbers in the compact children, which
spare its steps that offset, made the complete walk 5% slower, the code sharing one loop;
its own functions for each layout, slower still.)

In both, ``GROUP`` (16) rows descend a tree together so that their independent loads
overlap (technique 2, written out by hand rather than generated per model). The scratch
keeps each group of 16 rows feature-major, value ``(r, f)`` at
``((r // 16) * width + f) * 16 + r % 16``: the 16 rows of a group share one base
address and differ by a constant offset, which leaves registers for 16 node indices (with
one base per row, 8 rows already spilled). Node indices are unsigned so that numba emits
no negative-index fix-up in the inner loop.

A leaf is one value added to its tree's group, or (``leaf_width`` = n_groups > 1) a vector
added to every group: scikit-learn's forests keep a class distribution in each leaf.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from scoring_core.links import hinge, log1p_exp, sigmoid, signed_square, softmax

# Rows per block: 128 beat 64 and 256 here (XGBoost 300 x 7 and 500 x 8).
BLOCK = 128
# Rows that descend a tree together, and that the scratch interleaves.
GROUP = 16

FLAG_NAN_RIGHT = 1
FLAG_CATEGORICAL = 2
FLAG_CAT_IN_SET_RIGHT = 4

# Per-feature input rules, applied while a block is gathered.
TRANSFORM_NONE = 0
# LightGBM numerical, missing type None: NaN scores as 0.0.
TRANSFORM_LGB_NAN_TO_ZERO = 1
# LightGBM numerical, missing type NaN: NaN stays missing.
TRANSFORM_LGB_KEEP_NAN = 2
# LightGBM numerical, missing type Zero: NaN and zero are both missing.
TRANSFORM_LGB_ZERO_IS_MISSING = 3
# LightGBM categorical: truncation toward zero, values past int32 are negative.
TRANSFORM_LGB_CATEGORY = 4
# XGBoost categorical: negative or >= 2**24 is an invalid category.
TRANSFORM_XGB_CATEGORY = 5
# scikit-learn HistGradientBoosting categorical: a value that is not one of the integer
# categories seen in training is unknown (like a negative one): a fraction becomes -1.
TRANSFORM_SKL_CATEGORY = 6
TRANSFORM_MAX = TRANSFORM_SKL_CATEGORY
# LightGBM drops |x| <= kZeroThreshold (1e-35f) from a dense row before it scores it, so
# such values score as exactly 0.0 (c_api.cpp RowFunctionFromDenseMatric); the LightGBM
# rules above all apply that first.
_LGB_ZERO = np.float32(1e-35)

LINK_IDENTITY = 0
LINK_SIGMOID = 1  # 1 / (1 + exp(-scale * x)), element-wise
LINK_SOFTMAX = 2  # over the groups of a row
LINK_EXP = 3
LINK_HINGE = 4  # 1.0 if x > 0 else 0.0
LINK_LOG1P_EXP = 5  # log(1 + exp(x))
LINK_SIGNED_SQUARE = 6  # sign(x) * x * x

LAYOUT_COMPLETE = 0
LAYOUT_COMPACT = 1
LAYOUT_COMPACT_CATEGORICAL = 2

_U = np.uint64
_KEY_NAN_X = np.int32(-(2**31))  # below every key: a NaN input takes the first child
_KEY_NAN_T = np.int32(2**31 - 1)  # above every key: a NaN threshold sends nothing right


def order_keys(values: np.ndarray) -> np.ndarray:
    """int32 keys of float32 thresholds that compare as the floats do (see the module
    docstring); a NaN threshold gets the largest key."""
    v = np.asarray(values, np.float32)
    keys = _keys_of_bits(v.view(np.int32).copy())
    keys[np.isnan(v)] = _KEY_NAN_T
    return keys


@njit(nogil=True, cache=True)
def _keys_of_bits(b):
    """Order keys of float32 bit patterns ``b`` (int32), elementwise, in place; NaN
    patterns get ``_KEY_NAN_X``. Non-negative floats keep their bits; negative ones flip
    their magnitude bits and move up by one, so that -0.0 lands on +0.0's key 0."""
    for k in range(b.shape[0]):
        v = b[k]
        sign = v >> 31  # 0 or -1
        key = (v ^ (sign & np.int32(0x7FFFFFFF))) - sign
        if (v & np.int32(0x7FFFFFFF)) > np.int32(0x7F800000):
            key = _KEY_NAN_X
        b[k] = key
    return b


# ---------------------------------------------------------------------------------------
# Block pieces


@njit(nogil=True, cache=True)
def _slot(r, width):
    """Index in the scratch of row ``r``'s column 0; column ``f`` is ``GROUP * f`` past it."""
    return (r // GROUP) * width * GROUP + r % GROUP


@njit(nogil=True, cache=True)
def _gather(X, r0, nr, transform, any_transform, neg_cols, xs, width, as_keys):
    """Copy rows ``r0 .. r0+nr`` of ``X`` into the scratch ``xs`` (16-row groups,
    feature-major), apply the input rules, append the negated columns, and, with
    ``as_keys``, turn every value into its order key."""
    n_features = X.shape[1]
    if X.strides[0] >= X.strides[1]:
        for r in range(nr):
            base = _slot(r, width)
            for f in range(n_features):
                xs[base + f * GROUP] = X[r0 + r, f]
    else:
        for f in range(n_features):
            for r in range(nr):
                xs[_slot(r, width) + f * GROUP] = X[r0 + r, f]
    if any_transform:
        nan = np.float32(np.nan)
        zero = np.float32(0.0)
        for f in range(n_features):
            code = transform[f]
            if code == TRANSFORM_NONE:
                continue
            for r in range(nr):
                k = _slot(r, width) + f * GROUP
                x = xs[k]
                if code == TRANSFORM_LGB_NAN_TO_ZERO:
                    if x != x or abs(x) <= _LGB_ZERO:
                        xs[k] = zero
                elif code == TRANSFORM_LGB_KEEP_NAN:
                    if abs(x) <= _LGB_ZERO:
                        xs[k] = zero
                elif code == TRANSFORM_LGB_ZERO_IS_MISSING:
                    if x != x or abs(x) <= _LGB_ZERO:
                        xs[k] = nan
                elif code == TRANSFORM_LGB_CATEGORY:
                    # static_cast<int>: NaN and out-of-range give INT_MIN, which goes
                    # right like any negative value; (-1, 0) truncates to category 0.
                    if x <= -1.0 or x >= 2147483648.0:
                        xs[k] = -1.0
                    elif x < 0.0:
                        xs[k] = zero
                elif code == TRANSFORM_XGB_CATEGORY:
                    if x < 0.0 or x >= 16777216.0:
                        xs[k] = -1.0
                elif code == TRANSFORM_SKL_CATEGORY:
                    if x == x and x != np.floor(x):
                        xs[k] = -1.0
    for j in range(neg_cols.shape[0]):
        src = neg_cols[j]
        for r in range(nr):
            base = _slot(r, width)
            xs[base + (n_features + j) * GROUP] = -xs[base + src * GROUP]
    if as_keys:
        # Whole groups: the slots of a last, partial group hold garbage keys nobody reads.
        used = (nr + GROUP - 1) // GROUP * GROUP * width
        _keys_of_bits(xs[:used].view(np.int32))


@njit(nogil=True, cache=True)
def _finish_rows(out, r0, nr, divisor, link, link_scale):
    n_groups = out.shape[1]
    if divisor != 1.0:
        for r in range(r0, r0 + nr):
            for g in range(n_groups):
                out[r, g] = out[r, g] / divisor
    if link == LINK_IDENTITY:
        return
    if link == LINK_SOFTMAX:
        for r in range(r0, r0 + nr):
            softmax(out[r], out[r], 0.0)  # in float64, whatever the accumulator
        return
    for r in range(r0, r0 + nr):
        for g in range(n_groups):
            x = np.float64(out[r, g])
            if link == LINK_SIGMOID:
                y = sigmoid(link_scale * x)
            elif link == LINK_EXP:
                y = np.exp(x)
            elif link == LINK_HINGE:
                y = hinge(x)
            elif link == LINK_LOG1P_EXP:
                y = log1p_exp(x)
            else:  # LINK_SIGNED_SQUARE
                y = signed_square(x)
            out[r, g] = y


@njit(nogil=True, cache=True)
def _add_vector(out, row, leaf, base):
    """Vector leaves (a forest's class distributions): add ``out.shape[1]`` values from
    ``leaf[base:]`` to ``out[row]``."""
    for k in range(out.shape[1]):
        out[row, k] += leaf[base + _U(k)]


@njit(nogil=True, cache=True, inline="always")
def _complete_step(xk, xb, feature, threshold, o, i, k):
    """One level of the complete layout (tree at node offset ``o``) for the row at offset
    ``k`` of the group whose scratch starts at ``xb``."""
    return i + i + _U(1) + _U(xk[xb + _U(feature[o + i]) * _U(GROUP) + _U(k)] >= threshold[o + i])


@njit(nogil=True, cache=True, inline="always")
def _compact_step(xk, xb, feature, threshold, children, o, i, k):
    """One step of the compact layout (tree at node offset ``o``) for the row at offset
    ``k`` of the group whose scratch starts at ``xb``."""
    return _U(children[o + o + i + i + _U(xk[xb + _U(feature[o + i]) * _U(GROUP) + _U(k)] >= threshold[o + i])])


@njit(nogil=True, cache=True)
def _walk_numerical(xs, width, nr, out, r0, complete, feature, threshold, children, leaf,
                    node_off, leaf_off, n_internal, depth, group, leaf_width):
    """Sum every tree's leaf into ``out[r0 : r0+nr]``, numerical nodes, order keys; the
    complete layout (``complete``) or the compact one, where every row takes ``depth``
    steps and a row that reaches a leaf early stays on it."""
    xk = xs.view(np.int32)
    w = _U(width * GROUP)
    lw = _U(leaf_width)
    # Fewer rows than a group: they all walk alone (_walk_alone).
    for t in range(node_off.shape[0] if nr >= GROUP else 0):
        d = depth[t]
        g = group[t]
        o = _U(node_off[t])
        first_leaf = _U((1 << d) - 1) if complete else _U(n_internal[t])
        # leaf[lo + i * lw] is leaf i - first_leaf of tree t (wrapping uint64 arithmetic).
        lo = _U(leaf_off[t]) - first_leaf * lw
        r = 0
        while r + GROUP <= nr:
            xb = _U(r // GROUP) * w
            i0 = i1 = i2 = i3 = i4 = i5 = i6 = i7 = _U(0)
            i8 = i9 = i10 = i11 = i12 = i13 = i14 = i15 = _U(0)
            if complete:
                for _ in range(d):
                    i0 = _complete_step(xk, xb, feature, threshold, o, i0, 0)
                    i1 = _complete_step(xk, xb, feature, threshold, o, i1, 1)
                    i2 = _complete_step(xk, xb, feature, threshold, o, i2, 2)
                    i3 = _complete_step(xk, xb, feature, threshold, o, i3, 3)
                    i4 = _complete_step(xk, xb, feature, threshold, o, i4, 4)
                    i5 = _complete_step(xk, xb, feature, threshold, o, i5, 5)
                    i6 = _complete_step(xk, xb, feature, threshold, o, i6, 6)
                    i7 = _complete_step(xk, xb, feature, threshold, o, i7, 7)
                    i8 = _complete_step(xk, xb, feature, threshold, o, i8, 8)
                    i9 = _complete_step(xk, xb, feature, threshold, o, i9, 9)
                    i10 = _complete_step(xk, xb, feature, threshold, o, i10, 10)
                    i11 = _complete_step(xk, xb, feature, threshold, o, i11, 11)
                    i12 = _complete_step(xk, xb, feature, threshold, o, i12, 12)
                    i13 = _complete_step(xk, xb, feature, threshold, o, i13, 13)
                    i14 = _complete_step(xk, xb, feature, threshold, o, i14, 14)
                    i15 = _complete_step(xk, xb, feature, threshold, o, i15, 15)
            else:
                for _ in range(d):
                    i0 = _compact_step(xk, xb, feature, threshold, children, o, i0, 0)
                    i1 = _compact_step(xk, xb, feature, threshold, children, o, i1, 1)
                    i2 = _compact_step(xk, xb, feature, threshold, children, o, i2, 2)
                    i3 = _compact_step(xk, xb, feature, threshold, children, o, i3, 3)
                    i4 = _compact_step(xk, xb, feature, threshold, children, o, i4, 4)
                    i5 = _compact_step(xk, xb, feature, threshold, children, o, i5, 5)
                    i6 = _compact_step(xk, xb, feature, threshold, children, o, i6, 6)
                    i7 = _compact_step(xk, xb, feature, threshold, children, o, i7, 7)
                    i8 = _compact_step(xk, xb, feature, threshold, children, o, i8, 8)
                    i9 = _compact_step(xk, xb, feature, threshold, children, o, i9, 9)
                    i10 = _compact_step(xk, xb, feature, threshold, children, o, i10, 10)
                    i11 = _compact_step(xk, xb, feature, threshold, children, o, i11, 11)
                    i12 = _compact_step(xk, xb, feature, threshold, children, o, i12, 12)
                    i13 = _compact_step(xk, xb, feature, threshold, children, o, i13, 13)
                    i14 = _compact_step(xk, xb, feature, threshold, children, o, i14, 14)
                    i15 = _compact_step(xk, xb, feature, threshold, children, o, i15, 15)
            # Written out: fed a 16-tuple, or called per row, a helper cost several times
            # the walk here.
            if lw == _U(1):
                out[r0 + r + 0, g] += leaf[lo + i0]
                out[r0 + r + 1, g] += leaf[lo + i1]
                out[r0 + r + 2, g] += leaf[lo + i2]
                out[r0 + r + 3, g] += leaf[lo + i3]
                out[r0 + r + 4, g] += leaf[lo + i4]
                out[r0 + r + 5, g] += leaf[lo + i5]
                out[r0 + r + 6, g] += leaf[lo + i6]
                out[r0 + r + 7, g] += leaf[lo + i7]
                out[r0 + r + 8, g] += leaf[lo + i8]
                out[r0 + r + 9, g] += leaf[lo + i9]
                out[r0 + r + 10, g] += leaf[lo + i10]
                out[r0 + r + 11, g] += leaf[lo + i11]
                out[r0 + r + 12, g] += leaf[lo + i12]
                out[r0 + r + 13, g] += leaf[lo + i13]
                out[r0 + r + 14, g] += leaf[lo + i14]
                out[r0 + r + 15, g] += leaf[lo + i15]
            else:
                _add_vector(out, r0 + r + 0, leaf, lo + i0 * lw)
                _add_vector(out, r0 + r + 1, leaf, lo + i1 * lw)
                _add_vector(out, r0 + r + 2, leaf, lo + i2 * lw)
                _add_vector(out, r0 + r + 3, leaf, lo + i3 * lw)
                _add_vector(out, r0 + r + 4, leaf, lo + i4 * lw)
                _add_vector(out, r0 + r + 5, leaf, lo + i5 * lw)
                _add_vector(out, r0 + r + 6, leaf, lo + i6 * lw)
                _add_vector(out, r0 + r + 7, leaf, lo + i7 * lw)
                _add_vector(out, r0 + r + 8, leaf, lo + i8 * lw)
                _add_vector(out, r0 + r + 9, leaf, lo + i9 * lw)
                _add_vector(out, r0 + r + 10, leaf, lo + i10 * lw)
                _add_vector(out, r0 + r + 11, leaf, lo + i11 * lw)
                _add_vector(out, r0 + r + 12, leaf, lo + i12 * lw)
                _add_vector(out, r0 + r + 13, leaf, lo + i13 * lw)
                _add_vector(out, r0 + r + 14, leaf, lo + i14 * lw)
                _add_vector(out, r0 + r + 15, leaf, lo + i15 * lw)
            r += GROUP
    _walk_alone(xk, width, nr - nr % GROUP, nr, out, r0, complete, feature, threshold, children, leaf,
                node_off, leaf_off, n_internal, depth, group, leaf_width)


@njit(nogil=True, cache=True)
def _walk_alone(xk, width, r_from, nr, out, r0, complete, feature, threshold, children, leaf,
                node_off, leaf_off, n_internal, depth, group, leaf_width):
    """``_walk_numerical`` for the rows ``r_from .. nr`` of a block that fill no group: each
    row alone, four trees at a time when they are as deep (complete layout) or whatever
    their depths (compact: a row on a leaf stays), so that their walks are independent
    chains of loads the CPU overlaps. Each row's leaves are added in tree order, as one
    tree at a time adds them, so the sums are the same."""
    lw = _U(leaf_width)
    n_trees = node_off.shape[0]
    for r in range(r_from, nr):
        xb = _U(_slot(r, width))
        t = 0
        while t < n_trees:
            if t + 4 > n_trees or (complete and not (depth[t] == depth[t + 1] == depth[t + 2] == depth[t + 3])):
                _walk_one(xk, xb, out, r0 + r, t, complete, feature, threshold, children, leaf, node_off, leaf_off,
                          n_internal, depth, group, lw)
                t += 1
                continue
            o0, o1, o2, o3 = _U(node_off[t]), _U(node_off[t + 1]), _U(node_off[t + 2]), _U(node_off[t + 3])
            i0 = i1 = i2 = i3 = _U(0)
            if complete:
                d = depth[t]
                for _ in range(d):
                    i0 = _complete_step(xk, xb, feature, threshold, o0, i0, 0)
                    i1 = _complete_step(xk, xb, feature, threshold, o1, i1, 0)
                    i2 = _complete_step(xk, xb, feature, threshold, o2, i2, 0)
                    i3 = _complete_step(xk, xb, feature, threshold, o3, i3, 0)
                f0 = f1 = f2 = f3 = _U((1 << d) - 1)
            else:
                f0, f1, f2, f3 = _U(n_internal[t]), _U(n_internal[t + 1]), _U(n_internal[t + 2]), _U(n_internal[t + 3])
                for _ in range(max(depth[t], depth[t + 1], depth[t + 2], depth[t + 3])):
                    if i0 < f0:
                        i0 = _compact_step(xk, xb, feature, threshold, children, o0, i0, 0)
                    if i1 < f1:
                        i1 = _compact_step(xk, xb, feature, threshold, children, o1, i1, 0)
                    if i2 < f2:
                        i2 = _compact_step(xk, xb, feature, threshold, children, o2, i2, 0)
                    if i3 < f3:
                        i3 = _compact_step(xk, xb, feature, threshold, children, o3, i3, 0)
            _add_leaf(out, r0 + r, group[t], leaf, _U(leaf_off[t]) + (i0 - f0) * lw, lw)
            _add_leaf(out, r0 + r, group[t + 1], leaf, _U(leaf_off[t + 1]) + (i1 - f1) * lw, lw)
            _add_leaf(out, r0 + r, group[t + 2], leaf, _U(leaf_off[t + 2]) + (i2 - f2) * lw, lw)
            _add_leaf(out, r0 + r, group[t + 3], leaf, _U(leaf_off[t + 3]) + (i3 - f3) * lw, lw)
            t += 4


@njit(nogil=True, cache=True, inline="always")
def _walk_one(xk, xb, out, row, t, complete, feature, threshold, children, leaf, node_off, leaf_off, n_internal,
              depth, group, lw):
    """One row (scratch ``xk`` at ``xb``) down tree ``t`` to its leaf, added to ``out[row]``."""
    o = _U(node_off[t])
    i = _U(0)
    if complete:
        for _ in range(depth[t]):
            i = _complete_step(xk, xb, feature, threshold, o, i, 0)
        first_leaf = _U((1 << depth[t]) - 1)
    else:
        first_leaf = _U(n_internal[t])
        while i < first_leaf:
            i = _compact_step(xk, xb, feature, threshold, children, o, i, 0)
    _add_leaf(out, row, group[t], leaf, _U(leaf_off[t]) + (i - first_leaf) * lw, lw)


@njit(nogil=True, cache=True, inline="always")
def _add_leaf(out, row, g, leaf, at, lw):
    """``out[row, g]`` += the leaf value at ``leaf[at]``; for vector leaves (``lw`` > 1)
    the vector there is added to the whole row (``_add_vector``)."""
    if lw == _U(1):
        out[row, g] += leaf[at]
    else:
        _add_vector(out, row, leaf, at)


@njit(nogil=True, cache=True, inline="always")
def categorical_step(x, fl, c, cat_bounds, cat_bits):
    """Whether a categorical node (flags ``fl``, bitset ``c``) sends ``x`` to its second
    child (the canonical semantics above). The CUDA walk (scoring_core.cuda._tree_kernels)
    compiles this same function as a device function, so both read a category alike."""
    if x != x:
        return (fl & FLAG_NAN_RIGHT) != 0
    member = False
    if x >= 0.0:
        w0 = cat_bounds[c]
        if x < 32.0 * (cat_bounds[c + 1] - w0):
            v = np.int64(x)
            member = ((cat_bits[w0 + (v >> 5)] >> (v & 31)) & 1) != 0
    return member == ((fl & FLAG_CAT_IN_SET_RIGHT) != 0)


@njit(nogil=True, cache=True)
def _walk_compact_categorical(xs, width, nr, out, r0, feature, threshold, children, leaf,
                              node_off, leaf_off, n_internal, group, flags, cat_set,
                              cat_bounds, cat_bits, leaf_width):
    """The compact layout with categorical nodes, on float values (no keys): one row at
    a time, to its leaf."""
    one = _U(1)
    lw = _U(leaf_width)
    for t in range(node_off.shape[0]):
        g = group[t]
        first_leaf = _U(n_internal[t])
        o = _U(node_off[t])
        lo = _U(leaf_off[t]) - first_leaf * lw  # as in _walk_numerical
        for r in range(nr):
            b = _U(_slot(r, width))
            i = _U(0)
            while i < first_leaf:
                x = xs[b + _U(feature[o + i]) * _U(GROUP)]
                fl = flags[o + i]
                if (fl & FLAG_CATEGORICAL) == 0:
                    step = x >= threshold[o + i]
                else:
                    step = categorical_step(x, fl, cat_set[o + i], cat_bounds, cat_bits)
                i = _U(children[o + o + i + i + _U(step)])
            if lw == one:
                out[r0 + r, g] += leaf[lo + i]
            else:
                _add_vector(out, r0 + r, leaf, lo + i * lw)


# ---------------------------------------------------------------------------------------
# Drivers. One block is the same in both; the parallel driver takes blocks in prange.


@njit(nogil=True, cache=True)
def _score_block(X, out, b, xs, width, layout, transform, any_transform, neg_cols,
                 base_margin, feature, threshold, threshold_key, children, leaf, node_off,
                 leaf_off, n_internal, depth, group, flags, cat_set, cat_bounds, cat_bits,
                 leaf_width, divisor, link, link_scale):
    r0 = b * BLOCK
    nr = min(BLOCK, X.shape[0] - r0)
    _gather(X, r0, nr, transform, any_transform, neg_cols, xs, width,
            layout != LAYOUT_COMPACT_CATEGORICAL)
    for r in range(r0, r0 + nr):
        for g in range(out.shape[1]):
            out[r, g] = base_margin[g]
    if layout != LAYOUT_COMPACT_CATEGORICAL:
        _walk_numerical(xs, width, nr, out, r0, layout == LAYOUT_COMPLETE, feature,
                        threshold_key, children, leaf, node_off, leaf_off, n_internal, depth,
                        group, leaf_width)
    else:
        _walk_compact_categorical(xs, width, nr, out, r0, feature, threshold, children,
                                  leaf, node_off, leaf_off, n_internal, group, flags,
                                  cat_set, cat_bounds, cat_bits, leaf_width)
    _finish_rows(out, r0, nr, divisor, link, link_scale)


@njit(nogil=True, cache=True)
def predict_serial(X, out, layout, transform, any_transform, neg_cols, base_margin, feature,
                   threshold, threshold_key, children, leaf, node_off, leaf_off, n_internal,
                   depth, group, flags, cat_set, cat_bounds, cat_bits, leaf_width, divisor,
                   link, link_scale):
    """Score ``X`` into ``out`` (n, n_groups) on the calling thread."""
    width = X.shape[1] + neg_cols.shape[0]
    xs = np.empty(BLOCK * width, np.float32)
    for b in range((X.shape[0] + BLOCK - 1) // BLOCK):
        _score_block(X, out, b, xs, width, layout, transform, any_transform, neg_cols,
                     base_margin, feature, threshold, threshold_key, children, leaf,
                     node_off, leaf_off, n_internal, depth, group, flags, cat_set, cat_bounds,
                     cat_bits, leaf_width, divisor, link, link_scale)


@njit(nogil=True, cache=True, parallel=True)
def predict_parallel(X, out, layout, transform, any_transform, neg_cols, base_margin,
                     feature, threshold, threshold_key, children, leaf, node_off, leaf_off,
                     n_internal, depth, group, flags, cat_set, cat_bounds, cat_bits,
                     leaf_width, divisor, link, link_scale):
    """Score ``X`` into ``out`` (n, n_groups), blocks spread over numba's threads."""
    width = X.shape[1] + neg_cols.shape[0]
    for b in prange((X.shape[0] + BLOCK - 1) // BLOCK):
        xs = np.empty(BLOCK * width, np.float32)
        _score_block(X, out, b, xs, width, layout, transform, any_transform, neg_cols,
                     base_margin, feature, threshold, threshold_key, children, leaf,
                     node_off, leaf_off, n_internal, depth, group, flags, cat_set, cat_bounds,
                     cat_bits, leaf_width, divisor, link, link_scale)
