"""Exact path-dependent TreeSHAP for the tree-ensemble IR, compiled with numba.

The values are those of Lundberg et al.'s algorithm (XGBoost ``pred_contribs``, LightGBM
``pred_contrib``, shap's TreeExplainer): the expectation of a tree given the features in
S follows x on the splits of S and weighs both branches by their covers elsewhere. It is
computed per leaf, from the leaf's path, rather than by the recursive extend/unwind:

- a leaf's path, its splits merged by feature, gives for each feature j on it a *zero
  fraction* z_j (the product of cover(child) / cover(parent) over its splits) and, for a
  row, a *one fraction* o_j (1 if the row takes all its splits, else 0);
- the leaf adds ``v * (o_i - z_i) * w`` to feature i, where ``w`` sums the Shapley
  weights s!(d-1-s)!/d! over the subsets of the path's other features. With
  ``F_j(t) = z_j + t (o_j - z_j)`` that sum is ``integral_0^1 prod_{j != i} F_j(t) dt``
  (the Beta integral of the weights), a polynomial of degree d - 1, so Gauss-Legendre
  quadrature with ceil(d / 2) points gives it exactly;
- one pass forward (prefix products at each point) and one back (suffix products) give
  every feature's integral: O(d * d / 2) multiply-adds a leaf, no branches, and nothing
  per node but one comparison a row.

The paths (features, zero fractions, the splits behind each one fraction) depend on the
model only and are built once (``TreePaths``); the bias (the cover-weighted mean of each
tree, plus the base margin) too. Rows go in blocks of ``BLOCK``; within a block trees are
outer, and each leaf is worked for every row of the block at once: the leaf's path is read
once, and every inner loop runs over the rows, so it compiles to vector operations (4.5x
the one-row-at-a-time kernel at 64 rows). Fewer than ``ROWS_ONE_BY_ONE`` rows would leave
the lanes empty; they take ``treeshap_row``, whose lanes are a row's quadrature points.

Contributions are in the margin space (before the link) and sum, with the bias, to the
margin the ensemble's ``predict`` puts through its link, divisor included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from scoring_core import threads
from scoring_core.explain.treeshap_row import FIXED_Q, _goes_right, explain_rows
from scoring_core.trees import tree_kernels as K

BLOCK = 64
ROWS_ONE_BY_ONE = 8  # fewer rows than this take treeshap_row's layout


@dataclass(frozen=True)
class TreePaths:
    """Every leaf's merged path, flat over the ensemble (see the module docstring)."""

    tree_leaf_start: np.ndarray  # (n_trees + 1,) each tree's first position in leaf_order
    tree_node_start: np.ndarray  # (n_trees + 1,) each tree's first position in node_order
    leaf_order: np.ndarray  # leaves, tree by tree
    node_order: np.ndarray  # internal nodes, tree by tree
    leaf_elem_start: np.ndarray  # (n_leaves + 1,) first path element of each leaf
    elem_feature: np.ndarray  # (n_elems,) int32
    elem_zero: np.ndarray  # (n_elems,) float64 zero fraction
    elem_edge_start: np.ndarray  # (n_elems + 1,) first edge of each element
    edge_node: np.ndarray  # (n_edges,) int32 internal node, by its place in its tree's node_order
    edge_right: np.ndarray  # (n_edges,) uint8: the path goes right there
    bias: np.ndarray  # (n_groups,) base margin + each tree's expectation, / divisor
    quad_t: np.ndarray  # (n_max + 1, n_max) Gauss-Legendre points on [0, 1], per count
    quad_w: np.ndarray  # same, weights


@njit(cache=True)
def _walk_paths(roots, children, feature, node_cover, leaf_cover, n_leaves, sizes_only,
                leaf_elem_start, leaf_edge_start, elem_feature, elem_zero, elem_edge_start,
                edge_node, edge_right, leaf_elem_count, leaf_edge_count, leaf_tree, node_tree):
    """Depth-first over every tree; at each leaf merge its path by feature. With
    ``sizes_only`` count each leaf's elements and edges, else write them at the starts."""
    path_node = np.empty(256, np.int64)
    path_dir = np.empty(256, np.int64)
    feats = np.empty(256, np.int64)
    zs = np.empty(256, np.float64)
    elem_of = np.empty(256, np.int64)
    for t in range(roots.shape[0]):
        if roots[t] < 0:
            leaf_tree[~roots[t]] = t
            continue
        # stack entries: (node ref, depth, parent, side); the root has depth 0
        s_ref = [np.int64(roots[t])]
        s_dep = [np.int64(0)]
        s_par = [np.int64(-1)]
        s_side = [np.int64(0)]
        while len(s_ref):
            c = s_ref.pop()
            d = s_dep.pop()
            p = s_par.pop()
            side = s_side.pop()
            if d > 0:
                path_node[d - 1] = p
                path_dir[d - 1] = side
            if c >= 0:
                node_tree[c] = t
                for sd in range(2):
                    s_ref.append(np.int64(children[2 * c + sd]))
                    s_dep.append(d + 1)
                    s_par.append(c)
                    s_side.append(np.int64(sd))
                continue
            leaf = ~c
            leaf_tree[leaf] = t
            n_e = 0
            for e in range(d):
                node = path_node[e]
                f = feature[node]
                child = children[2 * node + path_dir[e]]
                cov = leaf_cover[~child] if child < 0 else node_cover[child]
                parent = node_cover[node]
                ratio = cov / parent if parent > 0.0 else 0.0
                k = -1
                for j in range(n_e):
                    if feats[j] == f:
                        k = j
                if k < 0:
                    k = n_e
                    feats[k] = f
                    zs[k] = 1.0
                    n_e += 1
                zs[k] *= ratio
                elem_of[e] = k
            if sizes_only:
                leaf_elem_count[leaf] = n_e
                leaf_edge_count[leaf] = d
                continue
            e0 = leaf_elem_start[leaf]
            w = leaf_edge_start[leaf]
            for j in range(n_e):
                elem_feature[e0 + j] = feats[j]
                elem_zero[e0 + j] = zs[j]
                elem_edge_start[e0 + j] = w
                for e in range(d):
                    if elem_of[e] == j:
                        edge_node[w] = path_node[e]
                        edge_right[w] = path_dir[e]
                        w += 1


def _grouped(owner: np.ndarray, n_trees: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ordered by their tree, and each tree's first position in that order."""
    order = np.argsort(owner, kind="stable").astype(np.int64)
    start = np.concatenate(([0], np.cumsum(np.bincount(owner, minlength=n_trees)))).astype(np.int64)
    return order, start


def build_paths(arrays: dict[str, np.ndarray], n_groups: int, leaf_width: int, divisor: float) -> TreePaths:
    """The ``TreePaths`` of a validated ensemble's canonical arrays, with covers."""
    roots = arrays["tree_root"].astype(np.int64)
    children = arrays["node_children"].astype(np.int64)
    feature = arrays["node_feature"].astype(np.int64)
    node_cover, leaf_cover = arrays["node_cover"], arrays["leaf_cover"]
    n_leaves = leaf_cover.size
    elem_count = np.zeros(n_leaves, np.int64)
    edge_count = np.zeros(n_leaves, np.int64)
    none_i, none_f, none_u = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.uint8)
    leaf_tree = np.zeros(n_leaves, np.int64)
    node_tree = np.zeros(feature.size, np.int64)
    _walk_paths(roots, children, feature, node_cover, leaf_cover, n_leaves, True, none_i, none_i,
                none_i.astype(np.int32), none_f, none_i, none_i.astype(np.int32), none_u, elem_count, edge_count,
                leaf_tree, node_tree)
    leaf_elem_start = np.concatenate(([0], np.cumsum(elem_count))).astype(np.int64)
    leaf_edge_start = np.concatenate(([0], np.cumsum(edge_count))).astype(np.int64)
    n_elems, n_edges = int(leaf_elem_start[-1]), int(leaf_edge_start[-1])
    elem_feature = np.zeros(n_elems, np.int32)
    elem_zero = np.zeros(n_elems, np.float64)
    elem_edge_start = np.zeros(n_elems + 1, np.int64)
    elem_edge_start[-1] = n_edges
    edge_node = np.zeros(n_edges, np.int32)
    edge_right = np.zeros(n_edges, np.uint8)
    _walk_paths(roots, children, feature, node_cover, leaf_cover, n_leaves, False, leaf_elem_start,
                leaf_edge_start, elem_feature, elem_zero, elem_edge_start, edge_node, edge_right,
                elem_count, edge_count, leaf_tree, node_tree)
    n_trees = roots.size
    leaf_order, tree_leaf_start = _grouped(leaf_tree, n_trees)
    node_order, tree_node_start = _grouped(node_tree, n_trees)
    # Kernels decide a tree's splits into a table by each node's place in its tree.
    place = np.zeros(max(feature.size, 1), np.int64)
    place[node_order] = np.arange(node_order.size) - tree_node_start[node_tree[node_order]]
    edge_node = place[edge_node].astype(np.int32)
    # The bias: each tree's expectation, the leaves weighed by the product of their path's
    # zero fractions (cover(leaf) / cover(root) when covers add up), into its group(s).
    weight = np.ones(n_leaves)
    np.multiply.at(weight, np.repeat(np.arange(n_leaves), elem_count), elem_zero)
    values = arrays["leaf_value"].astype(np.float64).reshape(n_leaves, leaf_width)
    bias = np.asarray(arrays["base_margin"], np.float64).copy()
    expected = weight[:, None] * values
    if leaf_width == 1:
        np.add.at(bias, arrays["tree_group"][leaf_tree], expected[:, 0] / divisor)
    else:
        bias += expected.sum(axis=0) / divisor
    n_max = max(1, (int(elem_count.max(initial=0)) + 1) // 2)
    if n_max < FIXED_Q:  # shallow trees take the unrolled kernel too (more points stay exact)
        n_max = FIXED_Q
    quad_t = np.zeros((n_max + 1, n_max))
    quad_w = np.zeros((n_max + 1, n_max))
    for n in range(1, n_max + 1):
        x, w = np.polynomial.legendre.leggauss(n)
        quad_t[n, :n] = (x + 1.0) / 2.0
        quad_w[n, :n] = w / 2.0
    return TreePaths(tree_leaf_start, tree_node_start, leaf_order, node_order, leaf_elem_start,
                     elem_feature, elem_zero, elem_edge_start, edge_node, edge_right, bias, quad_t, quad_w)


# ---------------------------------------------------------------------------------------
# Per row


@njit(nogil=True, cache=True, inline="always")
def _leaf(C, nr, g, leaf, e0, d, nq, qt, qw, dec, A, F, S, T, leaf_value, leaf_width, elem_feature,
          elem_zero, elem_edge_start, edge_node, edge_right):
    """One leaf's contributions to the ``nr`` rows of a block (the module docstring), with
    ``nq`` points; every inner loop runs over the rows, so it is one vector operation."""
    # One fractions minus zero fractions, and the prefix products
    # F[j] = prod_{k < j} F_k(t_q) at each point (F[0] all ones).
    for q in range(nq):
        for r in range(nr):
            F[0, q, r] = 1.0
    for j in range(d):
        z = elem_zero[e0 + j]
        for r in range(nr):
            A[j, r] = 1.0 - z
        for w in range(elem_edge_start[e0 + j], elem_edge_start[e0 + j + 1]):
            node = edge_node[w]
            right = edge_right[w]
            for r in range(nr):
                A[j, r] = A[j, r] if dec[node, r] == right else -z
        for q in range(nq):
            t = qt[q]
            for r in range(nr):
                F[j + 1, q, r] = F[j, q, r] * (z + t * A[j, r])
    # Backward: S = quadrature weight * the suffix product past j.
    for q in range(nq):
        for r in range(nr):
            S[q, r] = qw[q]
    for j in range(d - 1, -1, -1):
        for r in range(nr):
            s = 0.0
            for q in range(nq):
                s += F[j, q, r] * S[q, r]
            T[r] = A[j, r] * s
        f = elem_feature[e0 + j]
        if leaf_width == 1:
            v = leaf_value[leaf]
            for r in range(nr):
                C[g, f, r] += v * T[r]
        else:
            for gg in range(leaf_width):
                v = leaf_value[leaf * leaf_width + gg]
                for r in range(nr):
                    C[gg, f, r] += v * T[r]
        z = elem_zero[e0 + j]
        for q in range(nq):
            t = qt[q]
            for r in range(nr):
                S[q, r] *= z + t * A[j, r]


@njit(nogil=True, cache=True)
def _explain_block(X, out, b, xs, dec, A, F, S, T, C, transform, any_transform, no_neg, feature,
                   threshold, flags, cat_set, cat_bounds, cat_bits, tree_group, leaf_value,
                   leaf_width, tree_leaf_start, tree_node_start, leaf_order, node_order,
                   leaf_elem_start, elem_feature, elem_zero, elem_edge_start, edge_node,
                   edge_right, quad_t, quad_w):
    """Add the contributions of every tree to rows ``b*BLOCK ..`` of ``out``
    (n, n_groups, n_features + 1); the bias column is left alone. Trees are outer: a
    tree's splits are decided for every row of the block (``dec``, by the node's place in
    its tree), then each leaf is worked for all the rows at once."""
    n_features = X.shape[1]
    r0 = b * BLOCK
    nr = min(BLOCK, X.shape[0] - r0)
    K._gather(X, r0, nr, transform, any_transform, no_neg, xs, n_features, False)
    C[:] = 0.0
    fixed = F.shape[1] == FIXED_Q
    for t in range(tree_leaf_start.shape[0] - 1):
        g = tree_group[t]
        first = tree_node_start[t]
        for k in range(first, tree_node_start[t + 1]):
            i = node_order[k]
            col = feature[i] * K.GROUP
            fl, th, cs = flags[i], threshold[i], cat_set[i]
            for r in range(nr):
                dec[k - first, r] = _goes_right(xs[K._slot(r, n_features) + col], fl, th, cs, cat_bounds, cat_bits)
        for k in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
            leaf = leaf_order[k]
            e0 = leaf_elem_start[leaf]
            d = leaf_elem_start[leaf + 1] - e0
            if d == 0:
                continue
            if fixed:
                _leaf(C, nr, g, leaf, e0, d, FIXED_Q, quad_t[FIXED_Q], quad_w[FIXED_Q], dec, A, F, S, T,
                      leaf_value, leaf_width, elem_feature, elem_zero, elem_edge_start, edge_node, edge_right)
            else:
                nq = (d + 1) // 2
                _leaf(C, nr, g, leaf, e0, d, nq, quad_t[nq], quad_w[nq], dec, A, F, S, T,
                      leaf_value, leaf_width, elem_feature, elem_zero, elem_edge_start, edge_node, edge_right)
    for r in range(nr):
        for gg in range(C.shape[0]):
            for f in range(n_features):
                out[r0 + r, gg, f] += C[gg, f, r]
    return nr


@njit(nogil=True, cache=True)
def _scratch(n_features, n_groups, max_tree_nodes, d_max, n_q_max):
    xs = np.empty(BLOCK * n_features, np.float32)
    dec = np.zeros((max(max_tree_nodes, 1), BLOCK), np.bool_)
    A = np.empty((d_max + 1, BLOCK), np.float64)
    F = np.empty((d_max + 1, n_q_max, BLOCK), np.float64)
    S = np.empty((n_q_max, BLOCK), np.float64)
    T = np.empty(BLOCK, np.float64)
    C = np.empty((n_groups, n_features, BLOCK), np.float64)
    return xs, dec, A, F, S, T, C


@njit(nogil=True, cache=True)
def explain_serial(X, out, d_max, transform, any_transform, no_neg, feature, threshold, flags,
                   cat_set, cat_bounds, cat_bits, tree_group, leaf_value, leaf_width,
                   tree_leaf_start, tree_node_start, leaf_order, node_order, leaf_elem_start,
                   elem_feature, elem_zero, elem_edge_start, edge_node, edge_right, quad_t,
                   quad_w):
    max_nodes = np.max(np.diff(tree_node_start)) if tree_node_start.shape[0] > 1 else 0
    xs, dec, A, F, S, T, C = _scratch(X.shape[1], out.shape[1], max_nodes, d_max, quad_t.shape[1])
    for b in range((X.shape[0] + BLOCK - 1) // BLOCK):
        _explain_block(X, out, b, xs, dec, A, F, S, T, C, transform, any_transform, no_neg, feature,
                       threshold, flags, cat_set, cat_bounds, cat_bits, tree_group, leaf_value,
                       leaf_width, tree_leaf_start, tree_node_start, leaf_order, node_order,
                       leaf_elem_start, elem_feature, elem_zero, elem_edge_start, edge_node,
                       edge_right, quad_t, quad_w)


@njit(nogil=True, cache=True, parallel=True)
def explain_parallel(X, out, d_max, transform, any_transform, no_neg, feature, threshold, flags,
                     cat_set, cat_bounds, cat_bits, tree_group, leaf_value, leaf_width,
                     tree_leaf_start, tree_node_start, leaf_order, node_order, leaf_elem_start,
                     elem_feature, elem_zero, elem_edge_start, edge_node, edge_right, quad_t,
                     quad_w):
    max_nodes = np.max(np.diff(tree_node_start)) if tree_node_start.shape[0] > 1 else 0
    for b in prange((X.shape[0] + BLOCK - 1) // BLOCK):
        xs, dec, A, F, S, T, C = _scratch(X.shape[1], out.shape[1], max_nodes, d_max, quad_t.shape[1])
        _explain_block(X, out, b, xs, dec, A, F, S, T, C, transform, any_transform, no_neg, feature,
                       threshold, flags, cat_set, cat_bounds, cat_bits, tree_group, leaf_value,
                       leaf_width, tree_leaf_start, tree_node_start, leaf_order, node_order,
                       leaf_elem_start, elem_feature, elem_zero, elem_edge_start, edge_node,
                       edge_right, quad_t, quad_w)


def contributions(arrays: dict[str, np.ndarray], paths: TreePaths, X: np.ndarray, n_groups: int,
                  leaf_width: int, divisor: float, *, parallel: bool | None = None) -> np.ndarray:
    """(n, n_groups, n_features + 1) float64 contributions of ``X`` (float32, C or F order),
    bias last, through the ensemble's ``arrays`` and its ``paths``."""
    n, n_features = X.shape
    out = np.zeros((n, n_groups, n_features + 1), np.float64)
    if n:
        transform = arrays["feature_transform"]
        d_max = int(np.diff(paths.leaf_elem_start).max(initial=0))
        ensemble = (transform, bool(np.any(transform)),
                    np.zeros(0, np.int64), arrays["node_feature"], arrays["node_threshold"], arrays["node_flags"],
                    arrays["node_cat_set"], arrays["cat_bounds"], arrays["cat_bits"], arrays["tree_group"],
                    arrays["leaf_value"].astype(np.float64), leaf_width, paths.tree_leaf_start, paths.tree_node_start,
                    paths.leaf_order, paths.node_order, paths.leaf_elem_start, paths.elem_feature, paths.elem_zero,
                    paths.elem_edge_start, paths.edge_node, paths.edge_right)
        if n < ROWS_ONE_BY_ONE:
            max_tree_nodes = int(np.diff(paths.tree_node_start).max(initial=0))
            threads.run_kernel(explain_rows, explain_rows, n, X, out, d_max, max_tree_nodes, *ensemble,
                               paths.quad_t, paths.quad_w, force=False)
        else:
            threads.run_kernel(explain_serial, explain_parallel, n, X, out, d_max, *ensemble,
                               paths.quad_t, paths.quad_w, force=parallel)
        if divisor != 1.0:
            out[:, :, :n_features] /= divisor
    out[:, :, n_features] = paths.bias
    return out
