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


_SPECIAL = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 0.5, -0.5, 1.0, -1.0, 3e38, -3e38,
     np.finfo(np.float32).max, -np.finfo(np.float32).max, INF, -INF, NAN], np.float32)


def test_order_keys_compare_as_float32_does():
    """Keys of inputs (NaN lowest) against keys of thresholds (NaN highest): ``>=`` on
    the keys is ``>=`` on the floats for every pair, -0.0 == +0.0 and NaN never right."""
    rng = np.random.default_rng(3)
    bits = rng.integers(-(2**31), 2**31, size=3000, dtype=np.int64).astype(np.int32)
    values = np.concatenate((_SPECIAL, bits.view(np.float32), rng.normal(size=500).astype(np.float32)))
    x_keys = K._keys_of_bits(values.view(np.int32).copy())
    t_keys = K.order_keys(values)
    with np.errstate(invalid="ignore"):
        want = values[:, None] >= values[None, :]
    np.testing.assert_array_equal(x_keys[:, None] >= t_keys[None, :], want)


@pytest.mark.parametrize("layout", ["complete", "compact"])
def test_thresholds_at_special_values_on_every_row_count(layout):
    """One stump per special threshold, NaN left and (mirrored) NaN right, scored on row
    counts around the 16-row groups and the 128-row blocks, C and F order."""
    b = EnsembleBuilder(np.float64)
    k = 0
    for n, t in enumerate(_SPECIAL):
        for flags in (0, K.FLAG_NAN_RIGHT):  # tree k adds 2**k when its row goes right
            b.add_tree(0, feature=[n % 2], threshold=[t], flags=[flags], cat_set=[-1],
                       left=[~0], right=[~1], leaf_value=[0.0, 2.0 ** k])
            k += 1
    arrays = b.arrays()
    arrays["feature_transform"] = np.zeros(2, np.uint8)
    arrays["base_margin"] = np.zeros(1)
    ens = TreeEnsemble.from_arrays(_params(layout), arrays)
    rng = np.random.default_rng(4)
    for n_rows in (1, 15, 16, 17, 127, 128, 129, 300):
        rows = rng.choice(_SPECIAL, size=(n_rows, 2))
        want = np.zeros(n_rows)
        k = 0
        for n, t in enumerate(_SPECIAL):
            x = rows[:, n % 2]
            for nan_right in (False, True):
                with np.errstate(invalid="ignore"):
                    right = np.where(np.isnan(x), nan_right, x >= t)
                want += np.where(right, 2.0 ** k, 0.0)
                k += 1
        np.testing.assert_array_equal(ens.predict(rows), want, err_msg=f"{n_rows} rows")
        np.testing.assert_array_equal(ens.predict(np.asfortranarray(rows)), want)


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


def _forests() -> list:
    """Real ensembles of every shape the row walks meet: one tree, a number of trees that is
    no multiple of four, trees of mixed depths, several outputs, vector leaves, NaN."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier

    import scoring_core

    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 9)).astype(np.float32)
    y = X[:, 0] + X[:, 1] * X[:, 2]
    X[rng.random(X.shape) < 0.1] = NAN
    dense = np.nan_to_num(X)
    three = (y > -0.5).astype(int) + (y > 0.5).astype(int)
    return [
        (scoring_core.compile(xgboost.XGBRegressor(n_estimators=1, max_depth=3).fit(X, y)), X),
        (scoring_core.compile(xgboost.XGBClassifier(n_estimators=23, max_depth=5).fit(X, y > 0)), X),
        (scoring_core.compile(xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, three)), X),
        (scoring_core.compile(lightgbm.LGBMRegressor(n_estimators=17, num_leaves=12, verbose=-1).fit(X, y)), X),
        (scoring_core.compile(RandomForestClassifier(n_estimators=7, max_depth=6, random_state=0).fit(dense, three)),
         dense),
        (scoring_core.compile(GradientBoostingRegressor(n_estimators=9, max_depth=2).fit(dense, y)), dense),
    ]


def test_rows_scored_alone_equal_the_same_rows_scored_in_groups_bit_for_bit() -> None:
    # Rows that fill no 16-row group walk four trees at a time (tree_kernels._walk_alone); rows
    # in a group walk with the group: the sums must not differ in a single bit.
    layouts = set()
    for compiled, X in _forests():
        params, arrays = compiled.model.ensemble.to_arrays()
        for layout in ("complete", "compact"):
            try:
                forest = TreeEnsemble.from_arrays({**params, "layout": layout}, arrays)
            except InvalidArgument:
                continue  # deeper than the complete layout takes
            layouts.add(layout)
            grouped = forest.predict(X[:64])
            for n in (1, 3, 15):
                for start in (0, 16, 40):
                    np.testing.assert_array_equal(forest.predict(X[start:start + n]), grouped[start:start + n])
            np.testing.assert_array_equal(forest.predict(X[:37]), grouped[:37])  # two groups, five rows alone
    assert layouts == {"complete", "compact"}
