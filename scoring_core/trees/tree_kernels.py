"""numba kernels that score a tree ensemble, and the builders of their node layouts.

Every kernel works the same way (PERF_NOTES techniques 3, 5, 6, 7): rows go in blocks of
``BLOCK`` rows; each block is gathered from ``X`` (C- or F-ordered) into a small row-major
scratch, with the per-feature input rules of the source library applied on the way (see
``TRANSFORM_*``); then trees outer, rows inner, leaf values summed into the output rows,
which start at the base margin; last the link function. A ``prange`` over blocks in the
parallel drivers, a plain loop in the serial ones.

Node semantics shared by every layout (the converters reduce both libraries to this):

- a numerical node sends ``x`` right iff ``x >= threshold`` (float32 against float32),
  and a NaN the way its ``FLAG_NAN_RIGHT`` bit says;
- a categorical node (``FLAG_CATEGORICAL``) looks the integer ``x`` up in a bitset of
  32-bit words; a member goes right if ``FLAG_CAT_IN_SET_RIGHT`` else left, and a
  non-member (negative, or past the bitset) goes the other way; NaN per ``FLAG_NAN_RIGHT``.

Two layouts:

- *complete*: each tree padded to a complete binary tree of its own depth, nodes in level
  order, descent branch-free ``i = 2*i + 1 + right`` (technique 1); numerical nodes only.
  Eight rows walk a tree together so that their independent loads overlap (technique 2,
  written out by hand rather than generated per model).
- *compact*: internal nodes only, children in one array ``children[2*node + right]``,
  a negative child ``~leaf`` being a leaf; for deep or categorical trees.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 64

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


# ---------------------------------------------------------------------------------------
# Block pieces


@njit(nogil=True, cache=True)
def _gather(X, r0, nr, transform, any_transform, xs):
    """Copy rows ``r0 .. r0+nr`` of ``X`` into ``xs[:nr]``, applying the input rules."""
    n_features = X.shape[1]
    if X.strides[0] >= X.strides[1]:
        for r in range(nr):
            for f in range(n_features):
                xs[r, f] = X[r0 + r, f]
    else:
        for f in range(n_features):
            for r in range(nr):
                xs[r, f] = X[r0 + r, f]
    if not any_transform:
        return
    nan = np.float32(np.nan)
    zero = np.float32(0.0)
    for f in range(n_features):
        code = transform[f]
        if code == TRANSFORM_NONE:
            continue
        for r in range(nr):
            x = xs[r, f]
            if code == TRANSFORM_LGB_NAN_TO_ZERO:
                if x != x or abs(x) <= _LGB_ZERO:
                    xs[r, f] = zero
            elif code == TRANSFORM_LGB_KEEP_NAN:
                if abs(x) <= _LGB_ZERO:
                    xs[r, f] = zero
            elif code == TRANSFORM_LGB_ZERO_IS_MISSING:
                if x != x or abs(x) <= _LGB_ZERO:
                    xs[r, f] = nan
            elif code == TRANSFORM_LGB_CATEGORY:
                # static_cast<int>: NaN and out-of-range give INT_MIN, which goes right
                # like any negative value; (-1, 0) truncates to category 0.
                if x <= -1.0 or x >= 2147483648.0:
                    xs[r, f] = -1.0
                elif x < 0.0:
                    xs[r, f] = zero
            elif code == TRANSFORM_XGB_CATEGORY:
                if x < 0.0 or x >= 16777216.0:
                    xs[r, f] = -1.0


@njit(nogil=True, cache=True)
def _init_rows(out, r0, nr, base_margin):
    n_groups = out.shape[1]
    for r in range(r0, r0 + nr):
        for g in range(n_groups):
            out[r, g] = base_margin[g]


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
            m = np.float64(out[r, 0])
            for g in range(1, n_groups):
                m = max(m, np.float64(out[r, g]))
            s = 0.0
            for g in range(n_groups):
                e = np.exp(np.float64(out[r, g]) - m)
                out[r, g] = e
                s += e
            for g in range(n_groups):
                out[r, g] = np.float64(out[r, g]) / s
        return
    for r in range(r0, r0 + nr):
        for g in range(n_groups):
            x = np.float64(out[r, g])
            if link == LINK_SIGMOID:
                y = 1.0 / (1.0 + np.exp(-link_scale * x))
            elif link == LINK_EXP:
                y = np.exp(x)
            elif link == LINK_HINGE:
                y = 1.0 if x > 0.0 else 0.0
            elif link == LINK_LOG1P_EXP:
                y = np.log1p(np.exp(x))
            else:  # LINK_SIGNED_SQUARE
                y = x * abs(x)
            out[r, g] = y


@njit(nogil=True, cache=True)
def _walk_complete_block(xs, nr, out, r0, feature, threshold, nan_right, leaf,
                         node_off, leaf_off, depth, group, has_nan):
    """Sum every tree's leaf into ``out[r0 : r0+nr]`` (complete layout)."""
    n_trees = node_off.shape[0]
    for t in range(n_trees):
        no = node_off[t]
        lo = leaf_off[t] - ((1 << depth[t]) - 1)  # leaf of slot i is leaf[lo + i]
        d = depth[t]
        g = group[t]
        f_t = feature[no:]
        t_t = threshold[no:]
        n_t = nan_right[no:]
        r = 0
        if not has_nan:
            while r + 8 <= nr:
                i0 = 0
                i1 = 0
                i2 = 0
                i3 = 0
                i4 = 0
                i5 = 0
                i6 = 0
                i7 = 0
                for _ in range(d):
                    i0 = 2 * i0 + 1 + (xs[r, f_t[i0]] >= t_t[i0])
                    i1 = 2 * i1 + 1 + (xs[r + 1, f_t[i1]] >= t_t[i1])
                    i2 = 2 * i2 + 1 + (xs[r + 2, f_t[i2]] >= t_t[i2])
                    i3 = 2 * i3 + 1 + (xs[r + 3, f_t[i3]] >= t_t[i3])
                    i4 = 2 * i4 + 1 + (xs[r + 4, f_t[i4]] >= t_t[i4])
                    i5 = 2 * i5 + 1 + (xs[r + 5, f_t[i5]] >= t_t[i5])
                    i6 = 2 * i6 + 1 + (xs[r + 6, f_t[i6]] >= t_t[i6])
                    i7 = 2 * i7 + 1 + (xs[r + 7, f_t[i7]] >= t_t[i7])
                out[r0 + r, g] += leaf[lo + i0]
                out[r0 + r + 1, g] += leaf[lo + i1]
                out[r0 + r + 2, g] += leaf[lo + i2]
                out[r0 + r + 3, g] += leaf[lo + i3]
                out[r0 + r + 4, g] += leaf[lo + i4]
                out[r0 + r + 5, g] += leaf[lo + i5]
                out[r0 + r + 6, g] += leaf[lo + i6]
                out[r0 + r + 7, g] += leaf[lo + i7]
                r += 8
        while r < nr:
            i = 0
            for _ in range(d):
                x = xs[r, f_t[i]]
                right = x >= t_t[i]
                if x != x:
                    right = n_t[i] != 0
                i = 2 * i + 1 + right
            out[r0 + r, g] += leaf[lo + i]
            r += 1


@njit(nogil=True, cache=True)
def _walk_compact_block(xs, nr, out, r0, feature, threshold, flags, cat_set, children,
                        leaf, tree_root, group, cat_bounds, cat_bits, has_categorical):
    """Sum every tree's leaf into ``out[r0 : r0+nr]`` (compact layout)."""
    n_trees = tree_root.shape[0]
    for t in range(n_trees):
        root = tree_root[t]
        g = group[t]
        for r in range(nr):
            node = root
            while node >= 0:
                x = xs[r, feature[node]]
                fl = flags[node]
                if has_categorical and (fl & FLAG_CATEGORICAL) != 0:
                    if x != x:
                        right = (fl & FLAG_NAN_RIGHT) != 0
                    else:
                        member = False
                        if x >= 0.0:
                            c = cat_set[node]
                            w0 = cat_bounds[c]
                            if x < 32.0 * (cat_bounds[c + 1] - w0):
                                v = np.int64(x)
                                member = ((cat_bits[w0 + (v >> 5)] >> (v & 31)) & 1) != 0
                        right = member == ((fl & FLAG_CAT_IN_SET_RIGHT) != 0)
                else:
                    right = x >= threshold[node]
                    if x != x:
                        right = (fl & FLAG_NAN_RIGHT) != 0
                node = children[2 * node + right]
            out[r0 + r, g] += leaf[~node]


# ---------------------------------------------------------------------------------------
# Drivers: the same body twice, once with prange (parallel=True), once serial.


@njit(nogil=True, cache=True)
def _complete_one_block(X, out, b, transform, any_transform, base_margin, feature,
                        threshold, nan_right, leaf, node_off, leaf_off, depth, group,
                        divisor, link, link_scale, xs):
    n = X.shape[0]
    r0 = b * BLOCK
    nr = min(BLOCK, n - r0)
    _gather(X, r0, nr, transform, any_transform, xs)
    has_nan = False
    for r in range(nr):
        for f in range(xs.shape[1]):
            if xs[r, f] != xs[r, f]:
                has_nan = True
                break
        if has_nan:
            break
    _init_rows(out, r0, nr, base_margin)
    _walk_complete_block(xs, nr, out, r0, feature, threshold, nan_right, leaf, node_off,
                         leaf_off, depth, group, has_nan)
    _finish_rows(out, r0, nr, divisor, link, link_scale)


@njit(nogil=True, cache=True)
def predict_complete_serial(X, out, transform, any_transform, base_margin, feature,
                            threshold, nan_right, leaf, node_off, leaf_off, depth, group,
                            divisor, link, link_scale):
    n_blocks = (X.shape[0] + BLOCK - 1) // BLOCK
    xs = np.empty((BLOCK, X.shape[1]), np.float32)
    for b in range(n_blocks):
        _complete_one_block(X, out, b, transform, any_transform, base_margin, feature,
                            threshold, nan_right, leaf, node_off, leaf_off, depth, group,
                            divisor, link, link_scale, xs)


@njit(nogil=True, cache=True, parallel=True)
def predict_complete_parallel(X, out, transform, any_transform, base_margin, feature,
                              threshold, nan_right, leaf, node_off, leaf_off, depth, group,
                              divisor, link, link_scale):
    n_blocks = (X.shape[0] + BLOCK - 1) // BLOCK
    for b in prange(n_blocks):
        xs = np.empty((BLOCK, X.shape[1]), np.float32)
        _complete_one_block(X, out, b, transform, any_transform, base_margin, feature,
                            threshold, nan_right, leaf, node_off, leaf_off, depth, group,
                            divisor, link, link_scale, xs)


@njit(nogil=True, cache=True)
def _compact_one_block(X, out, b, transform, any_transform, base_margin, feature,
                       threshold, flags, cat_set, children, leaf, tree_root, group,
                       cat_bounds, cat_bits, has_categorical, divisor, link, link_scale, xs):
    n = X.shape[0]
    r0 = b * BLOCK
    nr = min(BLOCK, n - r0)
    _gather(X, r0, nr, transform, any_transform, xs)
    _init_rows(out, r0, nr, base_margin)
    _walk_compact_block(xs, nr, out, r0, feature, threshold, flags, cat_set, children, leaf,
                        tree_root, group, cat_bounds, cat_bits, has_categorical)
    _finish_rows(out, r0, nr, divisor, link, link_scale)


@njit(nogil=True, cache=True)
def predict_compact_serial(X, out, transform, any_transform, base_margin, feature,
                           threshold, flags, cat_set, children, leaf, tree_root, group,
                           cat_bounds, cat_bits, has_categorical, divisor, link, link_scale):
    n_blocks = (X.shape[0] + BLOCK - 1) // BLOCK
    xs = np.empty((BLOCK, X.shape[1]), np.float32)
    for b in range(n_blocks):
        _compact_one_block(X, out, b, transform, any_transform, base_margin, feature,
                           threshold, flags, cat_set, children, leaf, tree_root, group,
                           cat_bounds, cat_bits, has_categorical, divisor, link, link_scale,
                           xs)


@njit(nogil=True, cache=True, parallel=True)
def predict_compact_parallel(X, out, transform, any_transform, base_margin, feature,
                             threshold, flags, cat_set, children, leaf, tree_root, group,
                             cat_bounds, cat_bits, has_categorical, divisor, link,
                             link_scale):
    n_blocks = (X.shape[0] + BLOCK - 1) // BLOCK
    for b in prange(n_blocks):
        xs = np.empty((BLOCK, X.shape[1]), np.float32)
        _compact_one_block(X, out, b, transform, any_transform, base_margin, feature,
                           threshold, flags, cat_set, children, leaf, tree_root, group,
                           cat_bounds, cat_bits, has_categorical, divisor, link, link_scale,
                           xs)


# ---------------------------------------------------------------------------------------
# Layout builders (run once per ensemble at load time).


@njit(nogil=True, cache=True)
def tree_depths(tree_root, children):
    """Depth of every tree (a lone leaf has depth 0), by an explicit stack."""
    n_trees = tree_root.shape[0]
    depths = np.zeros(n_trees, np.int32)
    stack_node = np.empty(64, np.int64)
    stack_depth = np.empty(64, np.int32)
    for t in range(n_trees):
        if tree_root[t] < 0:
            continue
        top = 0
        stack_node[0] = tree_root[t]
        stack_depth[0] = 0
        best = 0
        while top >= 0:
            node = stack_node[top]
            d = stack_depth[top]
            top -= 1
            if node < 0:
                if d > best:
                    best = d
                continue
            for side in range(2):
                top += 1
                if top >= stack_node.shape[0]:
                    stack_node = np.concatenate((stack_node, np.empty_like(stack_node)))
                    stack_depth = np.concatenate((stack_depth, np.empty_like(stack_depth)))
                stack_node[top] = children[2 * node + side]
                stack_depth[top] = d + 1
        depths[t] = best
    return depths


@njit(nogil=True, cache=True)
def build_complete(tree_root, depths, feature, threshold, flags, children, leaf,
                   feature_out, threshold_out, nan_right_out, leaf_out, node_off, leaf_off):
    """Fill the complete level-order layout. A leaf above its tree's full depth becomes a
    padding node whose whole subtree holds that leaf's value, so any descent reaches it."""
    n_trees = tree_root.shape[0]
    no = 0
    lo = 0
    for t in range(n_trees):
        d = depths[t]
        n_internal = (1 << d) - 1
        n_leaves = 1 << d
        node_off[t] = no
        leaf_off[t] = lo
        src = np.empty(n_internal + n_leaves, np.int64)
        src[0] = tree_root[t]
        for p in range(n_internal):
            s = src[p]
            if s >= 0:
                feature_out[no + p] = feature[s]
                threshold_out[no + p] = threshold[s]
                nan_right_out[no + p] = flags[s] & FLAG_NAN_RIGHT
                src[2 * p + 1] = children[2 * s]
                src[2 * p + 2] = children[2 * s + 1]
            else:
                feature_out[no + p] = 0
                threshold_out[no + p] = 0.0
                nan_right_out[no + p] = 0
                src[2 * p + 1] = s
                src[2 * p + 2] = s
        for q in range(n_leaves):
            leaf_out[lo + q] = leaf[~src[n_internal + q]]
        no += n_internal
        lo += n_leaves


@njit(nogil=True, cache=True)
def count_reached(tree_root, children):
    """How many internal nodes a walk from the roots reaches. Call it only when every node
    has at most one parent, else it may not end."""
    n = 0
    stack = np.empty(max(1, children.shape[0] + tree_root.shape[0]), np.int64)
    for t in range(tree_root.shape[0]):
        if tree_root[t] < 0:
            continue
        top = 0
        stack[0] = tree_root[t]
        while top >= 0:
            node = stack[top]
            top -= 1
            n += 1
            for side in range(2):
                c = children[2 * node + side]
                if c >= 0:
                    top += 1
                    stack[top] = c
    return n
