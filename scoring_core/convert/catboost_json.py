"""CatBoost's JSON model (``model.save_model(path, format="json")``) -> a ``trees`` stage.

What CatBoost's CPU evaluator computes (CatBoost 1.2), and this converter reproduces:

- a split sends a float feature ``x`` to its "true" side iff ``x > border`` (float32); a
  NaN by the feature's ``nan_value_treatment``: AsIs and AsFalse to the false side
  (``NaN > border`` fails), AsTrue to the true side;
- oblivious trees (the default): every level splits the same way and ``splits[j]`` sets
  bit ``j`` of the leaf index; ``leaf_values`` hold each leaf's values side by side (one
  a dimension). Non-symmetric trees (grow_policy Depthwise or Lossguide) are nested
  ``{split, left, right}`` nodes with ``{value}`` leaves, ``right`` the true side. Both
  become ordinary binary trees here; an oblivious tree, complete of its depth, suits the
  branch-free layout;
- the raw value is ``scale * (sum of leaves) + bias`` (``scale_and_bias``), in double;
- the prediction follows the loss: Logloss and CrossEntropy give predict_proba's
  ``[1 - sigmoid(raw), sigmoid(raw)]``, MultiClass a softmax over the dimensions (the
  class labels are ``class_names``; ``classes[argmax]`` is CatBoostClassifier.predict);
  regression losses give predict's raw value (RawFormulaVal; several for MultiRMSE),
  Poisson and Tweedie its exponent, as CatBoostRegressor.predict does.

Categorical, text and embedding features are scored by CatBoost from hashed values and
CTR tables that the JSON export does not make reproducible here: a model that splits on
them is refused; one that has such columns but never splits on them takes them as unused
inputs. A live CatBoost model is read through this same export, never pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.convert.dumps import reading_model
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder, covers_from_leaves, smallest_float32_above
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout
from scoring_core.trees.stage import TreeStage

# loss -> (task, link)
_LOSSES = {"Logloss": ("classification", "sigmoid"), "CrossEntropy": ("classification", "sigmoid"),
           "MultiClass": ("classification", "softmax"), "Poisson": ("regression", "exp"),
           "Tweedie": ("regression", "exp")}
_NOT_RAW = ("MultiLogloss", "MultiCrossEntropy", "MultiClassOneVsAll", "RMSEWithUncertainty", "SurvivalAft")


def is_catboost_json(path: Path) -> bool:
    """Whether a file's JSON starts as CatBoost's export does (XGBoost's starts with
    ``learner``): one of its top-level keys within the first bytes."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"{") and any(key in head for key in (b'"features_info"', b'"oblivious_trees"',
                                                                  b'"scale_and_bias"'))


def convert(source: Any) -> Converted:
    """A CatBoost ``.json`` model file, or a fitted CatBoost model (exported to JSON first)."""
    doc = _load(source)
    with reading_model("CatBoost JSON model"):
        return _convert(doc)


def _load(source: Any) -> dict[str, Any]:
    if hasattr(source, "save_model"):
        if not source.is_fitted():
            raise InvalidArgument(f"{type(source).__name__} is not fitted")
        with tempfile.TemporaryDirectory(prefix="milepost-catboost-") as tmp:
            path = Path(tmp) / "model.json"
            source.save_model(str(path), format="json")
            return _load(path)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgument(f"CatBoost model source: expected a path or a model, got {type(source).__name__}")
    try:
        doc = json.loads(Path(source).read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"CatBoost JSON model {source}: cannot read it: {err}") from err
    if not isinstance(doc, dict) or "features_info" not in doc:
        raise InvalidArgument(f"CatBoost JSON model {source}: no 'features_info' object")
    return doc


def _convert(doc: dict[str, Any]) -> Converted:
    info = doc.get("model_info", {})
    loss = str(info.get("params", {}).get("loss_function", {}).get("type", "RMSE"))
    if loss in _NOT_RAW:
        raise Unimplemented(f"CatBoost loss {loss!r} is not supported (its predict is not a single link of the raw value)")
    task, link = _LOSSES.get(loss, ("regression", "identity"))
    features = doc["features_info"]
    floats = features.get("float_features", [])
    others = [f for key in ("categorical_features", "text_features", "embedding_features")
              for f in features.get(key, [])]
    flat = {int(f["feature_index"]): int(f["flat_feature_index"]) for f in floats}
    n_features = 1 + max([int(f["flat_feature_index"]) for f in [*floats, *others]], default=-1)
    nan_true = {int(f["feature_index"]) for f in floats if f.get("nan_value_treatment") == "AsTrue"}

    scale, bias = doc.get("scale_and_bias", [1.0, [0.0]])
    bias = np.asarray(bias, np.float64).reshape(-1)
    n_dims = bias.size
    builder = EnsembleBuilder(np.float64)
    if "oblivious_trees" in doc:
        for tree in doc["oblivious_trees"]:
            _add_oblivious(builder, tree, n_dims, float(scale), flat, nan_true)
    elif "trees" in doc:
        for tree in doc["trees"]:
            _add_nested(builder, tree, n_dims, float(scale), flat, nan_true)
    else:
        raise InvalidArgument("CatBoost JSON model: neither 'oblivious_trees' nor 'trees'")

    classes = None
    if task == "classification":
        names = info.get("class_params", {}).get("class_names") or list(range(max(n_dims, 2)))
        classes = list(names)
        if len(classes) != (2 if link == "sigmoid" else n_dims):
            raise InvalidArgument(f"CatBoost JSON model: {len(classes)} class names for {n_dims} dimensions")
    arrays = builder.arrays()
    arrays["feature_transform"] = np.zeros(n_features, np.uint8)
    arrays["base_margin"] = bias
    ids = [str(f.get("feature_id") or "") for f in sorted([*floats, *others], key=lambda f: int(f["flat_feature_index"]))]
    params: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "catboost",
        "source_version": _version(info),
        "objective": loss,
        "task": task,
        "classes": classes,
        "n_features": n_features,
        "feature_names": [name or f"f{i}" for i, name in enumerate(ids)],
        "n_groups": n_dims,
        "link": link,
        "link_scale": 1.0,
        "divisor": 1.0,
        "accumulate": "float64",
        "layout": choose_layout(arrays),
    }
    if n_dims > 1:
        params["leaf_width"] = n_dims
    stage = TreeStage(TreeEnsemble(params, arrays))
    used = set(flat.values())
    return Converted(
        model=stage,
        task=task,
        classes=classes,
        source="catboost",
        feature_names=params["feature_names"] if any(ids) else None,
        lineage={"library": "catboost", "library_version": params["source_version"], "objective": loss},
        unused_inputs={i for i in range(n_features) if i not in used},
        predict_ndim=2 if task == "classification" or n_dims > 1 else 1,
    )


def _version(info: dict[str, Any]) -> str:
    text = str(info.get("catboost_version_info", ""))
    marker = "CatBoost release "
    return text.split(marker, 1)[1].split(" ", 1)[0].rstrip(".") if marker in text else ""


def _split(split: dict[str, Any], flat: dict[int, int], nan_true: set[int]) -> tuple[int, np.float32, int]:
    """(input column, float32 threshold of the true side, flags) of one float split."""
    kind = split.get("split_type", "FloatFeature")
    if kind != "FloatFeature":
        raise Unimplemented(f"CatBoost split type {kind!r}: only float features are supported "
                            "(categorical, text and embedding features need CatBoost's hashing and CTR tables)")
    index = int(split["float_feature_index"])
    threshold = smallest_float32_above(np.asarray([float(split["border"])]))[0]  # x > border iff x >= threshold
    return flat[index], threshold, K.FLAG_NAN_RIGHT if index in nan_true else 0


def _leaves(values: Any, n_dims: int, scale: float) -> np.ndarray:
    leaves = np.asarray(values, np.float64).reshape(-1, n_dims) * scale
    return leaves[:, 0] if n_dims == 1 else leaves


def _add_oblivious(builder: EnsembleBuilder, tree: dict[str, Any], n_dims: int, scale: float,
                   flat: dict[int, int], nan_true: set[int]) -> None:
    """An oblivious tree as a complete binary tree: level ``l`` tests ``splits[d-1-l]``,
    so that its leaves, left to right, are leaf indices 0 .. 2**d - 1."""
    splits = [_split(s, flat, nan_true) for s in tree["splits"]]
    depth = len(splits)
    leaves = _leaves(tree["leaf_values"], n_dims, scale)
    if leaves.shape[0] != 1 << depth:
        raise InvalidArgument(f"CatBoost JSON model: {leaves.shape[0]} leaves for a tree of depth {depth}")
    n_internal = (1 << depth) - 1  # in level order: node i has children 2i+1 and 2i+2
    chosen = [splits[depth - (i + 1).bit_length()] for i in range(n_internal)]  # level l: splits[d-1-l]
    kids = np.arange(n_internal, dtype=np.int64) * 2 + 1
    # A child past the internal nodes is leaf (child - n_internal), written ~leaf.
    left = np.where(kids < n_internal, kids, ~(kids - n_internal))
    right = np.where(kids + 1 < n_internal, kids + 1, ~(kids + 1 - n_internal))
    weights = tree.get("leaf_weights")  # training weight a leaf: TreeSHAP's covers
    leaf_cover = None if weights is None or len(weights) != leaves.shape[0] else np.asarray(weights, np.float64)
    builder.add_tree(
        0,
        feature=np.asarray([c[0] for c in chosen], np.int64),
        threshold=np.asarray([c[1] for c in chosen], np.float32),
        flags=np.asarray([c[2] for c in chosen], np.uint8),
        cat_set=np.full(n_internal, -1, np.int64),
        left=left,
        right=right,
        leaf_value=leaves,
        node_cover=None if leaf_cover is None else covers_from_leaves(left, right, leaf_cover),
        leaf_cover=leaf_cover,
    )


def _add_nested(builder: EnsembleBuilder, tree: dict[str, Any], n_dims: int, scale: float,
                flat: dict[int, int], nan_true: set[int]) -> None:
    """A non-symmetric tree: internal nodes numbered depth first from the root."""
    feature: list[int] = []
    threshold: list[np.float32] = []
    flags: list[int] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[Any] = []
    weights: list[Any] = []

    def visit(node: dict[str, Any]) -> int:
        if "split" not in node:
            leaves.append(node["value"])
            weights.append(node.get("weight"))
            return ~(len(leaves) - 1)
        j = len(feature)
        f, t, fl = _split(node["split"], flat, nan_true)
        feature.append(f)
        threshold.append(t)
        flags.append(fl)
        left.append(0)
        right.append(0)
        left[j] = visit(node["left"])
        right[j] = visit(node["right"])
        return j

    visit(tree)
    leaf_cover = None if None in weights else np.asarray(weights, np.float64)
    builder.add_tree(0, np.asarray(feature, np.int64), np.asarray(threshold, np.float32), np.asarray(flags, np.uint8),
                     np.full(len(feature), -1, np.int64), np.asarray(left, np.int64), np.asarray(right, np.int64),
                     _leaves(leaves, n_dims, scale),
                     None if leaf_cover is None else covers_from_leaves(np.asarray(left, np.int64),
                                                                     np.asarray(right, np.int64), leaf_cover), leaf_cover)
