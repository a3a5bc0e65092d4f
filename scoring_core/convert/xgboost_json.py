"""XGBoost's JSON model (``Booster.save_model("m.json")``, ``save_raw("json")``) to IR.

What XGBoost's CPU predictor does, and this converter reproduces:

- a numerical node sends ``x`` left iff ``x < split_condition`` (both float32), a missing
  value (NaN) to its ``default_left`` side; a leaf's value is its ``split_conditions`` entry;
- a categorical node (``split_type`` 1) sends the categories listed for it right and any
  other category left; a negative category, or one >= 2**24, counts as not listed;
- the margin starts at the base score (stored in the user's space since XGBoost 2, and as
  a vector such as ``"[5E-1]"`` since 3.x: mapped to a margin per objective) and adds each
  tree's leaf in float32, tree by tree, into its output group (``tree_info``); dart
  boosters scale each tree by its ``weight_drop``;
- each node's cover, for TreeSHAP, is its ``sum_hessian`` (what ``pred_contribs`` uses).

Like ``Booster.predict``, every tree counts: a model trained with early stopping keeps
the rounds after ``best_iteration`` (the scikit-learn wrapper's ``predict`` stops there).
Categorical features are scored from the integer codes the model was trained on (as with
a numpy input to XGBoost). A model trained on a DataFrame keeps that frame's categories
(``cats``, XGBoost 3.1+), and XGBoost re-codes a DataFrame through them by value at predict,
refusing a category outside them; ``categories`` gives them, so that the core reads pandas
categoricals and Arrow dictionaries the same way (``scoring_core.string_inputs``). The base-score
rules were checked against XGBoost 3.2 (``binary:logitraw`` takes its base score as a
margin there; older releases took its logit).
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
from scoring_core.trees.builder import EnsembleBuilder, bitset_from_categories
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout

# objective -> (task, link, how the stored base score becomes a margin)
_OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "reg:squarederror": ("regression", "identity", "identity"),
    "reg:linear": ("regression", "identity", "identity"),
    "reg:squaredlogerror": ("regression", "identity", "identity"),
    "reg:pseudohubererror": ("regression", "identity", "identity"),
    "reg:absoluteerror": ("regression", "identity", "identity"),
    "reg:quantileerror": ("regression", "identity", "identity"),
    "reg:logistic": ("regression", "sigmoid", "logit"),
    "binary:logistic": ("classification", "sigmoid", "logit"),
    "binary:logitraw": ("classification", "identity", "identity"),
    "binary:hinge": ("classification", "hinge", "identity"),
    "multi:softprob": ("classification", "softmax", "identity"),
    "multi:softmax": ("classification", "argmax", "identity"),
    "count:poisson": ("regression", "exp", "log"),
    "reg:gamma": ("regression", "exp", "log"),
    "reg:tweedie": ("regression", "exp", "log"),
    "survival:cox": ("regression", "exp", "log"),
    "survival:aft": ("regression", "exp", "log"),
}


def from_xgboost_json(source: Any) -> TreeEnsemble:
    """Convert an XGBoost model to a ``TreeEnsemble``.

    ``source``: a path (str or Path) to a ``.json`` model, the JSON text as str or bytes,
    or an ``xgboost.Booster`` / ``XGBClassifier`` / ``XGBRegressor`` (read through
    ``save_raw("json")``, never pickled). Raises ``Unimplemented`` for boosters and
    objectives it does not score (gblinear, ranking, multi-output trees) and
    ``InvalidArgument`` for a document that is not an XGBoost JSON model.
    """
    doc, classes = _load(source)
    with reading_model("XGBoost JSON model"):
        return _convert(doc, classes)


def categories(source: Any) -> dict[int, StringColumn]:
    """The categorical features of a model trained on a DataFrame with ``category`` columns:
    feature index -> its categories (strings or integers), in the order of its codes. An
    unknown category is refused, as XGBoost refuses it (3.2 checks only those sorting after
    every trained one, and quietly takes the next trained category for the others); a null
    is missing; a column of plain numbers is read as the codes themselves, as XGBoost reads
    a matrix."""
    doc, _ = _load(source)
    with reading_model("XGBoost JSON model"):
        booster = doc["learner"]["gradient_booster"]
        model = booster["gbtree"]["model"] if booster.get("name") == "dart" else booster.get("model", {})
        encodings = model.get("cats", {}).get("enc", [])
        types = doc["learner"].get("feature_types") or []
        columns = {}
        for index, entry in enumerate(encodings):
            if index < len(types) and types[index] == "c" and entry.get("values"):
                columns[index] = StringColumn(_category_values(entry), unknown="error", numbers="code")
        return columns


def _category_values(entry: dict) -> tuple[Any, ...]:
    """One feature's categories: strings as UTF-8 bytes cut at ``offsets``, else the numbers."""
    values = entry["values"]
    if "offsets" not in entry:
        return tuple(values)
    data, offsets = bytes(values), entry["offsets"]
    return tuple(data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:]))


def _load(source: Any) -> tuple[dict, list | None]:
    classes = None
    if hasattr(source, "get_booster"):  # scikit-learn wrapper
        classes = wrapper_classes(source)
        source = source.get_booster()
    if hasattr(source, "save_raw"):
        text: bytes | str = bytes(source.save_raw("json"))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        text = bytes(source)
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        text = source
    elif isinstance(source, (str, os.PathLike)):
        try:
            text = Path(source).read_bytes()
        except OSError as err:
            raise InvalidArgument(f"XGBoost JSON model: cannot read {source}: {err}") from err
    else:
        raise InvalidArgument("XGBoost model source: expected a path, JSON text or a Booster, "
                              f"got {type(source).__name__}")
    if isinstance(text, bytes) and not text.lstrip().startswith(b"{"):
        raise InvalidArgument("XGBoost JSON model: not JSON (UBJSON or binary models are not read; "
                              "save with save_model('m.json') or save_raw('json'))")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"XGBoost JSON model: not valid JSON: {err}") from err
    if not isinstance(doc, dict) or "learner" not in doc:
        raise InvalidArgument("XGBoost JSON model: no 'learner' object")
    return doc, classes


def _convert(doc: dict, classes: list | None) -> TreeEnsemble:
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective not in _OBJECTIVES:
        kind = "ranking objectives score lists, not rows; " if objective.startswith("rank:") else ""
        raise Unimplemented(f"XGBoost objective {objective!r} is not supported ({kind}supported: "
                            f"{', '.join(sorted(_OBJECTIVES))})")
    task, link, base_rule = _OBJECTIVES[objective]

    booster = learner["gradient_booster"]
    name = booster["name"]
    if name == "gbtree":
        model, weights = booster["model"], None
    elif name == "dart":
        model, weights = booster["gbtree"]["model"], [float(w) for w in booster["weight_drop"]]
    else:
        raise Unimplemented(f"XGBoost booster {name!r} is not supported (gbtree and dart are)")

    mp = learner["learner_model_param"]
    n_features = int(mp["num_feature"])
    n_groups = max(int(mp.get("num_class", "0")), int(mp.get("num_target", "1")), 1)
    base = _base_margin(mp["base_score"], base_rule, n_groups)

    trees = model["trees"]
    tree_info = [int(g) for g in model["tree_info"]]
    if len(tree_info) != len(trees) or (weights is not None and len(weights) != len(trees)):
        raise InvalidArgument("XGBoost JSON model: tree_info/weight_drop disagree with trees")

    builder = EnsembleBuilder(np.float32)
    usage = np.zeros((2, n_features), bool)
    for i, tree in enumerate(trees):
        if int(tree.get("tree_param", {}).get("size_leaf_vector", "1")) > 1:
            raise Unimplemented("XGBoost multi_strategy='multi_output_tree' (vector leaves) "
                                "is not supported; train with one_output_per_tree")
        if not 0 <= tree_info[i] < n_groups:
            raise InvalidArgument(f"XGBoost JSON model: tree {i} has group {tree_info[i]}")
        _add_tree(builder, tree, tree_info[i], None if weights is None else weights[i],
                  n_features, usage)
    if np.any(usage[0] & usage[1]):
        raise InvalidArgument(
            "XGBoost JSON model: a feature has both numerical and categorical splits")

    arrays = builder.arrays()
    arrays["feature_transform"] = np.where(usage[1], K.TRANSFORM_XGB_CATEGORY,
                                           K.TRANSFORM_NONE).astype(np.uint8)
    arrays["base_margin"] = base.astype(np.float64)
    names = learner.get("feature_names") or [f"f{i}" for i in range(n_features)]
    if len(names) != n_features:
        raise InvalidArgument("XGBoost JSON model: feature_names disagree with num_feature")
    if task == "classification" and classes is None:
        classes = list(range(max(n_groups, 2)))
    params = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "xgboost",
        "source_version": ".".join(str(v) for v in doc.get("version", [])),
        "objective": objective,
        "task": task,
        "classes": classes if task == "classification" else None,
        "n_features": n_features,
        "feature_names": [str(n) for n in names],
        "n_groups": n_groups,
        "link": link,
        "link_scale": 1.0,
        "divisor": 1.0,
        "accumulate": "float32",
        "layout": choose_layout(arrays),
    }
    return TreeEnsemble(params, arrays)


def _base_margin(raw: Any, rule: str, n_groups: int) -> np.ndarray:
    """The stored base score (a number, or a vector string such as "[5E-1]" in 3.x) as the
    float32 margin the trees start from."""
    text = str(raw).strip()
    if text.startswith("["):
        text = text[1:-1]
    values = np.asarray([float(v) for v in text.split(",") if v.strip()], np.float32)
    if values.size == 1 and n_groups > 1:
        values = np.repeat(values, n_groups)
    if values.size != n_groups:
        raise InvalidArgument(f"XGBoost JSON model: base_score has {values.size} values "
                              f"for {n_groups} outputs")
    one = np.float32(1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rule == "logit":
            values = -np.log(one / values - one)
        elif rule == "log":
            values = np.log(values)
    if not np.all(np.isfinite(values)):
        raise InvalidArgument(f"XGBoost JSON model: base_score {raw!r} has no finite margin")
    return values.astype(np.float32)


def _add_tree(builder: EnsembleBuilder, tree: dict, group: int, weight: float | None,
              n_features: int, usage: np.ndarray) -> None:
    """Append one tree; mark in ``usage[0]`` / ``usage[1]`` the features it splits on
    numerically / categorically."""
    left = np.asarray(tree["left_children"], np.int64)
    right = np.asarray(tree["right_children"], np.int64)
    feature = np.asarray(tree["split_indices"], np.int64)
    cond = np.asarray(tree["split_conditions"], np.float64).astype(np.float32)
    default_left = np.asarray(tree["default_left"], np.int64)
    n = left.size
    split_type = np.asarray(tree.get("split_type") or [0] * n, np.int64)
    if n == 0 or not (right.size == feature.size == cond.size == default_left.size
                      == split_type.size == n):
        raise InvalidArgument("XGBoost JSON model: a tree's node arrays disagree in length")

    is_leaf = left == -1
    internal_ids = np.flatnonzero(~is_leaf)
    leaf_ids = np.flatnonzero(is_leaf)
    # XGBoost node id -> local internal index, or ~leaf index
    local = np.empty(n, np.int64)
    local[internal_ids] = np.arange(internal_ids.size)
    local[leaf_ids] = ~np.arange(leaf_ids.size)
    if is_leaf[0]:
        if n != 1 and np.any(~is_leaf):
            raise InvalidArgument("XGBoost JSON model: a tree's root is a leaf but it has splits")
        leaf_values = cond[:1]
        internal_ids = internal_ids[:0]
    else:
        leaf_values = cond[leaf_ids]
    kids = np.concatenate((left[internal_ids], right[internal_ids]))
    if np.any((kids < 0) | (kids >= n)) or np.any(kids == 0):
        raise InvalidArgument("XGBoost JSON model: a child index is out of range")
    if weight is not None:
        leaf_values = (leaf_values * np.float32(weight)).astype(np.float32)

    feat = feature[internal_ids]
    if np.any((feat < 0) | (feat >= n_features)):
        raise InvalidArgument("XGBoost JSON model: a split feature is out of range")
    flags = np.where(default_left[internal_ids] != 0, 0, K.FLAG_NAN_RIGHT).astype(np.uint8)
    cat_set = np.full(internal_ids.size, -1, np.int64)
    threshold = cond[internal_ids]

    cat_nodes = internal_ids[split_type[internal_ids] == 1]
    if cat_nodes.size:
        node_pos = {int(nid): j for j, nid in enumerate(internal_ids)}
        cats = np.asarray(tree["categories"], np.int64)
        seg = np.asarray(tree["categories_segments"], np.int64)
        sizes = np.asarray(tree["categories_sizes"], np.int64)
        by_node = {int(nid): (int(s), int(z)) for nid, s, z in
                   zip(tree["categories_nodes"], seg, sizes)}
        for nid in cat_nodes:
            nid = int(nid)
            if nid not in by_node:
                raise InvalidArgument(
                    f"XGBoost JSON model: categorical node {nid} has no categories")
            s, z = by_node[nid]
            j = node_pos[nid]
            cat_set[j] = builder.add_category_set(bitset_from_categories(cats[s:s + z]))
            flags[j] |= K.FLAG_CATEGORICAL | K.FLAG_CAT_IN_SET_RIGHT
            threshold[j] = 0.0
    is_cat = (flags & K.FLAG_CATEGORICAL) != 0
    usage[0, feat[~is_cat]] = True
    usage[1, feat[is_cat]] = True

    hess = tree.get("sum_hessian")
    node_cover = leaf_cover = None
    if hess is not None and len(hess) == n:
        hess = np.asarray(hess, np.float64)
        node_cover, leaf_cover = hess[internal_ids], hess[leaf_ids[:leaf_values.size]]
    builder.add_tree(group, feat, threshold, flags, cat_set, local[left[internal_ids]],
                     local[right[internal_ids]], leaf_values, node_cover, leaf_cover)
