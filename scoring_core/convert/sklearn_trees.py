"""scikit-learn tree models -> the tree-ensemble IR (``scoring_core.trees``), a ``trees`` stage.

Read from fitted attributes only (``tree_`` node arrays, ``estimators_``, HistGradientBoosting's
``_predictors`` node records and bitsets, ``_baseline_prediction``), never pickles. What
scikit-learn 1.9 predicts, and this converter reproduces:

- ``DecisionTree*``, ``RandomForest*``, ``ExtraTrees*`` (``sklearn/tree/_tree.pyx``
  ``_apply_dense``): X is cast to float32; a node sends ``x`` left iff ``x <= threshold``
  (float64), NaN to its ``missing_go_to_left`` side. A classifier tree's probability is its
  leaf's ``value`` normalised to sum to one; a forest averages its trees' probabilities (or
  predictions): summed tree by tree in float64, divided by the number of trees. Binary
  classifiers keep p(class 1) per leaf (one value a leaf, [1 - p, p] out); more classes keep
  the whole distribution in each leaf (vector leaves, ``leaf_width`` = n_classes).
- ``GradientBoosting*`` (``_gradient_boosting.pyx`` ``predict_stages``): the init
  estimator's constant raw prediction ('zero' or a ``DummyClassifier``/``DummyRegressor``,
  the default), plus ``learning_rate * value`` of each stage's tree for each class, in
  float64; NaN is refused by scikit-learn and goes right here (``x <= t`` is false); then
  the loss's inverse link (sigmoid, ``expit(2 raw)`` for the exponential loss, softmax).
- ``HistGradientBoosting*`` (``_predictor.pyx``): X is float64; ``x <= num_threshold``,
  NaN to ``missing_go_to_left``; categorical features are first ordinal-encoded (the
  estimator's internal ``OrdinalEncoder``, unknown values become missing) and a categorical
  node sends the categories of its left bitset left, other known categories right, and
  missing, negative or unknown ones to the missing side. The raw prediction starts at
  ``_baseline_prediction`` and adds every predictor's leaf in float64; then the loss's
  inverse link (identity, exp, sigmoid, softmax). The internal encoder puts categorical
  columns first; node features are mapped back to the input columns here.

Thresholds become float32 without changing a branch for any float32 input: ``x <= t`` in
double is ``x < s`` for ``s`` the smallest float32 above ``t``. Inputs should be float32
(as scikit-learn's trees use); a HistGradientBoosting model given float64 values that are
not exact in float32 compares their float32 rounding. Categorical values are integer codes
(the categories the model saw, non-negative integers below 2**24), or strings when the
model was fitted on string categories (pandas): those columns become string inputs.

Not supported (Unimplemented, naming it): multi-output trees, single-class classifiers,
init estimators other than 'zero' and the dummy ones, losses whose link is not one of the
above.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.convert.lineage import sklearn_lineage
from scoring_core.string_inputs import StringColumn
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.builder import EnsembleBuilder, bitset_from_categories, smallest_float32_above
from scoring_core.trees.ensemble import FORMAT, FORMAT_VERSION, TreeEnsemble, choose_layout
from scoring_core.trees.stage import TreeStage

_TREE = ("DecisionTreeClassifier", "DecisionTreeRegressor")
_FOREST = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
_GB = ("GradientBoostingClassifier", "GradientBoostingRegressor")
_HGB = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
# The classes this converter takes, by the package that defines them.
TREE_NAMES = _TREE  # sklearn.tree
ENSEMBLE_NAMES = _FOREST + _GB + _HGB  # sklearn.ensemble
_MODULES = {name: "sklearn.tree" for name in TREE_NAMES} | {name: "sklearn.ensemble" for name in ENSEMBLE_NAMES}
# The inverse link of a loss (``estimator._loss.link``), by class name: (link, scale).
_LINKS = {
    "IdentityLink": ("identity", 1.0),
    "LogLink": ("exp", 1.0),
    "LogitLink": ("sigmoid", 1.0),
    "HalfLogitLink": ("sigmoid", 2.0),
    "MultinomialLogit": ("softmax", 1.0),
}
_MAX_CATEGORY = 1 << 24


def from_sklearn(estimator: Any) -> TreeEnsemble:
    """The ``TreeEnsemble`` of a fitted scikit-learn tree model (see the module doc)."""
    return _convert_ensemble(estimator)[0]


def convert(estimator: Any) -> Converted:
    ensemble, string_inputs = _convert_ensemble(estimator)
    stage = TreeStage(ensemble)
    name = type(estimator).__name__
    names = getattr(estimator, "feature_names_in_", None)
    return Converted(
        model=stage,
        task=ensemble.task,
        classes=ensemble.classes if stage.probabilities else None,
        source=f"{_MODULES[name]}.{name}",
        feature_names=None if names is None else [str(n) for n in names],
        lineage={**sklearn_lineage(estimator), "objective": ensemble.objective},
        string_inputs=string_inputs,
        predict_ndim=2 if ensemble.task == "classification" else 1,
    )


# ---------------------------------------------------------------------------------------


def _convert_ensemble(estimator: Any) -> tuple[TreeEnsemble, dict[int, StringColumn]]:
    name = type(estimator).__name__
    if name not in _MODULES:
        raise Unimplemented(f"{name} is not a scikit-learn tree model this converter knows")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise InvalidArgument(f"{name} is not fitted (it has no n_features_in_)")
    n_outputs = getattr(estimator, "n_outputs_", 1)
    if n_outputs != 1:
        raise Unimplemented(f"{name} with {n_outputs} outputs: multi-output trees are not supported")
    classifier = name.endswith("Classifier")
    classes = None
    if classifier:
        classes = np.asarray(estimator.classes_).tolist()
        if len(classes) < 2:
            raise Unimplemented(f"{name} fitted on a single class: its predict_proba has one column")
    names = getattr(estimator, "feature_names_in_", None)
    feature_names = [str(n) for n in names] if names is not None else [f"f{i}" for i in range(int(n_features))]
    transform = np.zeros(int(n_features), np.uint8)
    string_inputs: dict[int, StringColumn] = {}

    if name in _TREE or name in _FOREST:
        trees = [estimator] if name in _TREE else list(estimator.estimators_)
        builder, n_groups, leaf_width = _forest(trees, classifier, len(classes or ()), name)
        base = np.zeros(n_groups)
        link, scale, divisor = "identity", 1.0, float(len(trees))
        objective = "average of trees" if name in _FOREST else "tree"
        probabilities = classifier
    elif name in _GB:
        builder, n_groups, base = _gradient_boosting(estimator, name)
        link, scale = _link(estimator, name)
        leaf_width, divisor, probabilities = 1, 1.0, False
        objective = f"loss={estimator.loss}"
    else:
        builder, n_groups, base = _hist_gradient_boosting(estimator, name, transform, string_inputs)
        link, scale = _link(estimator, name)
        leaf_width, divisor, probabilities = 1, 1.0, False
        objective = f"loss={estimator.loss}"
    if classifier and link not in ("identity", "sigmoid", "softmax"):
        raise Unimplemented(f"{name}: a classifier whose loss has link {link!r}")

    arrays = builder.arrays()
    arrays["feature_transform"] = transform
    arrays["base_margin"] = np.asarray(base, np.float64).reshape(-1)
    params: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "scikit-learn",
        "source_version": _sklearn_version(),
        "objective": f"{name} {objective}",
        "task": "classification" if classifier else "regression",
        "classes": classes,
        "n_features": int(n_features),
        "feature_names": feature_names,
        "n_groups": n_groups,
        "link": link,
        "link_scale": scale,
        "divisor": divisor,
        "accumulate": "float64",
        "layout": choose_layout(arrays),
    }
    if leaf_width != 1:
        params["leaf_width"] = leaf_width
    if probabilities:
        params["probabilities"] = True
    return TreeEnsemble(params, arrays), string_inputs


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _link(estimator: Any, name: str) -> tuple[str, float]:
    loss = getattr(estimator, "_loss", None)
    link_name = type(getattr(loss, "link", None)).__name__
    if link_name not in _LINKS:
        raise Unimplemented(
            f"{name}(loss={getattr(estimator, 'loss', None)!r}) is not supported: its link "
            f"{link_name} is not one of {', '.join(sorted(_LINKS))}")
    return _LINKS[link_name]


def _local_numbering(is_leaf: np.ndarray) -> np.ndarray:
    """Per node of one tree: its index among the internal nodes, or ``~j`` for leaf ``j``
    (both in array order; the root, node 0, is internal 0 unless the tree is a leaf)."""
    internal_rank = np.cumsum(~is_leaf) - 1
    leaf_rank = np.cumsum(is_leaf) - 1
    return np.where(is_leaf, ~leaf_rank, internal_rank).astype(np.int64)


def _add_sklearn_tree(builder: EnsembleBuilder, tree: Any, group: int, leaf_value: np.ndarray,
                      nan_left: np.ndarray | None) -> None:
    """One ``sklearn.tree._tree.Tree``: ``leaf_value[node]`` is the value of each node
    (rows of a 2-D array for vector leaves); ``nan_left[node]`` where NaN goes (None: right)."""
    left = np.asarray(tree.children_left, np.int64)
    right = np.asarray(tree.children_right, np.int64)
    is_leaf = left == -1
    local = _local_numbering(is_leaf)
    internal = np.flatnonzero(~is_leaf)
    leaves = np.flatnonzero(is_leaf)
    if nan_left is None:
        flags = np.full(internal.size, K.FLAG_NAN_RIGHT, np.uint8)
    else:
        flags = np.where(nan_left[internal] != 0, 0, K.FLAG_NAN_RIGHT).astype(np.uint8)
    cover = np.asarray(tree.weighted_n_node_samples, np.float64)  # TreeSHAP's covers, as shap takes them
    builder.add_tree(
        group,
        feature=np.asarray(tree.feature, np.int64)[internal],
        threshold=smallest_float32_above(np.asarray(tree.threshold, np.float64)[internal]),
        flags=flags,
        cat_set=np.full(internal.size, -1, np.int64),
        left=local[left[internal]],
        right=local[right[internal]],
        leaf_value=np.asarray(leaf_value[leaves], np.float64),
        node_cover=cover[internal],
        leaf_cover=cover[leaves],
    )


def _check_tree(tree: Any, name: str) -> None:
    if tree.n_outputs != 1:
        raise Unimplemented(f"{name} with {tree.n_outputs} outputs: multi-output trees are not supported")


def _forest(trees: list[Any], classifier: bool, n_classes: int, name: str
            ) -> tuple[EnsembleBuilder, int, int]:
    """Single trees and forests: (builder, n_groups, leaf_width)."""
    builder = EnsembleBuilder(np.float64)
    n_groups = 1 if not classifier or n_classes == 2 else n_classes
    for est in trees:
        tree = est.tree_
        _check_tree(tree, name)
        value = np.asarray(tree.value, np.float64)[:, 0, :]
        if classifier:
            proba = value[:, :n_classes]
            total = proba.sum(axis=1, keepdims=True)
            total[total == 0.0] = 1.0
            proba = proba / total
            leaf_value = proba[:, 1] if n_classes == 2 else proba
        else:
            leaf_value = value[:, 0]
        nan_left = getattr(tree, "missing_go_to_left", None)
        _add_sklearn_tree(builder, tree, 0, leaf_value, None if nan_left is None else np.asarray(nan_left))
    return builder, n_groups, 1 if n_groups == 1 else n_groups


def _gradient_boosting(estimator: Any, name: str) -> tuple[EnsembleBuilder, int, np.ndarray]:
    stages = np.asarray(estimator.estimators_, dtype=object)
    if stages.ndim != 2 or stages.size == 0:
        raise InvalidArgument(f"{name} is not fitted (no estimators_)")
    n_groups = stages.shape[1]
    init = estimator.init_
    if isinstance(init, str) and init == "zero":
        base = np.zeros(n_groups)
    elif type(init).__name__ in ("DummyClassifier", "DummyRegressor") and \
            type(init).__module__.startswith("sklearn.dummy") and init.strategy != "stratified":
        # The dummy estimators predict a constant: its raw value, on any row.
        row = np.zeros((1, estimator.n_features_in_), np.float32)
        with warnings.catch_warnings():  # "X does not have valid feature names"
            warnings.simplefilter("ignore", UserWarning)
            base = np.asarray(estimator._raw_predict_init(row), np.float64)[0]
    else:
        cls = type(init)
        raise Unimplemented(
            f"{name}(init={cls.__name__}"
            f"{'(strategy=' + repr(init.strategy) + ')' if hasattr(init, 'strategy') else ''}): only "
            f"init='zero' and constant dummy init estimators (the default) are supported "
            f"({cls.__module__}.{cls.__qualname__} may vary by row)")
    lr = float(estimator.learning_rate)
    builder = EnsembleBuilder(np.float64)
    for stage in stages:
        for k, est in enumerate(stage):
            tree = est.tree_
            _check_tree(tree, name)
            value = np.asarray(tree.value, np.float64)[:, 0, 0]
            _add_sklearn_tree(builder, tree, k, lr * value, None)  # scale * value, as predict_stages
    return builder, n_groups, base


def _hist_gradient_boosting(estimator: Any, name: str, transform: np.ndarray,
                            string_inputs: dict[int, StringColumn]
                            ) -> tuple[EnsembleBuilder, int, np.ndarray]:
    n_features = transform.size
    predictors = estimator._predictors
    base = np.asarray(estimator._baseline_prediction, np.float64).reshape(-1)
    n_groups = int(estimator.n_trees_per_iteration_)
    if base.size != n_groups:
        raise InvalidArgument(f"{name}: _baseline_prediction has {base.size} values for {n_groups} outputs")

    # The internal encoder's column order (categorical first) -> input columns, and each
    # categorical input column's code -> the raw category (a code, for string columns).
    is_cat = getattr(estimator, "is_categorical_", None)
    column = np.arange(n_features)
    raw_of_code: dict[int, np.ndarray] = {}
    known_bits = f_idx_map = None
    if is_cat is not None and np.any(is_cat):
        is_cat = np.asarray(is_cat, bool)
        column = np.concatenate((np.flatnonzero(is_cat), np.flatnonzero(~is_cat)))
        encoder = estimator._preprocessor.named_transformers_["encoder"]
        for j, categories in zip(np.flatnonzero(is_cat), encoder.categories_):
            cats = np.asarray(categories, dtype=object)
            if len(cats) and _is_nan(cats[-1]):
                cats = cats[:-1]
            raw_of_code[int(j)] = _category_values(cats, int(j), name, transform, string_inputs)
        known_bits, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()

    builder = EnsembleBuilder(np.float64)
    for iteration in predictors:
        if len(iteration) != n_groups:
            raise InvalidArgument(f"{name}: an iteration has {len(iteration)} trees for {n_groups} outputs")
        for k, predictor in enumerate(iteration):
            _add_hgb_tree(builder, predictor, k, column, raw_of_code, known_bits, f_idx_map, name)
    return builder, n_groups, base


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _category_values(cats: np.ndarray, j: int, name: str, transform: np.ndarray,
                     string_inputs: dict[int, StringColumn]) -> np.ndarray:
    """The raw value each code of input column ``j`` stands for, and the column's input
    rule: non-negative integer categories are read as they are; string categories make
    the column a string input whose codes are the encoder's."""
    if len(cats) and all(isinstance(c, str) for c in cats):
        string_inputs[j] = StringColumn(tuple(cats), unknown="code")
        return np.arange(len(cats), dtype=np.int64)
    try:
        values = np.asarray(cats, dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or np.any(values < 0) or np.any(values != np.floor(values)) \
            or np.any(values >= _MAX_CATEGORY):
        shown = ", ".join(repr(c) for c in list(cats)[:5])
        raise Unimplemented(
            f"{name}: categorical feature {j} has categories ({shown}, ...) that are neither "
            f"non-negative integers below 2**24 nor all strings")
    transform[j] = K.TRANSFORM_SKL_CATEGORY
    return values.astype(np.int64)


def _bits_to_codes(words: np.ndarray) -> np.ndarray:
    words = np.asarray(words, np.uint32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return np.flatnonzero(bits.reshape(-1))


def _add_hgb_tree(builder: EnsembleBuilder, predictor: Any, group: int, column: np.ndarray,
                  raw_of_code: dict[int, np.ndarray], known_bits: Any, f_idx_map: Any, name: str) -> None:
    nodes = predictor.nodes
    is_leaf = nodes["is_leaf"].astype(bool)
    local = _local_numbering(is_leaf)
    internal = np.flatnonzero(~is_leaf)
    leaves = np.flatnonzero(is_leaf)
    feature_idx = nodes["feature_idx"].astype(np.int64)
    nan_left = nodes["missing_go_to_left"].astype(bool)
    flags = np.where(nan_left, 0, K.FLAG_NAN_RIGHT).astype(np.uint8)
    threshold = smallest_float32_above(nodes["num_threshold"].astype(np.float64))
    cat_set = np.full(nodes.size, -1, np.int64)
    for i in internal[nodes["is_categorical"][internal] != 0]:
        f = int(feature_idx[i])
        j = int(column[f])
        if j not in raw_of_code or known_bits is None:
            raise InvalidArgument(f"{name}: a categorical split on feature {j}, which is not categorical")
        left_codes = _bits_to_codes(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]])
        if nan_left[i]:
            # Missing, negative and unknown values go left with the left categories: the
            # set is the known categories that go right.
            known = _bits_to_codes(known_bits[f_idx_map[f]])
            codes = np.setdiff1d(known, left_codes)
            flags[i] = K.FLAG_CATEGORICAL | K.FLAG_CAT_IN_SET_RIGHT
        else:
            # Missing, negative, unknown and known-but-not-left values all go right.
            codes = left_codes
            flags[i] = K.FLAG_CATEGORICAL | K.FLAG_NAN_RIGHT
        raw = raw_of_code[j]
        if codes.size and codes.max() >= raw.size:
            raise InvalidArgument(f"{name}: a category bitset names a code past feature {j}'s categories")
        cat_set[i] = builder.add_category_set(bitset_from_categories(raw[codes]))
        threshold[i] = 0.0
    names = nodes.dtype.names or ()
    cover = nodes["weighted_n_node_samples" if "weighted_n_node_samples" in names else "count"].astype(np.float64)
    builder.add_tree(
        group,
        feature=column[feature_idx[internal]],
        threshold=threshold[internal],
        flags=flags[internal],
        cat_set=cat_set[internal],
        left=local[nodes["left"][internal].astype(np.int64)],
        right=local[nodes["right"][internal].astype(np.int64)],
        leaf_value=nodes["value"][leaves].astype(np.float64),
        node_cover=cover[internal],
        leaf_cover=cover[leaves],
    )
