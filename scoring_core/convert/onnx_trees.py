"""ai.onnx.ml TreeEnsembleClassifier and TreeEnsembleRegressor -> a ``trees`` stage.

What onnxruntime computes, and this converter reproduces:

- a node compares the float32 input with its float32 ``nodes_values`` entry by its mode
  (BRANCH_LEQ ``x <= t``, BRANCH_LT, BRANCH_GTE, BRANCH_GT) and takes its true child when
  the comparison holds; NaN takes the true child only where
  ``nodes_missing_value_tracks_true`` is set. The kernels' one test is "right iff
  x >= s": LEQ and GT become ``s`` = the smallest float32 above ``t``, exactly;
- every leaf adds its weights (``class_*`` / ``target_*``) to their classes or targets,
  summed over the trees (divided by the number of trees for AVERAGE), plus
  ``base_values``; then the post_transform (NONE, LOGISTIC, SOFTMAX);
- two classes with weights for one of them only (XGBoost and LightGBM binary models,
  a binary forest) give [1 - s, s], s through the sigmoid for LOGISTIC.

Refused, naming the attribute: EQ/NEQ branches, MIN/MAX aggregation, double-precision
(``*_as_tensor``) trees, PROBIT and SOFTMAX_ZERO, and binary forms whose output
onnxruntime builds otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument
from scoring_core.convert.onnx_ml import Attrs, class_labels, rows_arg
from scoring_core.convert.onnx_values import Label, Scores, Value, refuse
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder, smallest_float32_above
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout
from scoring_core.trees.stage import TreeStage

_BRANCHES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT")


def tree_ensemble(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value]:
    rows = rows_arg(op, args).plain(op)
    classifier = op == "TreeEnsembleClassifier"
    doubles = sorted(name for name in attrs if name.endswith("_as_tensor"))
    if doubles:
        raise refuse(op, f"double-precision trees ({', '.join(doubles)})")
    prefix = "class_" if classifier else "target_"
    classes = class_labels(op, attrs) if classifier else None
    leaves = _leaf_weights(op, attrs, prefix)
    used = sorted({c for weights in leaves.values() for c, _ in weights})
    n_out = len(classes) if classes is not None else int(attrs.get("n_targets", 1))
    binary = classifier and n_out == 2 and len(used) == 1
    if binary and used != [0]:
        raise refuse(op, f"a binary classifier whose weights are all for class {used[0]}")
    n_groups = 1 if binary else n_out
    if used and (used[0] < 0 or used[-1] >= n_groups):
        raise InvalidArgument(f"ONNX {op}: a leaf weighs class or target {used[-1]} of {n_groups}")
    link, probabilities = _link(op, attrs, classifier, binary, leaves)
    trees = _trees(op, attrs, rows.width)
    scalar = n_groups == 1 or all(_tree_group(tree, leaves) is not None for tree in trees)
    builder = EnsembleBuilder(np.float64)
    for tree in trees:
        _add(builder, tree, leaves, n_groups, scalar)
    aggregate = str(attrs.get("aggregate_function", "SUM"))
    if aggregate not in ("SUM", "AVERAGE"):
        raise refuse(op, f"aggregate_function {aggregate}")
    divisor = float(len(trees)) if aggregate == "AVERAGE" else 1.0
    base = np.asarray(attrs.get("base_values") or [0.0] * n_groups, np.float64)
    if base.size != n_groups:
        raise refuse(op, f"{base.size} base_values for {n_groups} outputs")
    arrays = builder.arrays()
    arrays["feature_transform"] = np.zeros(rows.width, np.uint8)
    arrays["base_margin"] = base * divisor  # the kernels divide (base + sum) by the divisor
    params: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": "onnx", "source_version": "",
        "objective": f"ONNX {op} post_transform={attrs.get('post_transform', 'NONE')}",
        "task": "classification" if classifier else "regression", "classes": classes,
        "n_features": rows.width, "feature_names": [f"f{i}" for i in range(rows.width)],
        "n_groups": n_groups, "link": link, "link_scale": 1.0, "divisor": divisor,
        "accumulate": "float64", "layout": choose_layout(arrays),
    }  # fmt: skip
    if not scalar:
        params["leaf_width"] = n_groups
    if probabilities:
        params["probabilities"] = True
    scores = Scores(rows, TreeStage(TreeEnsemble(params, arrays)), classes, normalised=link == "softmax" or binary)
    return [Label(scores, classes), scores] if classifier else [scores]


def _link(op: str, attrs: Attrs, classifier: bool, binary: bool,
          leaves: dict[tuple[int, int], list[tuple[int, float]]]) -> tuple[str, bool]:
    """The ensemble's link, and whether its identity output is a classifier's scores."""
    post = str(attrs.get("post_transform", "NONE"))
    if not classifier:
        if post != "NONE":
            raise refuse(op, f"post_transform {post} of a regressor")
        return "identity", False
    if binary:
        positive = all(w >= 0 for weights in leaves.values() for _, w in weights)
        if post == "LOGISTIC" and not positive:
            return "sigmoid", False
        if post == "NONE" and positive:
            return "identity", True
        raise refuse(op, f"a binary classifier with post_transform {post} and {'only positive' if positive else 'mixed'} weights")
    if post == "SOFTMAX":
        return "softmax", False
    if post == "LOGISTIC":
        return "sigmoid", False
    if post == "NONE":
        return "identity", True
    raise refuse(op, f"post_transform {post}")


def _leaf_weights(op: str, attrs: Attrs, prefix: str) -> dict[tuple[int, int], list[tuple[int, float]]]:
    tree, node, ids = (np.asarray(attrs.get(prefix + k) or [], np.int64) for k in ("treeids", "nodeids", "ids"))
    weights = np.asarray(attrs.get(prefix + "weights") or [], np.float64)
    if not tree.size == node.size == ids.size == weights.size:
        raise InvalidArgument(f"ONNX {op}: the {prefix}* attributes disagree in length")
    found: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    for t, n, c, w in zip(tree.tolist(), node.tolist(), ids.tolist(), weights.tolist()):
        found[(t, n)].append((c, w))
    return found


def _trees(op: str, attrs: Attrs, width: int) -> list[dict[str, Any]]:
    """One dict a tree: its id, the node indices in breadth-first order from the root."""
    fields = {k: list(attrs.get("nodes_" + k) or []) for k in
              ("treeids", "nodeids", "featureids", "modes", "values", "truenodeids", "falsenodeids")}
    n = len(fields["treeids"])
    fields["missing_value_tracks_true"] = list(attrs.get("nodes_missing_value_tracks_true") or [0] * n)
    if n == 0 or any(len(v) != n for v in fields.values()):
        raise InvalidArgument(f"ONNX {op}: the nodes_* attributes are empty or disagree in length")
    modes = [str(m) for m in fields["modes"]]
    strange = sorted(set(modes) - {"LEAF", *_BRANCHES})
    if strange:
        raise refuse(op, f"node mode {strange[0]}")
    index = {(t, nid): i for i, (t, nid) in enumerate(zip(fields["treeids"], fields["nodeids"]))}
    if len(index) != n:
        raise InvalidArgument(f"ONNX {op}: a (tree, node) id appears twice")
    features = np.asarray(fields["featureids"], np.int64)
    branch = np.array([m != "LEAF" for m in modes])
    if np.any(branch & ((features < 0) | (features >= width))):
        raise InvalidArgument(f"ONNX {op}: a node reads a feature outside the {width} columns")
    by_tree: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(fields["treeids"]):
        by_tree[t].append(i)
    trees = []
    for t, members in sorted(by_tree.items()):
        children = {index.get((t, fields[side][i]), -1) for i in members if branch[i]
                    for side in ("truenodeids", "falsenodeids")}
        if -1 in children:
            raise InvalidArgument(f"ONNX {op}: tree {t} has a branch to a node it does not hold")
        roots = [i for i in members if i not in children]
        if len(roots) != 1:
            raise InvalidArgument(f"ONNX {op}: tree {t} has {len(roots)} roots")
        order, seen = [roots[0]], {roots[0]}
        for i in order:
            if branch[i]:
                for side in ("truenodeids", "falsenodeids"):
                    child = index[(t, fields[side][i])]
                    if child in seen:
                        raise InvalidArgument(f"ONNX {op}: tree {t} is not a tree (a node has two parents)")
                    seen.add(child)
                    order.append(child)
        trees.append({"id": t, "order": order, "fields": fields, "modes": modes, "branch": branch, "index": index})
    return trees


def _tree_group(tree: dict[str, Any], leaves: dict[tuple[int, int], list[tuple[int, float]]]) -> int | None:
    """The one class or target every leaf of the tree weighs, or None."""
    groups: set[int] = set()
    f = tree["fields"]
    for i in tree["order"]:
        if not tree["branch"][i]:
            weights = leaves.get((tree["id"], f["nodeids"][i]), [])
            if len(weights) > 1:
                return None
            groups.update(c for c, _ in weights)
    return groups.pop() if len(groups) == 1 else (0 if not groups else None)


def _add(builder: EnsembleBuilder, tree: dict[str, Any], leaves: dict[tuple[int, int], list[tuple[int, float]]],
         n_groups: int, scalar: bool) -> None:
    f, branch, order, t = tree["fields"], tree["branch"], tree["order"], tree["id"]
    internal = [i for i in order if branch[i]]
    leaf_nodes = [i for i in order if not branch[i]]
    local = {i: k for k, i in enumerate(internal)} | {i: ~k for k, i in enumerate(leaf_nodes)}
    index = tree["index"]
    left, right, flags, threshold = [], [], [], []
    for i in internal:
        true_child, false_child = local[index[(t, f["truenodeids"][i])]], local[index[(t, f["falsenodeids"][i])]]
        mode, nan_true = tree["modes"][i], bool(f["missing_value_tracks_true"][i])
        t32 = np.float32(f["values"][i])
        if mode in ("BRANCH_LEQ", "BRANCH_LT"):  # true goes left
            left.append(true_child)
            right.append(false_child)
            nan_right = not nan_true
        else:  # GTE, GT: true goes right
            left.append(false_child)
            right.append(true_child)
            nan_right = nan_true
        exclusive = mode in ("BRANCH_LEQ", "BRANCH_GT")  # right iff x > t, i.e. x >= the next float32
        threshold.append(smallest_float32_above(np.float64(t32).reshape(1))[0] if exclusive else t32)
        flags.append(K.FLAG_NAN_RIGHT if nan_right else 0)
    values = np.zeros((len(leaf_nodes), n_groups))
    for k, i in enumerate(leaf_nodes):
        for c, w in leaves.get((t, f["nodeids"][i]), []):
            values[k, c] += w
    group = (_tree_group(tree, leaves) or 0) if scalar else 0
    builder.add_tree(
        group,
        feature=np.asarray([f["featureids"][i] for i in internal], np.int64),
        threshold=np.asarray(threshold, np.float32),
        flags=np.asarray(flags, np.uint8),
        cat_set=np.full(len(internal), -1, np.int64),
        left=np.asarray(left, np.int64),
        right=np.asarray(right, np.int64),
        leaf_value=values.sum(axis=1) if scalar else values,
    )
