"""From the canonical arrays of an ensemble to the arrays the kernels walk.

Two steps (see ``tree_kernels`` for the why): the *kernel form* mirrors every numerical
node whose NaN goes right onto a negated copy of its feature, so that NaN always takes the
first child; then the nodes are laid out *complete* (level order, padded) or *compact*
(per tree, depth-first, leaves as self-loops).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
    threshold: np.ndarray
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
        leaf = arrays["leaf_value"].astype(acc_dtype)
        leaf_dtype = acc_dtype
    else:  # lay out leaf numbers, then expand each to its vector
        leaf = np.arange(arrays["leaf_value"].size // leaf_width, dtype=np.int64)
        leaf_dtype = np.int64
    depth = K.tree_depths(roots, children)
    n_trees = roots.size
    node_off = np.zeros(n_trees, np.int64)
    leaf_off = np.zeros(n_trees, np.int64)
    flags = arrays["node_flags"]
    has_cat = bool(np.any(flags & K.FLAG_CATEGORICAL))
    if layout == "complete":
        n_slots = (np.int64(1) << depth.astype(np.int64)) - 1
        feature_out = np.empty(int(n_slots.sum()), index_dtype)
        threshold_out = np.empty(int(n_slots.sum()), np.float32)
        leaf_out = np.empty(int((n_slots + 1).sum()), leaf_dtype)
        K.build_complete(roots, depth, feature, threshold, children, leaf, feature_out,
                         threshold_out, leaf_out, node_off, leaf_off)
        children_out = np.zeros(0, np.uint32)
        n_int = np.zeros(0, np.int64)
        flags_out = np.zeros(0, np.uint8)
        cat_set_out = np.zeros(0, np.int32)
        code = K.LAYOUT_COMPLETE
    else:
        n_int, n_leaf = K.compact_sizes(roots, children)
        n_nodes = int((n_int + n_leaf).sum())
        feature_out = np.empty(n_nodes, index_dtype)
        threshold_out = np.empty(n_nodes, np.float32)
        children_out = np.empty(2 * n_nodes, np.uint32)
        flags_out = np.empty(n_nodes, np.uint8)
        cat_set_out = np.empty(n_nodes, np.int32)
        leaf_out = np.empty(int(n_leaf.sum()), leaf_dtype)
        K.build_compact(roots, feature, threshold, children, flags, arrays["node_cat_set"], leaf,
                        n_int, feature_out, threshold_out, children_out, flags_out,
                        cat_set_out, leaf_out, node_off, leaf_off)
        code = K.LAYOUT_COMPACT_CATEGORICAL if has_cat else K.LAYOUT_COMPACT
    if leaf_width != 1:
        vectors = arrays["leaf_value"].astype(acc_dtype).reshape(-1, leaf_width)
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
    with np.errstate(invalid="ignore"):
        out = np.nextafter(-s, np.float32(np.inf))
    out[np.isnan(s)] = -np.inf
    out[s == -np.inf] = np.nan
    return out.astype(np.float32)
