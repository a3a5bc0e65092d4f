"""The IR on hand-built trees: node semantics in both layouts, and what from_arrays refuses."""

from __future__ import annotations

import numpy as np
import pytest

from milepost.core.errors import InvalidArgument
from scoring_core.trees import TreeEnsemble
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder, bitset_from_categories
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION

NAN = np.float32(np.nan)
INF = np.float32(np.inf)


def _params(layout: str, n_features: int = 2) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "objective": "test",
        "task": "regression", "classes": None, "n_features": n_features,
        "feature_names": [f"f{i}" for i in range(n_features)], "n_groups": 1,
        "link": "identity", "link_scale": 1.0, "divisor": 1.0, "accumulate": "float64",
        "layout": layout,
    }


def _numeric_arrays() -> dict[str, np.ndarray]:
    b = EnsembleBuilder(np.float64)
    # tree 0: f0 >= 0.5 goes right, NaN right; right child tests f1 >= NaN (never), NaN left
    b.add_tree(0, feature=[0, 1], threshold=[0.5, NAN], flags=[K.FLAG_NAN_RIGHT, 0],
               cat_set=[-1, -1], left=[~0, ~1], right=[1, ~2], leaf_value=[1.0, 2.0, 4.0])
    # tree 1: f1 >= -inf always right unless NaN, which goes right too; then f0 >= +inf
    b.add_tree(0, feature=[1, 0], threshold=[-INF, INF], flags=[K.FLAG_NAN_RIGHT, 0],
               cat_set=[-1, -1], left=[~0, ~1], right=[1, ~2], leaf_value=[10.0, 20.0, 40.0])
    # tree 2: a single leaf
    b.add_tree(0, feature=[], threshold=[], flags=[], cat_set=[], left=[], right=[],
               leaf_value=[100.0])
    arrays = b.arrays()
    arrays["feature_transform"] = np.zeros(2, np.uint8)
    arrays["base_margin"] = np.array([0.5])
    return arrays


@pytest.mark.parametrize("layout", ["complete", "compact"])
def test_numeric_node_semantics(layout):
    ens = TreeEnsemble.from_arrays(_params(layout), _numeric_arrays())
    assert ens.layout == layout
    rows = np.array([
        [0.0, 0.0],      # left; f1 >= -inf right, f0 < inf left
        [0.5, 0.0],      # right -> f1 >= NaN never -> left leaf 2.0; then 20
        [NAN, 0.0],      # NaN right (2.0); tree 1 as above (20)
        [np.nextafter(np.float32(0.5), np.float32(0)), NAN],  # left; f1 NaN right (20)
        [INF, -INF],     # right (2.0); -inf >= -inf right, inf >= inf right (40)
        [-INF, 1.0],
    ], np.float32)
    want = 0.5 + 100 + np.array([1 + 20, 2 + 20, 2 + 20, 1 + 20, 2 + 40, 1 + 20], np.float64)
    np.testing.assert_array_equal(ens.predict(rows), want)
    np.testing.assert_array_equal(ens.predict(np.asfortranarray(rows)), want)
    many = np.tile(rows, (400, 1))
    np.testing.assert_array_equal(ens.predict(many, parallel=True), np.tile(want, 400))


def test_categorical_node_semantics():
    b = EnsembleBuilder(np.float64)
    in_set = b.add_category_set(bitset_from_categories([1, 3, 40]))
    # LightGBM style: members left, NaN right
    b.add_tree(0, feature=[0], threshold=[0.0], flags=[K.FLAG_CATEGORICAL | K.FLAG_NAN_RIGHT],
               cat_set=[in_set], left=[~0], right=[~1], leaf_value=[1.0, 2.0])
    # XGBoost style: members right, NaN left
    b.add_tree(0, feature=[0], threshold=[0.0],
               flags=[K.FLAG_CATEGORICAL | K.FLAG_CAT_IN_SET_RIGHT], cat_set=[in_set],
               left=[~0], right=[~1], leaf_value=[10.0, 20.0])
    arrays = b.arrays()
    arrays["feature_transform"] = np.zeros(1, np.uint8)
    arrays["base_margin"] = np.zeros(1)
    ens = TreeEnsemble.from_arrays(_params("compact", 1), arrays)
    x = np.array([1, 3, 40, 0, 2, 41, 64, 1e9, -1, NAN], np.float32)[:, None]
    member = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    want = np.where(member, 1.0 + 20.0, 2.0 + 10.0)
    want[-1] = 2.0 + 10.0  # NaN: right in tree 0, left in tree 1
    np.testing.assert_array_equal(ens.predict(x), want)


def test_from_arrays_refuses_bad_input():
    arrays = _numeric_arrays()
    params = _params("complete")
    with pytest.raises(InvalidArgument, match="format"):
        TreeEnsemble.from_arrays({**params, "format": "other"}, arrays)
    with pytest.raises(InvalidArgument, match="lacks"):
        TreeEnsemble.from_arrays({k: v for k, v in params.items() if k != "link"}, arrays)
    looped = {**arrays, "node_children": arrays["node_children"].copy()}
    looped["node_children"][3] = 0  # node 1's right child back to the root
    with pytest.raises(InvalidArgument, match="trees"):
        TreeEnsemble.from_arrays(params, looped)
    with pytest.raises(InvalidArgument, match="node_feature"):
        TreeEnsemble.from_arrays(params, {**arrays, "node_feature": np.array([0, 5, 1, 0])})
    with pytest.raises(InvalidArgument, match="leaves"):
        TreeEnsemble.from_arrays(params, {**arrays, "tree_root": np.array([0, 2, ~99])})
    with pytest.raises(InvalidArgument, match="tree_group"):
        TreeEnsemble.from_arrays(params, {**arrays, "tree_group": np.array([0, 1, 0])})
    with pytest.raises(InvalidArgument, match="node_children"):
        TreeEnsemble.from_arrays(params, {**arrays, "node_children": np.full(8, 2**40)})
