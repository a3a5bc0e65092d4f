"""Spark ML tree models (decision trees, random forests, gradient-boosted trees) -> a ``trees`` stage.

Read from the saved node tables (``spark_ml_saved``). What Spark's models compute
(``ml/tree/Split.scala``, ``Node.scala`` and the six model classes, Spark 3.x and 4.x),
and this converter reproduces:

- a continuous split sends ``x`` left iff ``x <= threshold`` (double), so NaN goes right;
  ``x <= t`` for a float32 ``x`` is ``x < s`` for ``s`` the smallest float32 above ``t``;
- a categorical split (a feature whose column metadata is nominal or binary: a
  StringIndexer's index, a OneHotEncoder's bits) keeps the smaller of its two category
  sets (the left one iff ``len(left) <= numCategories / 2``): a value in that set goes
  that set's way, any other value (unseen, fractional, NaN) the other way;
- DecisionTreeClassificationModel: probability = the leaf's ``impurityStats`` (class
  counts) normalised; RandomForestClassificationModel: each tree's normalised counts
  summed and normalised again, i.e. divided by the number of trees;
- DecisionTreeRegressionModel: the leaf's prediction; RandomForestRegressionModel: the
  mean over trees; GBTRegressionModel: ``sum(treeWeights[i] * tree_i(x))``;
- GBTClassificationModel (logistic loss): that margin ``m``, probability
  ``[1 - p, p]`` with ``p = 1 / (1 + exp(-2 m))``.

Leaves are summed in float64, as Spark does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.dumps import reading_model
from scoring_core.convert.spark_ml_saved import SavedStage
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder, bitset_from_categories, smallest_float32_above
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout
from scoring_core.trees.stage import TreeStage

CLASSIFIERS = ("DecisionTreeClassificationModel", "RandomForestClassificationModel", "GBTClassificationModel")
REGRESSORS = ("DecisionTreeRegressionModel", "RandomForestRegressionModel", "GBTRegressionModel")


def convert_tree_model(stage: SavedStage) -> tuple[TreeStage, int | None]:
    """The stage of a saved Spark tree model and its number of classes (None: a regressor)."""
    with reading_model(f"saved Spark {stage.name}"):
        return _convert(stage)


def _convert(stage: SavedStage) -> tuple[TreeStage, int | None]:
    name = stage.name
    classifier = name in CLASSIFIERS
    boosted = name.startswith("GBT")
    n_features = int(stage.metadata["numFeatures"])
    n_classes = int(stage.metadata.get("numClasses", 2)) if classifier else None
    if boosted and classifier and stage.params.get("lossType", "logistic") != "logistic":
        raise Unimplemented(f"GBTClassificationModel(lossType={stage.params['lossType']!r}): only 'logistic' is known")
    table = stage.table()
    if name.startswith("DecisionTree"):
        nodes, tree_of, weights = table, np.zeros(table.num_rows, np.int64), {0: 1.0}
    else:
        nodes = pa.Table.from_struct_array(table.column("nodeData").combine_chunks())
        tree_of = np.asarray(table.column("treeID"), np.int64)
        weights = {int(r["_1"]): float(r["_3"]) for r in stage.table("treesMetadata").to_pylist()}
    columns = _node_columns(nodes)

    distributions = classifier and not boosted
    n_groups = n_classes if distributions and n_classes and n_classes > 2 else 1
    builder = EnsembleBuilder(np.float64)
    usage = np.zeros((2, n_features), bool)  # features split on continuously, categorically
    for tree in sorted(weights):
        rows = np.flatnonzero(tree_of == tree)
        if rows.size == 0:
            raise InvalidArgument(f"saved Spark {name}: tree {tree} has no nodes")
        if distributions:
            leaf_value = _class_distributions(columns["stats"], rows, int(n_classes or 2))
            leaf_value = leaf_value[:, 1] if n_groups == 1 else leaf_value
        else:
            leaf_value = columns["prediction"][rows] * (weights[tree] if boosted else 1.0)
        _add_tree(builder, columns, rows, leaf_value, usage)
    if np.any(usage[0] & usage[1]):
        raise InvalidArgument(f"saved Spark {name}: a feature has both continuous and categorical splits")

    arrays = builder.arrays()
    # A categorical feature's fractions are no category (Spark looks the double up in a set).
    arrays["feature_transform"] = np.where(usage[1], K.TRANSFORM_SKL_CATEGORY, K.TRANSFORM_NONE).astype(np.uint8)
    arrays["base_margin"] = np.zeros(n_groups)
    params: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "spark",
        "source_version": str(stage.metadata.get("sparkVersion", "")),
        "objective": name,
        "task": "classification" if classifier else "regression",
        "classes": list(range(n_classes)) if n_classes else None,
        "n_features": n_features,
        "feature_names": [f"f{i}" for i in range(n_features)],
        "n_groups": n_groups,
        "link": "sigmoid" if boosted and classifier else "identity",
        "link_scale": 2.0 if boosted and classifier else 1.0,
        "divisor": float(len(weights)) if name.startswith("RandomForest") else 1.0,
        "accumulate": "float64",
        "layout": choose_layout(arrays),
    }
    if n_groups > 1:
        params["leaf_width"] = n_groups
    if distributions:
        params["probabilities"] = True
    return TreeStage(TreeEnsemble(params, arrays)), n_classes


def _node_columns(nodes: pa.Table) -> dict[str, Any]:
    """The node table's fields as arrays; a list field (class counts, the split's threshold
    or left categories) as its flat values and offsets: node j's list is
    ``flat[offsets[j]:offsets[j + 1]]``."""
    split = pa.Table.from_struct_array(nodes.column("split").combine_chunks())

    def lists(column: Any) -> tuple[np.ndarray, np.ndarray]:
        array = column.combine_chunks()
        return np.asarray(array.values, np.float64), np.asarray(array.offsets, np.int64)

    return {
        "id": np.asarray(nodes.column("id"), np.int64),
        "left": np.asarray(nodes.column("leftChild"), np.int64),
        "right": np.asarray(nodes.column("rightChild"), np.int64),
        "prediction": np.asarray(nodes.column("prediction"), np.float64),
        "stats": lists(nodes.column("impurityStats")),
        "feature": np.asarray(split.column("featureIndex"), np.int64),
        "n_categories": np.asarray(split.column("numCategories"), np.int64),
        "values": lists(split.column("leftCategoriesOrThreshold")),
        # Training rows a node saw (Spark 3+), TreeSHAP's covers; older saves have none.
        "count": np.asarray(nodes.column("rawCount"), np.float64) if "rawCount" in nodes.column_names else None,
    }


def _class_distributions(stats: tuple[np.ndarray, np.ndarray], rows: np.ndarray, n_classes: int) -> np.ndarray:
    """Each node's class counts normalised (zeros where a node saw no weight)."""
    flat, offsets = stats
    counts = np.zeros((rows.size, n_classes))
    for j, row in enumerate(rows):
        values = flat[offsets[row]:offsets[row + 1]]
        counts[j, :values.size] = values[:n_classes]
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total != 0)


def _add_tree(builder: EnsembleBuilder, columns: dict[str, Any], rows: np.ndarray, leaf_value: np.ndarray,
              usage: np.ndarray) -> None:
    """Append the tree whose nodes are ``rows`` of the node table (``leaf_value`` one a
    row); mark in ``usage[0]`` / ``usage[1]`` the features it splits continuously / categorically."""
    ids, left, right = columns["id"][rows], columns["left"][rows], columns["right"][rows]
    position = {int(i): k for k, i in enumerate(ids)}
    kids = set(left[left >= 0].tolist()) | set(right[right >= 0].tolist())
    roots = [int(i) for i in ids if int(i) not in kids]
    if len(roots) != 1 or not kids <= position.keys():
        raise InvalidArgument("a tree's nodes do not form one tree")
    internal: list[int] = []  # positions, in depth-first order from the root
    local: dict[int, int] = {}  # node id -> internal index, or ~leaf index
    leaves: list[int] = []
    stack = [roots[0]]
    while stack:
        node = stack.pop()
        k = position[node]
        if left[k] < 0:
            local[node] = ~len(leaves)
            leaves.append(k)
        else:
            local[node] = len(internal)
            internal.append(k)
            stack.extend((int(right[k]), int(left[k])))
    at = rows[internal]
    feature = columns["feature"][at]
    if np.any((feature < 0) | (feature >= usage.shape[1])):
        raise InvalidArgument("a split feature is out of range")
    threshold = np.zeros(len(internal), np.float32)
    flags = np.full(len(internal), K.FLAG_NAN_RIGHT, np.uint8)
    cat_set = np.full(len(internal), -1, np.int64)
    flat, offsets = columns["values"]
    for j, row in enumerate(at):
        values = flat[offsets[row]:offsets[row + 1]]
        n_categories = int(columns["n_categories"][row])
        if n_categories < 0:
            threshold[j] = smallest_float32_above(values[:1])[0]
            usage[0, feature[j]] = True
            continue
        left_set = values.astype(np.int64)
        if len(left_set) <= n_categories // 2:  # Spark keeps the left set: members go left
            kept, flags[j] = left_set, K.FLAG_CATEGORICAL | K.FLAG_NAN_RIGHT
        else:  # Spark keeps the right set: members go right, anything else left
            kept = np.setdiff1d(np.arange(n_categories), left_set)
            flags[j] = K.FLAG_CATEGORICAL | K.FLAG_CAT_IN_SET_RIGHT
        cat_set[j] = builder.add_category_set(bitset_from_categories(kept))
        usage[1, feature[j]] = True
    builder.add_tree(
        0, feature, threshold, flags, cat_set,
        np.asarray([local[int(left[k])] for k in internal], np.int64),
        np.asarray([local[int(right[k])] for k in internal], np.int64),
        np.asarray(leaf_value)[leaves],
        None if columns["count"] is None else columns["count"][at],
        None if columns["count"] is None else columns["count"][rows[leaves]],
    )  # fmt: skip
