"""Collects trees, in the ensemble's canonical node form, while a converter reads a model.

The canonical form is the compact layout of ``tree_kernels``: internal nodes only, flat over
all trees, children in ``children[2*node + right]`` with ``~leaf`` for a leaf; a tree that
is a single leaf has root ``~leaf``. Thresholds are already float32 "right iff x >= t".

Covers (the training weight that reached each node: XGBoost's hessian sums, LightGBM's and
scikit-learn's sample counts) are what path-dependent TreeSHAP (``scoring_core.explain``)
weighs the branches by. A converter passes them with every tree; if any tree comes
without, the ensemble has none (``node_cover``/``leaf_cover`` absent) and cannot explain.
"""

from __future__ import annotations

import numpy as np


class EnsembleBuilder:
    """Appends trees and categorical bitsets; ``arrays()`` returns the canonical arrays."""

    def __init__(self, leaf_dtype: type) -> None:
        self._leaf_dtype = np.dtype(leaf_dtype)
        self._roots: list[int] = []
        self._groups: list[int] = []
        self._feature: list[np.ndarray] = []
        self._threshold: list[np.ndarray] = []
        self._flags: list[np.ndarray] = []
        self._cat_set: list[np.ndarray] = []
        self._children: list[np.ndarray] = []
        self._leaves: list[np.ndarray] = []
        self._n_nodes = 0
        self._n_leaves = 0
        self._cat_bits: list[np.ndarray] = []
        self._cat_bounds: list[int] = [0]
        self._node_cover: list[np.ndarray] = []
        self._leaf_cover: list[np.ndarray] = []
        self._covered = True

    def add_category_set(self, words: np.ndarray) -> int:
        """Store a bitset (uint32 words, bit ``v & 31`` of word ``v >> 5`` is category v);
        returns its index for ``cat_set``."""
        words = np.asarray(words, dtype=np.uint32)
        self._cat_bits.append(words)
        self._cat_bounds.append(self._cat_bounds[-1] + int(words.size))
        return len(self._cat_bounds) - 2

    def add_tree(
        self,
        group: int,
        feature: np.ndarray,
        threshold: np.ndarray,
        flags: np.ndarray,
        cat_set: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        leaf_value: np.ndarray,
        node_cover: np.ndarray | None = None,
        leaf_cover: np.ndarray | None = None,
    ) -> None:
        """Append one tree in local numbering: internal nodes ``0..k-1`` with node 0 the root
        (none for a single-leaf tree), children ``>= 0`` internal, ``~j`` leaf ``j``.
        ``leaf_value`` is 1-D, or 2-D (n_leaves, leaf_width) for vector leaves.
        ``node_cover`` (k) and ``leaf_cover`` (n_leaves): each node's cover, or None."""
        k = int(len(feature))
        leaf_value = np.asarray(leaf_value, dtype=self._leaf_dtype)
        n_leaves = leaf_value.shape[0] if leaf_value.ndim == 2 else leaf_value.size
        leaf_value = leaf_value.reshape(-1)
        if node_cover is None or leaf_cover is None:
            self._covered = False
        else:
            node_cover = np.asarray(node_cover, np.float64).reshape(-1)
            leaf_cover = np.asarray(leaf_cover, np.float64).reshape(-1)
            if node_cover.size != k or leaf_cover.size != n_leaves:
                raise ValueError(f"covers: {node_cover.size} node and {leaf_cover.size} leaf covers "
                                 f"for {k} nodes and {n_leaves} leaves")
            self._node_cover.append(node_cover)
            self._leaf_cover.append(leaf_cover)
        if k == 0:
            self._roots.append(~self._n_leaves)
        else:
            self._roots.append(self._n_nodes)
            children = np.empty(2 * k, np.int64)
            children[0::2] = left
            children[1::2] = right
            internal = children >= 0
            children[internal] += self._n_nodes
            children[~internal] -= self._n_leaves  # ~j -> ~(j + n_leaves)
            self._feature.append(np.asarray(feature, np.int32))
            self._threshold.append(np.asarray(threshold, np.float32))
            self._flags.append(np.asarray(flags, np.uint8))
            self._cat_set.append(np.asarray(cat_set, np.int32))
            self._children.append(children.astype(np.int32))
        self._groups.append(int(group))
        self._leaves.append(leaf_value)
        self._n_nodes += k
        self._n_leaves += int(n_leaves)

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        covers = {}
        if self._covered:
            covers = {"node_cover": cat(self._node_cover, np.float64),
                      "leaf_cover": cat(self._leaf_cover, np.float64)}
        return {
            **covers,
            "tree_root": np.asarray(self._roots, np.int32),
            "tree_group": np.asarray(self._groups, np.int32),
            "node_feature": cat(self._feature, np.int32),
            "node_threshold": cat(self._threshold, np.float32),
            "node_flags": cat(self._flags, np.uint8),
            "node_cat_set": cat(self._cat_set, np.int32),
            "node_children": cat(self._children, np.int32),
            "leaf_value": cat(self._leaves, self._leaf_dtype.type),
            "cat_bounds": np.asarray(self._cat_bounds, np.int32),
            "cat_bits": cat(self._cat_bits, np.uint32),
        }


def bitset_from_categories(categories: np.ndarray) -> np.ndarray:
    """uint32 words with bit ``c & 31`` of word ``c >> 5`` set for each category ``c``."""
    categories = np.asarray(categories, dtype=np.int64)
    if categories.size == 0:
        return np.zeros(1, np.uint32)
    words = np.zeros(int(categories.max()) // 32 + 1, np.uint32)
    np.bitwise_or.at(words, categories >> 5, (np.uint32(1) << (categories & 31).astype(np.uint32)))
    return words


def smallest_float32_above(t: np.ndarray) -> np.ndarray:
    """For each double ``t``, the smallest float32 ``s > t``: for float32 ``x``,
    ``x <= t`` (compared in double) exactly when ``x < s``, i.e. unless ``x >= s``, the
    kernels' "right" test. A ``+inf`` threshold (every value goes left, +inf included)
    has no float32 above it and becomes NaN, which no ``x >= s`` passes. Rounding ``t``
    to the nearest float32 instead would send an ``x`` between ``t`` and its rounding the
    wrong way."""
    t = np.asarray(t, np.float64)
    with np.errstate(over="ignore"):
        nearest = t.astype(np.float32)
    above = nearest.astype(np.float64) > t
    s = np.where(above, nearest, np.nextafter(nearest, np.float32(np.inf))).astype(np.float32)
    s[t == np.inf] = np.nan
    return s


def covers_from_leaves(left: np.ndarray, right: np.ndarray, leaf_cover: np.ndarray) -> np.ndarray:
    """Internal-node covers of one tree in local numbering (``add_tree``'s), each the sum of
    its children's: for sources that store a weight a leaf only (CatBoost, Spark)."""
    left = np.asarray(left, np.int64)
    right = np.asarray(right, np.int64)
    leaf_cover = np.asarray(leaf_cover, np.float64)
    cover = np.full(left.size, np.nan)

    def of(child: int) -> float:
        return float(leaf_cover[~child]) if child < 0 else float(cover[child])

    # Children come after their parent in both numberings the converters use (depth-first
    # or level order), so one pass from the last node back fills every internal node.
    for j in range(left.size - 1, -1, -1):
        cover[j] = of(int(left[j])) + of(int(right[j]))
    if np.isnan(cover).any():
        raise ValueError("covers_from_leaves: a child is numbered before its parent")
    return cover
