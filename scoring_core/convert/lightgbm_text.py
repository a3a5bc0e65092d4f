"""LightGBM's text model (``Booster.model_to_string()``, ``save_model("m.txt")``) to IR.

What LightGBM's predictor does (``tree.h`` ``NumericalDecision``/``CategoricalDecision``,
``c_api.cpp`` row functions), and this converter reproduces:

- values with ``|x| <= 1e-35`` are dropped from a dense row, so they score as 0.0;
- a numerical node sends ``x`` left iff ``x <= threshold`` compared in double. Missing type
  (``decision_type`` bits 2-3) None: NaN scores as 0.0; NaN: NaN goes the default side
  (bit 1, default left); Zero: NaN and 0.0 go the default side. The missing type is the
  feature's (its bin mapper's), so it becomes a per-feature input rule here;
- a categorical node (bit 0) sends the integer ``x`` left iff it is in the node's bitset
  (``cat_boundaries``/``cat_threshold``); NaN and negatives go right;
- the raw score sums the float64 leaves of each class's trees (class ``i % num_tree_per_
  iteration``), divides by the number of iterations in random-forest mode
  (``average_output``), then applies the objective's output function. Init scores are
  already inside the leaves;
- each node's cover, for TreeSHAP, is its ``internal_count``/``leaf_count`` (what
  ``pred_contrib`` uses).

Thresholds become float32 for the kernels without changing a branch for any float32 input:
``x <= t`` in double is ``x < s`` for ``s`` the smallest float32 above ``t``, and that is the
kernels' "right iff x >= s". Rounding ``t`` to the nearest float32 instead would send an ``x``
lying between ``t`` and its rounding the wrong way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.dumps import reading_model, wrapper_classes
from scoring_core.string_inputs import StringColumn
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder
from scoring_core.trees.builder import smallest_float32_above as _smallest_float32_above
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout

# objective -> (task, link); "sigmoid" takes the model's sigmoid parameter as its scale
_OBJECTIVES: dict[str, tuple[str, str]] = {
    "regression": ("regression", "identity"),
    "regression_l1": ("regression", "identity"),
    "huber": ("regression", "identity"),
    "fair": ("regression", "identity"),
    "quantile": ("regression", "identity"),
    "mape": ("regression", "identity"),
    "poisson": ("regression", "exp"),
    "gamma": ("regression", "exp"),
    "tweedie": ("regression", "exp"),
    "binary": ("classification", "sigmoid"),
    "multiclass": ("classification", "softmax"),
    "multiclassova": ("classification", "sigmoid"),
    "cross_entropy": ("regression", "sigmoid"),
    "cross_entropy_lambda": ("regression", "log1p_exp"),
    # a custom objective: LightGBM predicts raw scores
    "custom": ("regression", "identity"),
    "none": ("regression", "identity"),
}
_MISSING_TO_TRANSFORM = {
    0: K.TRANSFORM_LGB_NAN_TO_ZERO,  # None
    1: K.TRANSFORM_LGB_ZERO_IS_MISSING,  # Zero
    2: K.TRANSFORM_LGB_KEEP_NAN,  # NaN
}


def from_lightgbm_text(source: Any) -> TreeEnsemble:
    """Convert a LightGBM model to a ``TreeEnsemble``.

    ``source``: a path (str or Path) to a text model, the model string, or a
    ``lightgbm.Booster`` / ``LGBMClassifier`` / ``LGBMRegressor`` (read through
    ``model_to_string()``). Raises ``Unimplemented`` for objectives and options it does not
    score (ranking, linear trees) and ``InvalidArgument`` for a malformed model.
    """
    text, classes = _load(source)
    with reading_model("LightGBM text model"):
        return _convert(text, classes)


def pandas_categories(source: Any) -> dict[int, StringColumn]:
    """The categorical columns of a model trained on a pandas DataFrame with ``category``
    columns: feature index -> its categories (strings, numbers or booleans), in the order
    pandas coded them. LightGBM keeps them as ``pandas_categorical`` and maps a DataFrame
    through them by value at predict (a value outside them, or a null, is missing there and
    code -1 here, which no category split matches); a matrix it reads as the codes
    themselves, and so does the core for a column of plain numbers (``numbers="code"``)."""
    text, _ = _load(source)
    listed: Any = None
    features: list[int] = []
    for line in text.splitlines():
        if line.startswith("pandas_categorical:"):
            payload = line.partition(":")[2].strip()
            listed = json.loads(payload) if payload and payload != "null" else None
        elif line.startswith("[categorical_feature:"):
            features = [int(v) for v in line.strip("[]").partition(":")[2].replace(",", " ").split()]
    if not listed:
        return {}
    if len(listed) != len(features):
        raise Unimplemented(f"LightGBM model: {len(listed)} pandas category lists for categorical features "
                            f"{features}; train with categorical_feature='auto' to serve pandas categoricals")
    columns = {}
    for index, categories in zip(features, listed):
        try:
            columns[index] = StringColumn(tuple(categories), unknown="code", numbers="code")
        except InvalidArgument as err:
            raise Unimplemented(f"LightGBM model: feature {index} has pandas categories "
                                f"({categories[:3]!r}...) that cannot be served: {err}") from err
    return columns


def _load(source: Any) -> tuple[str, list | None]:
    classes = None
    if hasattr(source, "booster_"):  # scikit-learn wrapper
        classes = wrapper_classes(source) if hasattr(source, "predict_proba") else None
        source = source.booster_
    if hasattr(source, "model_to_string"):
        return source.model_to_string(), classes
    if isinstance(source, (bytes, bytearray)):
        source = bytes(source).decode("utf-8", errors="replace")
        if _looks_like_model(source):
            return source, classes
    if isinstance(source, str) and _looks_like_model(source):
        return source, classes
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_text(encoding="utf-8", errors="replace"), classes
        except OSError as err:
            raise InvalidArgument(f"LightGBM text model: cannot read {source}: {err}") from err
    raise InvalidArgument("LightGBM model source: expected a path, model text or a Booster, "
                          f"got {type(source).__name__}")


def _looks_like_model(text: str) -> bool:
    head = text.lstrip()[:4096]
    return "\n" in head and ("version=" in head or head.startswith("tree"))


def _sections(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Header key=values (a bare line such as ``average_output`` maps to ""), then one
    key=value dict per ``Tree=`` block, up to ``end of trees``."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line == "end of trees":
            break
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return header, trees


def _convert(text: str, classes: list | None) -> TreeEnsemble:
    header, trees = _sections(text)
    if "version" not in header or "max_feature_idx" not in header:
        raise InvalidArgument("LightGBM text model: no header (version, max_feature_idx)")
    words = header.get("objective", "custom").split()
    name = words[0] if words else "custom"
    options = dict(w.split(":", 1) for w in words[1:] if ":" in w)
    if name not in _OBJECTIVES:
        kind = "ranking objectives score lists, not rows; " if "rank" in name else ""
        raise Unimplemented(f"LightGBM objective {name!r} is not supported ({kind}supported: "
                            f"{', '.join(sorted(_OBJECTIVES))})")
    task, link = _OBJECTIVES[name]
    link_scale = 1.0
    if name in ("binary", "multiclassova"):
        link_scale = float(options.get("sigmoid", "1"))
    if name == "regression" and "sqrt" in words[1:]:
        link = "signed_square"

    n_features = int(header["max_feature_idx"]) + 1
    n_groups = int(header.get("num_tree_per_iteration", header.get("num_class", "1")))
    if n_groups < 1 or not trees or len(trees) % n_groups:
        raise InvalidArgument(f"LightGBM text model: {len(trees)} trees for {n_groups} classes")

    builder = EnsembleBuilder(np.float64)
    missing = np.full(n_features, -1, np.int64)  # per feature: -1 unused, 0..2 type, 3 categorical
    for i, tree in enumerate(trees):
        _add_tree(builder, tree, i % n_groups, n_features, missing, i)

    arrays = builder.arrays()
    transform = np.zeros(n_features, np.uint8)
    for code, rule in _MISSING_TO_TRANSFORM.items():
        transform[missing == code] = rule
    transform[missing == 3] = K.TRANSFORM_LGB_CATEGORY
    arrays["feature_transform"] = transform
    arrays["base_margin"] = np.zeros(n_groups, np.float64)
    names = header.get("feature_names", "").split()
    if len(names) != n_features:
        names = [f"f{i}" for i in range(n_features)]
    if task == "classification" and classes is None:
        classes = list(range(max(n_groups, 2)))
    params = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "lightgbm",
        "source_version": header.get("version", ""),
        "objective": header.get("objective", "custom"),
        "task": task,
        "classes": classes if task == "classification" else None,
        "n_features": n_features,
        "feature_names": names,
        "n_groups": n_groups,
        "link": link,
        "link_scale": link_scale,
        "divisor": float(len(trees) // n_groups) if "average_output" in header else 1.0,
        "accumulate": "float64",
        "layout": choose_layout(arrays),
    }
    return TreeEnsemble(params, arrays)


def _floats(tree: dict[str, str], key: str) -> np.ndarray:
    return np.asarray([float(v) for v in tree[key].split()], np.float64)


def _ints(tree: dict[str, str], key: str) -> np.ndarray:
    return np.asarray([int(v) for v in tree[key].split()], np.int64)


def _add_tree(builder: EnsembleBuilder, tree: dict[str, str], group: int, n_features: int,
              missing: np.ndarray, index: int) -> None:
    if tree.get("is_linear", "0") != "0":
        raise Unimplemented("LightGBM linear trees (linear_tree=True) are not supported")
    n_leaves = int(tree["num_leaves"])
    leaf_value = _floats(tree, "leaf_value")
    if n_leaves < 1 or leaf_value.size != n_leaves:
        raise InvalidArgument(f"LightGBM text model: tree {index} has a bad leaf count")
    leaf_cover = _floats(tree, "leaf_count") if "leaf_count" in tree else None
    if n_leaves == 1:
        empty = np.zeros(0, np.int64)
        builder.add_tree(group, empty, empty, empty, empty, empty, empty, leaf_value, empty,
                         np.ones(1) if leaf_cover is None or leaf_cover.size != 1 else leaf_cover)
        return

    feature = _ints(tree, "split_feature")
    threshold = _floats(tree, "threshold")
    decision = _ints(tree, "decision_type")
    left = _ints(tree, "left_child")
    right = _ints(tree, "right_child")
    k = n_leaves - 1
    if not (feature.size == threshold.size == decision.size == left.size == right.size == k):
        raise InvalidArgument(f"LightGBM text model: tree {index} node arrays disagree in length")
    if np.any((feature < 0) | (feature >= n_features)):
        raise InvalidArgument(f"LightGBM text model: tree {index} splits on an unknown feature")
    kids = np.concatenate((left, right))
    if np.any(kids >= k) or np.any(kids == 0) or np.any(~kids[kids < 0] >= n_leaves):
        raise InvalidArgument(f"LightGBM text model: tree {index} has a child out of range")

    is_cat = (decision & 1) != 0
    default_left = (decision & 2) != 0
    missing_type = (decision >> 2) & 3
    flags = np.where(default_left, 0, K.FLAG_NAN_RIGHT).astype(np.uint8)
    cat_set = np.full(k, -1, np.int64)
    thr32 = _smallest_float32_above(threshold)

    if np.any(is_cat):
        bounds = _ints(tree, "cat_boundaries")
        bits = np.asarray([int(v) for v in tree["cat_threshold"].split()], np.uint64)
        for node in np.flatnonzero(is_cat):
            c = int(threshold[node])
            if not 0 <= c < bounds.size - 1 or not 0 <= bounds[c] <= bounds[c + 1] <= bits.size:
                raise InvalidArgument(f"LightGBM text model: tree {index} has a bad category set")
            cat_set[node] = builder.add_category_set(bits[bounds[c]:bounds[c + 1]].astype(np.uint32))
        flags[is_cat] = K.FLAG_CATEGORICAL | K.FLAG_NAN_RIGHT  # members left; NaN right
        thr32[is_cat] = 0.0

    for j in range(k):
        code = 3 if is_cat[j] else int(missing_type[j])
        f = int(feature[j])
        if missing[f] == -1:
            missing[f] = code
        elif missing[f] != code:
            raise InvalidArgument(
                f"LightGBM text model: feature {f} has splits of different kinds or missing types")

    node_cover = _floats(tree, "internal_count") if "internal_count" in tree else None
    if node_cover is None or leaf_cover is None or node_cover.size != k or leaf_cover.size != n_leaves:
        node_cover = leaf_cover = None
    builder.add_tree(group, feature, thr32, flags, cat_set, left, right, leaf_value, node_cover, leaf_cover)
