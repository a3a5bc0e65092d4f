"""TreeSHAP one row at a time: the layout for a handful of rows (an online explanation).

The block kernels of ``treeshap`` put a block's rows in the vector lanes, which pays from
about eight rows on; below that, lanes run empty. Here a row's quadrature points are the
lanes instead (FIXED_Q of them, a count the compiler knows, so its loops unroll into vector
operations), and rows go one after another. Same paths, same sums, same values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scoring_core.trees import tree_kernels as K

# Paths of up to 2 * FIXED_Q features (trees of depth <= 8) all take FIXED_Q points, a
# count the compiler knows, so that it unrolls the loops over the points; deeper ones
# take ceil(d / 2) points each, in the same code with a count it does not know.
FIXED_Q = 4


@njit(nogil=True, cache=True, inline="always")
def _goes_right(x, fl, t, c, cat_bounds, cat_bits):
    """The canonical node test (``tree_kernels``) on a float value after the input rules."""
    if (fl & K.FLAG_CATEGORICAL) != 0:
        return K.categorical_step(x, fl, c, cat_bounds, cat_bits)
    if x != x:
        return (fl & K.FLAG_NAN_RIGHT) != 0
    return x >= t


@njit(nogil=True, cache=True, inline="always")
def _leaf(row, g, leaf, e0, d, nq, qt, qw, dec, oz, F, S, leaf_value, leaf_width, elem_feature,
          elem_zero, elem_edge_start, edge_node, edge_right):
    """One leaf's contributions to one row, with ``nq`` points. Branch-free but for the
    loops: whether a feature is hot is a coin flip to the branch predictor (a version that
    split hot from cold features did less arithmetic and ran five times slower)."""
    for q in range(nq):
        F[0, q] = 1.0
    for j in range(d):
        o = 1.0
        for w in range(elem_edge_start[e0 + j], elem_edge_start[e0 + j + 1]):
            if dec[edge_node[w]] != edge_right[w]:
                o = 0.0
        z = elem_zero[e0 + j]
        a = o - z
        oz[j] = a
        for q in range(nq):
            F[j + 1, q] = F[j, q] * (z + qt[q] * a)
    for q in range(nq):
        S[q] = qw[q]
    v = leaf_value[leaf] if leaf_width == 1 else 0.0
    for j in range(d - 1, -1, -1):
        s = 0.0
        for q in range(nq):
            s += F[j, q] * S[q]
        a = oz[j]
        c = a * s
        f = elem_feature[e0 + j]
        if leaf_width == 1:
            row[g, f] += v * c
        else:
            for gg in range(leaf_width):
                row[gg, f] += leaf_value[leaf * leaf_width + gg] * c
        z = elem_zero[e0 + j]
        for q in range(nq):
            S[q] *= z + qt[q] * a


@njit(nogil=True, cache=True)
def explain_rows(X, out, d_max, max_tree_nodes, transform, any_transform, no_neg, feature, threshold, flags,
                 cat_set, cat_bounds, cat_bits, tree_group, leaf_value, leaf_width, tree_leaf_start,
                 tree_node_start, leaf_order, node_order, leaf_elem_start, elem_feature, elem_zero,
                 elem_edge_start, edge_node, edge_right, quad_t, quad_w):
    """Add every tree's contributions to each row of ``out`` (n, n_groups, n_features + 1)."""
    n_features = X.shape[1]
    n_q_max = quad_t.shape[1]
    xs = np.empty(K.GROUP * n_features, np.float32)
    dec = np.zeros(max(max_tree_nodes, 1), np.bool_)
    oz = np.empty(d_max + 1, np.float64)
    F = np.empty((d_max + 1, n_q_max), np.float64)
    S = np.empty(n_q_max, np.float64)
    fixed = n_q_max == FIXED_Q
    for r in range(X.shape[0]):
        K._gather(X, r, 1, transform, any_transform, no_neg, xs, n_features, False)
        row = out[r]
        for t in range(tree_leaf_start.shape[0] - 1):
            g = tree_group[t]
            first = tree_node_start[t]
            for k in range(first, tree_node_start[t + 1]):
                i = node_order[k]
                dec[k - first] = _goes_right(xs[feature[i] * K.GROUP], flags[i], threshold[i], cat_set[i],
                                             cat_bounds, cat_bits)
            for k in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                leaf = leaf_order[k]
                e0 = leaf_elem_start[leaf]
                d = leaf_elem_start[leaf + 1] - e0
                if d == 0:
                    continue
                if fixed:
                    _leaf(row, g, leaf, e0, d, FIXED_Q, quad_t[FIXED_Q], quad_w[FIXED_Q], dec, oz, F, S,
                          leaf_value, leaf_width, elem_feature, elem_zero, elem_edge_start, edge_node, edge_right)
                else:
                    nq = (d + 1) // 2
                    _leaf(row, g, leaf, e0, d, nq, quad_t[nq], quad_w[nq], dec, oz, F, S,
                          leaf_value, leaf_width, elem_feature, elem_zero, elem_edge_start, edge_node, edge_right)
