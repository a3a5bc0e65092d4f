"""The tree-ensemble IR: what a converter produces, what a bundle stores, what scores.

A ``TreeEnsemble`` is a set of trees in one canonical node form (see ``builder``), each
tree adding its leaf to one output group, plus the few numbers that turn the summed
margins into the library's default prediction: a base margin per group, an optional
divisor (LightGBM's random-forest mode), and a link function.

Accumulation follows the source library so that results agree to float rounding:
XGBoost sums float32 leaves in float32 starting from the base margin, tree by tree;
LightGBM sums float64 leaves in float64. The prediction comes back in the library's dtype
(float32 for XGBoost, float64 for LightGBM).

scikit-learn's forests average class distributions: their trees have *vector leaves*
(``params["leaf_width"]`` = n_groups, each leaf ``leaf_width`` consecutive values added to
groups ``0 .. n_groups-1``; ``tree_group`` is then 0) and ``divisor`` is the number of
trees. ``params["probabilities"]`` marks an output that is class probabilities although
the link is not a sigmoid or softmax (an average of leaf distributions). Both are optional
(default 1 and false), so bundles written before them still load.

``node_cover`` and ``leaf_cover`` (float64, one a node and one a leaf) are the covers
TreeSHAP weighs branches by (``builder``); they are optional too, so bundles written
before them still load and score, and ``has_covers`` tells ``scoring_core.explain`` that
such an ensemble cannot be explained.

At load time the canonical arrays are laid out for the kernels; the layout (``complete``
for shallow numerical trees, ``compact`` otherwise) is chosen at conversion and kept in
``params["layout"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core import threads
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.layouts import count_reached, kernel_arrays, tree_depths

FORMAT = "milepost.trees"
FORMAT_VERSION = 1

# Deepest tree the complete layout takes: 2**10 slots a tree keeps 500 trees in a few MiB.
COMPLETE_MAX_DEPTH = 10
COMPLETE_MAX_PADDING = 8
# What from_arrays accepts as complete at all: 2**16 slots a tree.
COMPLETE_HARD_MAX_DEPTH = 16

LINKS = {
    "identity": K.LINK_IDENTITY,
    "sigmoid": K.LINK_SIGMOID,
    "softmax": K.LINK_SOFTMAX,
    "exp": K.LINK_EXP,
    "hinge": K.LINK_HINGE,
    "log1p_exp": K.LINK_LOG1P_EXP,
    "signed_square": K.LINK_SIGNED_SQUARE,
    # margins, then the index of the largest per row (XGBoost multi:softmax)
    "argmax": K.LINK_IDENTITY,
}

_ARRAY_DTYPES = {
    "tree_root": np.int32,
    "tree_group": np.int32,
    "node_feature": np.int32,
    "node_threshold": np.float32,
    "node_flags": np.uint8,
    "node_cat_set": np.int32,
    "node_children": np.int32,
    "cat_bounds": np.int32,
    "cat_bits": np.uint32,
    "feature_transform": np.uint8,
    "base_margin": np.float64,
}
_ACCUMULATE = {"float32": np.float32, "float64": np.float64}
_REQUIRED_PARAMS = ("n_features", "feature_names", "n_groups", "task", "classes", "objective",
                    "link", "link_scale", "divisor", "accumulate", "layout")


class TreeEnsemble:
    """A converted tree ensemble. Build one with ``scoring_core.convert``'s
    ``from_xgboost_json``, ``from_lightgbm_text`` or ``from_sklearn``, or with
    ``TreeEnsemble.from_arrays``."""

    def __init__(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._params, self._arrays = _validate(params, arrays)
        p = self._params
        self.n_features: int = p["n_features"]
        self.feature_names: list[str] = list(p["feature_names"])
        self.n_groups: int = p["n_groups"]
        self.task: str = p["task"]
        self.classes: list | None = None if p["classes"] is None else list(p["classes"])
        self.objective: str = p["objective"]
        self.layout: str = p["layout"]
        self._squeeze = p["link"] == "argmax" or self.n_groups == 1
        self.n_outputs: int = 1 if self._squeeze else self.n_groups
        self._link = LINKS[p["link"]]
        self._link_scale = float(p["link_scale"])
        self._divisor = float(p["divisor"])
        self._acc = _ACCUMULATE[p["accumulate"]]
        self.leaf_width: int = int(p.get("leaf_width", 1))
        self.probabilities: bool = bool(p.get("probabilities", False))
        self.has_covers: bool = "node_cover" in self._arrays
        self._kernel_args = kernel_arrays(self._arrays, self.layout, self._acc, self.leaf_width)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        """Rebuild from what ``to_arrays`` returned (for instance read back from a bundle)."""
        return cls(params, arrays)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able params, named numeric arrays) that ``from_arrays`` takes back."""
        return _json_copy(self._params), {k: v.copy() for k, v in self._arrays.items()}

    # -- scoring ----------------------------------------------------------------------

    def predict(self, X: np.ndarray, *, parallel: bool | None = None) -> np.ndarray:
        """The source library's default prediction for ``X`` (n, n_features), NaN missing.

        ``X`` should be float32, C- or F-ordered; other dtypes are cast to float32 first
        (as XGBoost does; for LightGBM, float64 values not exact in float32 may then take
        another branch than LightGBM's double comparison). Returns (n,) when the model has
        one output, else (n, n_outputs). ``parallel`` forces the kernel choice; by default
        ``threads.parallel_for`` decides, as for every scoring kernel.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidArgument(
                f"X: expected shape (n, {self.n_features}), got {tuple(X.shape)}")
        if X.dtype != np.float32:
            if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
                raise InvalidArgument(f"X: expected a numeric array, got dtype {X.dtype}")
            X = X.astype(np.float32)
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            X = np.ascontiguousarray(X)
        n = X.shape[0]
        out = np.empty((n, self.n_groups), self._acc)
        if n:
            threads.run_kernel(K.predict_serial, K.predict_parallel, n, X, out, *self._kernel_args,
                               self._divisor, self._link, self._link_scale, force=parallel)
        if self._params["link"] == "argmax":
            return out.argmax(axis=1).astype(self._acc)
        return out[:, 0] if self._squeeze else out

    def __repr__(self) -> str:
        return (f"TreeEnsemble(objective={self.objective!r}, "
                f"trees={len(self._arrays['tree_root'])}, n_features={self.n_features}, "
                f"n_outputs={self.n_outputs}, layout={self.layout!r})")


def choose_layout(arrays: dict[str, np.ndarray]) -> str:
    """``complete`` when every node is numerical, no tree is deeper than
    ``COMPLETE_MAX_DEPTH`` and padding at most multiplies the nodes by
    ``COMPLETE_MAX_PADDING``; else ``compact``.

    Measured here on 500-tree models (1 thread): XGBoost depth 8, complete 0.30 vs compact
    0.24 M rows/s; LightGBM 63 leaves, depth <= 8 (4x padding) 0.30 vs 0.25; LightGBM 31
    leaves, depth <= 10 (12x padding) 0.20 vs 0.22.
    """
    if np.any(arrays["node_flags"] & K.FLAG_CATEGORICAL):
        return "compact"
    roots = np.asarray(arrays["tree_root"], np.int32)
    children = np.asarray(arrays["node_children"], np.int32)
    if not roots.size:
        return "complete"
    depths = tree_depths(roots, children).astype(np.int64)
    padded = int(((np.int64(1) << depths) - 1).sum())
    n_internal = children.size // 2
    if depths.max() > COMPLETE_MAX_DEPTH or padded > COMPLETE_MAX_PADDING * n_internal + 1024:
        return "compact"
    return "complete"


def _json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_copy(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _validate(params: dict[str, Any], arrays: dict[str, np.ndarray]
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check a (params, arrays) pair enough that the kernels cannot read out of bounds."""
    def bad(msg: str) -> InvalidArgument:
        return InvalidArgument(f"tree ensemble: {msg}")

    if not isinstance(params, dict) or params.get("format") != FORMAT:
        raise bad(f"params.format must be {FORMAT!r}")
    if params.get("format_version") != FORMAT_VERSION:
        raise Unimplemented(
            f"tree ensemble format_version {params.get('format_version')!r}; "
            f"this build reads {FORMAT_VERSION}")
    p = _json_copy(params)
    missing = [k for k in _REQUIRED_PARAMS if k not in p]
    if missing:
        raise bad(f"params lacks {', '.join(missing)}")
    try:
        n_features = p["n_features"] = int(p["n_features"])
        n_groups = p["n_groups"] = int(p["n_groups"])
        leaf_width = int(p.get("leaf_width", 1))
        if "leaf_width" in p:  # optional keys stay absent when absent: same bundle bytes
            p["leaf_width"] = leaf_width
        p["link_scale"] = float(p["link_scale"])
        p["divisor"] = float(p["divisor"])
    except (TypeError, ValueError) as err:
        raise bad(f"params holds a non-number where a number belongs: {err}") from err
    if n_features < 1 or n_groups < 1:
        raise bad("params.n_features and params.n_groups must be positive")
    if not isinstance(p["feature_names"], list) or len(p["feature_names"]) != n_features:
        raise bad("params.feature_names must be a list of n_features names")
    if p["classes"] is not None and not isinstance(p["classes"], list):
        raise bad("params.classes must be a list or null")
    if leaf_width not in (1, n_groups):
        raise bad("params.leaf_width must be 1 or n_groups")
    if not isinstance(p.get("probabilities", False), bool):
        raise bad("params.probabilities must be true or false")
    if p["link"] not in LINKS:
        raise Unimplemented(f"tree ensemble link {p['link']!r}")
    if p["accumulate"] not in _ACCUMULATE:
        raise bad(f"params.accumulate must be one of {sorted(_ACCUMULATE)}")
    if p["layout"] not in ("complete", "compact"):
        raise bad("params.layout must be 'complete' or 'compact'")
    if p["task"] not in ("classification", "regression"):
        raise bad("params.task must be 'classification' or 'regression'")

    a: dict[str, np.ndarray] = {}
    for name, dtype in _ARRAY_DTYPES.items():
        if name not in arrays:
            raise bad(f"array {name!r} is missing")
        a[name] = _as_1d(name, arrays[name], dtype)
    if "leaf_value" not in arrays:
        raise bad("array 'leaf_value' is missing")
    a["leaf_value"] = _as_1d("leaf_value", arrays["leaf_value"], _ACCUMULATE[p["accumulate"]])

    n_nodes = a["node_feature"].size
    if a["leaf_value"].size % leaf_width:
        raise bad("leaf_value must hold leaf_width values a leaf")
    n_leaves = a["leaf_value"].size // leaf_width
    if ("node_cover" in arrays) != ("leaf_cover" in arrays):
        raise bad("node_cover and leaf_cover come together or not at all")
    if "node_cover" in arrays:
        a["node_cover"] = _as_1d("node_cover", arrays["node_cover"], np.float64)
        a["leaf_cover"] = _as_1d("leaf_cover", arrays["leaf_cover"], np.float64)
        if a["node_cover"].size != n_nodes or a["leaf_cover"].size != n_leaves:
            raise bad("node_cover must have a value a node, leaf_cover one a leaf")
        if not (np.all(np.isfinite(a["node_cover"])) and np.all(np.isfinite(a["leaf_cover"]))) \
                or np.any(a["node_cover"] < 0) or np.any(a["leaf_cover"] < 0):
            raise bad("covers must be finite and non-negative")
    n_sets = a["cat_bounds"].size - 1
    if any(a[k].size != n_nodes for k in ("node_threshold", "node_flags", "node_cat_set")) \
            or a["node_children"].size != 2 * n_nodes:
        raise bad("node arrays disagree in length")
    if a["tree_group"].size != a["tree_root"].size:
        raise bad("tree_root and tree_group disagree in length")
    if a["base_margin"].size != n_groups or a["feature_transform"].size != n_features:
        raise bad("base_margin must have n_groups values, feature_transform n_features")
    if np.any((a["tree_group"] < 0) | (a["tree_group"] >= n_groups)):
        raise bad("tree_group out of range")
    if leaf_width > 1 and np.any(a["tree_group"] != 0):
        raise bad("with vector leaves (leaf_width > 1) every tree_group must be 0")
    if np.any((a["node_feature"] < 0) | (a["node_feature"] >= n_features)):
        raise bad("node_feature out of range")
    for name in ("tree_root", "node_children"):
        ref = a[name]
        if np.any(ref >= n_nodes) or np.any(~ref[ref < 0] >= n_leaves):
            raise bad(f"{name} refers past the nodes or leaves")
    if np.any(a["feature_transform"] > K.TRANSFORM_MAX):
        raise bad("feature_transform holds an unknown code")
    bounds = a["cat_bounds"]
    if bounds.size < 1 or bounds[0] != 0 or np.any(np.diff(bounds) < 0) \
            or bounds[-1] != a["cat_bits"].size:
        raise bad("cat_bounds must rise from 0 to the size of cat_bits")
    is_cat = (a["node_flags"] & K.FLAG_CATEGORICAL) != 0
    if np.any(is_cat & ((a["node_cat_set"] < 0) | (a["node_cat_set"] >= n_sets))):
        raise bad("node_cat_set out of range")
    if np.any(is_cat) and p["layout"] == "complete":
        raise bad("the complete layout takes numerical nodes only")
    _check_acyclic(a["tree_root"], a["node_children"], n_nodes)
    if p["layout"] == "complete" and a["tree_root"].size and COMPLETE_HARD_MAX_DEPTH < int(
            tree_depths(a["tree_root"], a["node_children"]).max()):
        raise bad(f"the complete layout takes trees of depth <= {COMPLETE_HARD_MAX_DEPTH}")
    return p, a


def _as_1d(name: str, value: Any, dtype: type) -> np.ndarray:
    arr = np.asarray(value)
    target: np.dtype[Any] = np.dtype(dtype)
    fits = arr.ndim == 1 and (arr.size == 0 or np.can_cast(arr.dtype, target, "same_kind"))
    if fits and arr.size and target.kind in "iu" and arr.dtype != target:
        info = np.iinfo(target)
        fits = arr.dtype.kind in "iu" and info.min <= arr.min() and arr.max() <= info.max
    if not fits:
        raise InvalidArgument(f"tree ensemble: array {name!r} must be 1-D {target.name}")
    return np.ascontiguousarray(arr, dtype=target)


def _check_acyclic(roots: np.ndarray, children: np.ndarray, n_nodes: int) -> None:
    """Every internal node has exactly one parent (or is one root) and is reached from a
    root: the nodes form trees, so no walk can loop."""
    parents = np.zeros(n_nodes, np.int32)
    targets = np.concatenate((roots, children))
    np.add.at(parents, targets[targets >= 0], 1)
    if np.any(parents != 1) or count_reached(roots, children) != n_nodes:
        raise InvalidArgument("tree ensemble: nodes must form trees (each node one parent)")
