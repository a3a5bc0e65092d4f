"""From the canonical arrays of an ensemble to the arrays the kernels walk.

Two steps (see ``tree_kernels`` for the why): the *kernel form* mirrors every numerical
node whose NaN goes right onto a negated copy of its feature, so that NaN always takes the
first child; then the nodes are laid out *complete* (level order, padded) or *compact*
(per tree, depth-first, leaves as self-loops) by the numba builders at the end, which
also measure the trees (depths, reachable nodes) for ``ensemble``'s checks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from scoring_core.trees import tree_kernels as K

# Input rules after which a feature can still hold NaN at a numerical node.
_NAN_REACHES = (K.TRANSFORM_NONE, K.TRANSFORM_LGB_KEEP_NAN, K.TRANSFORM_LGB_ZERO_IS_MISSING)


class KernelArrays(NamedTuple):
    """The kernel arguments after ``X`` and ``out``, in ``predict_serial``'s order
    (``divisor``, ``link`` and ``link_scale`` follow them)."""

    layout: int
    transform: np.ndarray
    any_transform: bool
    neg_cols: np.ndarray
    base_margin: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray  # float32, the categorical layout's (empty in the others)
    threshold_key: np.ndarray  # int32 order keys, the numerical layouts' (empty in it)
    children: np.ndarray
    leaf: np.ndarray
    node_off: np.ndarray
    leaf_off: np.ndarray
    n_internal: np.ndarray
    depth: np.ndarray
    group: np.ndarray
    flags: np.ndarray
    cat_set: np.ndarray
    cat_bounds: np.ndarray
    cat_bits: np.ndarray
    leaf_width: int


def kernel_arrays(arrays: dict[str, np.ndarray], layout: str, acc_dtype: type,
                  leaf_width: int = 1) -> KernelArrays:
    """Lay out validated canonical ``arrays`` for the kernels. With ``leaf_width`` > 1
    every leaf is that many consecutive values (one per group)."""
    transform = arrays["feature_transform"]
    n_features = transform.size
    roots = arrays["tree_root"]
    feature, threshold, children, neg_cols = kernel_form(arrays)
    index_dtype = np.uint16 if n_features + neg_cols.size <= np.iinfo(np.uint16).max else np.uint32
    if leaf_width == 1:
        leaf: np.ndarray = arrays["leaf_value"].astype(acc_dtype)
        leaf_dtype = acc_dtype
    else:  # lay out leaf numbers, then expand each to its vector
        leaf = np.arange(arrays["leaf_value"].size // leaf_width, dtype=np.int64)
        leaf_dtype = np.int64
    depth = tree_depths(roots, children)
    n_trees = roots.size
    node_off = np.zeros(n_trees, np.int64)
    leaf_off = np.zeros(n_trees, np.int64)
    flags = arrays["node_flags"]
    has_cat = bool(np.any(flags & K.FLAG_CATEGORICAL))
    if layout == "complete":
        n_slots = (np.int64(1) << depth.astype(np.int64)) - 1
        feature_out = np.empty(int(n_slots.sum()), index_dtype)
        threshold_out = np.empty(int(n_slots.sum()), np.float32)
        leaf_out: np.ndarray = np.empty(int((n_slots + 1).sum()), leaf_dtype)
        build_complete(roots, depth, feature, threshold, children, leaf, feature_out,
                         threshold_out, leaf_out, node_off, leaf_off)
        children_out = np.zeros(0, np.uint32)
        n_int = np.zeros(0, np.int64)
        flags_out = np.zeros(0, np.uint8)
        cat_set_out = np.zeros(0, np.int32)
        code = K.LAYOUT_COMPLETE
    else:
        n_int, n_leaf = compact_sizes(roots, children)
        n_nodes = int((n_int + n_leaf).sum())
        feature_out = np.empty(n_nodes, index_dtype)
        threshold_out = np.empty(n_nodes, np.float32)
        children_out = np.empty(2 * n_nodes, np.uint32)
        flags_out = np.empty(n_nodes, np.uint8)
        cat_set_out = np.empty(n_nodes, np.int32)
        leaf_out = np.empty(int(n_leaf.sum()), leaf_dtype)
        build_compact(roots, feature, threshold, children, flags, arrays["node_cat_set"], leaf,
                        n_int, feature_out, threshold_out, children_out, flags_out,
                        cat_set_out, leaf_out, node_off, leaf_off)
        code = K.LAYOUT_COMPACT_CATEGORICAL if has_cat else K.LAYOUT_COMPACT
    if code == K.LAYOUT_COMPACT_CATEGORICAL:
        threshold_key = np.zeros(0, np.int32)
    else:
        threshold_key, threshold_out = K.order_keys(threshold_out), np.zeros(0, np.float32)
    if leaf_width != 1:
        vectors: np.ndarray = arrays["leaf_value"].astype(acc_dtype).reshape(-1, leaf_width)
        leaf_out = np.ascontiguousarray(vectors[leaf_out].reshape(-1))
        leaf_off = leaf_off * leaf_width
    return KernelArrays(
        layout=code,
        transform=transform,
        any_transform=bool(np.any(transform != K.TRANSFORM_NONE)),
        neg_cols=neg_cols,
        base_margin=arrays["base_margin"].astype(acc_dtype),
        feature=feature_out,
        threshold=threshold_out,
        threshold_key=threshold_key,
        children=children_out,
        leaf=leaf_out,
        node_off=node_off,
        leaf_off=leaf_off,
        n_internal=n_int,
        depth=depth,
        group=arrays["tree_group"],
        flags=flags_out,
        cat_set=cat_set_out,
        cat_bounds=arrays["cat_bounds"],
        cat_bits=arrays["cat_bits"],
        leaf_width=int(leaf_width),
    )


def kernel_form(
    arrays: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(feature, threshold, children, neg_cols) with NaN-right numerical nodes mirrored:
    such a node tests column ``n_features + j`` (``-x`` of feature ``neg_cols[j]``)
    against ``mirror_threshold(t)`` and has its children swapped."""
    transform = arrays["feature_transform"]
    n_features = transform.size
    feature = arrays["node_feature"].astype(np.int64)
    flags = arrays["node_flags"]
    nan_reaches = np.isin(transform, _NAN_REACHES)
    flip = ((flags & K.FLAG_CATEGORICAL) == 0) & ((flags & K.FLAG_NAN_RIGHT) != 0) \
        & nan_reaches[feature]
    neg_cols = np.unique(feature[flip]).astype(np.int32)
    column = np.arange(n_features, dtype=np.int64)
    column[neg_cols] = n_features + np.arange(neg_cols.size)
    feature = np.where(flip, column[feature], feature)
    threshold = arrays["node_threshold"].copy()
    threshold[flip] = mirror_threshold(threshold[flip])
    children = arrays["node_children"].astype(np.int64).reshape(-1, 2)
    children[flip] = children[flip, ::-1]
    return feature, threshold, children.reshape(-1), neg_cols


def mirror_threshold(s: np.ndarray) -> np.ndarray:
    """``s'`` with ``-x >= s'`` exactly when ``x < s``, for every non-NaN float32 ``x``
    (and ``s`` as stored: a NaN ``s`` sends nothing right, so ``s'`` sends everything)."""
    s = np.asarray(s, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # nextafter(max, inf) is inf, as meant
        out = np.nextafter(-s, np.float32(np.inf))
    out[np.isnan(s)] = -np.inf
    out[s == -np.inf] = np.nan
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Layout builders (run once per ensemble at load time), from canonical global arrays:
# ``tree_root`` and ``children`` hold node ids ``>= 0`` or ``~leaf``.


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


@njit(nogil=True, cache=True)
def build_complete(tree_root, depths, feature, threshold, children, leaf, feature_out,
                   threshold_out, leaf_out, node_off, leaf_off):
    """Fill the complete level-order layout from kernel-form nodes. A leaf above its
    tree's full depth becomes padding whose whole subtree holds that leaf's value, so any
    descent reaches it."""
    no = 0
    lo = 0
    for t in range(tree_root.shape[0]):
        d = depths[t]
        n_slots = (1 << d) - 1
        node_off[t] = no
        leaf_off[t] = lo
        src = np.empty(2 * n_slots + 1, np.int64)
        src[0] = tree_root[t]
        for p in range(n_slots):
            s = src[p]
            if s >= 0:
                feature_out[no + p] = feature[s]
                threshold_out[no + p] = threshold[s]
                src[2 * p + 1] = children[2 * s]
                src[2 * p + 2] = children[2 * s + 1]
            else:
                feature_out[no + p] = 0
                threshold_out[no + p] = 0.0
                src[2 * p + 1] = s
                src[2 * p + 2] = s
        for q in range(n_slots + 1):
            leaf_out[lo + q] = leaf[~src[n_slots + q]]
        no += n_slots
        lo += n_slots + 1


@njit(nogil=True, cache=True)
def compact_sizes(tree_root, children):
    """(internal nodes, leaves) of every tree."""
    n_trees = tree_root.shape[0]
    n_int = np.zeros(n_trees, np.int64)
    n_leaf = np.zeros(n_trees, np.int64)
    stack = np.empty(max(1, children.shape[0] + 1), np.int64)
    for t in range(n_trees):
        top = 0
        stack[0] = tree_root[t]
        while top >= 0:
            node = stack[top]
            top -= 1
            if node < 0:
                n_leaf[t] += 1
                continue
            n_int[t] += 1
            top += 1
            stack[top] = children[2 * node + 1]
            top += 1
            stack[top] = children[2 * node]
    return n_int, n_leaf


@njit(nogil=True, cache=True)
def build_compact(tree_root, feature, threshold, children, flags, cat_set, leaf, n_int,
                  feature_out, threshold_out, children_out, flags_out, cat_set_out,
                  leaf_out, node_off, leaf_off):
    """Fill the compact layout from kernel-form nodes: per tree, internal nodes in
    depth-first order (a left child right after its parent), then the leaves, each a node
    whose children are itself."""
    stack = np.empty(max(1, children.shape[0] + 1), np.int64)
    where = np.empty(max(1, children.shape[0] + 1), np.int64)  # (parent slot * 2 + side)
    no = 0
    lo = 0
    for t in range(tree_root.shape[0]):
        node_off[t] = no
        leaf_off[t] = lo
        k_int = n_int[t]
        next_int = 0
        next_leaf = 0
        top = 0
        stack[0] = tree_root[t]
        where[0] = -1
        while top >= 0:
            node = stack[top]
            slot_ref = where[top]
            top -= 1
            if node < 0:
                local = k_int + next_leaf
                leaf_out[lo + next_leaf] = leaf[~node]
                feature_out[no + local] = 0
                threshold_out[no + local] = 0.0
                flags_out[no + local] = 0
                cat_set_out[no + local] = -1
                children_out[2 * (no + local)] = local
                children_out[2 * (no + local) + 1] = local
                next_leaf += 1
            else:
                local = next_int
                feature_out[no + local] = feature[node]
                threshold_out[no + local] = threshold[node]
                flags_out[no + local] = flags[node]
                cat_set_out[no + local] = cat_set[node]
                next_int += 1
                top += 1
                stack[top] = children[2 * node + 1]
                where[top] = 2 * local + 1
                top += 1
                stack[top] = children[2 * node]
                where[top] = 2 * local
            if slot_ref >= 0:
                children_out[2 * no + slot_ref] = local
        no += k_int + next_leaf
        lo += next_leaf
