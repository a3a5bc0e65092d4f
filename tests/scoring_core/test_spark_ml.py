"""Spark ML pipelines compiled by scoring_core agree with Spark's own ``transform``.

Real models, trained here by Spark in local mode (one session for the module); the
saved directories are read without the JVM. Feature values are float32 numbers held as
doubles, so Spark and the core see the same inputs. Feature stages are fitted once and
shared by the models (a PipelineModel is built from fitted stages), to keep the module
to a few Spark jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from milepost.core.errors import InvalidArgument, Unimplemented

pytest.importorskip("pyspark")

TOL = 1e-5
N = 400


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from engines import spark as spark_engine

    if not spark_engine.java_found():
        pytest.skip("Spark needs a Java runtime")
    running = spark_engine._running_session()
    session = running or spark_engine.session("local[2]", {"spark.sql.shuffle.partitions": "2"})
    yield session
    if running is None:
        spark_engine.stop_session()


def _frame(n: int, seed: int, *, unseen: bool = False) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32).astype(np.float64)
    x2 = X[:, 2].copy()
    x2[rng.random(n) < 0.1] = np.nan
    cat = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    cat[rng.random(n) < 0.05] = None
    if unseen:
        cat[::7] = "zzz"
    shift = np.select([cat == "a", cat == "b"], [1.0, -1.0], 0.0)
    score = X[:, 0] + 0.5 * X[:, 1] - np.nan_to_num(x2) + shift
    species = np.where(score > 0.8, "setosa", np.where(score > -0.5, "versicolor", "virginica"))
    return pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": x2, "x3": X[:, 3], "cat": cat,
                         "label": (score > 0).astype(np.float64), "species": species, "y": score + 0.1 * X[:, 3]})


@pytest.fixture(scope="module")
def frames(spark: Any) -> dict[str, Any]:
    train, test = _frame(N, 0), _frame(120, 1)
    return {"train": train, "test": test, "train_df": spark.createDataFrame(train), "test_df": spark.createDataFrame(test)}


@pytest.fixture(scope="module")
def features(frames: dict[str, Any]) -> Any:
    """The feature stages, fitted once: impute, index, one-hot, assemble, scale twice."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Imputer, MinMaxScaler, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    stages = [
        Imputer(inputCols=["x2"], outputCols=["x2i"]),
        StringIndexer(inputCol="cat", outputCol="cat_index", handleInvalid="keep"),
        OneHotEncoder(inputCols=["cat_index"], outputCols=["cat_vec"]),
        StringIndexer(inputCol="species", outputCol="species_index"),
        VectorAssembler(inputCols=["x0", "x1", "x2i", "cat_vec"], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="scaled", withMean=True),
        MinMaxScaler(inputCol="scaled", outputCol="features"),
        # For trees: the index has nominal metadata and the one-hot bits binary metadata, so
        # Spark splits both categorically.
        VectorAssembler(inputCols=["x0", "x1", "x2i", "cat_index", "cat_vec"], outputCol="tree_features"),
    ]
    fitted = Pipeline(stages=stages).fit(frames["train_df"])
    return fitted, fitted.transform(frames["train_df"]).cache()


@pytest.fixture(scope="module")
def logistic(features: Any) -> Any:
    """A binary LogisticRegression after every feature stage."""
    from pyspark.ml.classification import LogisticRegression

    return _pipeline(features, LogisticRegression(regParam=0.01).fit(features[1]))


@pytest.fixture(scope="module")
def logistic_dir(logistic: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(logistic, tmp_path_factory, "lr")


def _pipeline(features: Any, model: Any) -> Any:
    from pyspark.ml import PipelineModel

    return PipelineModel(stages=[*features[0].stages, model])


def _saved(model: Any, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    path = tmp_path_factory.mktemp("spark") / name
    model.write().save(str(path))
    return path


def _spark_outputs(model: Any, frame: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Spark's prediction and (for classifiers) probability columns, in row order."""
    out = model.transform(frame).toPandas()
    probability = np.stack([v.toArray() for v in out["probability"]]) if "probability" in out else None
    return out["prediction"].to_numpy(), probability


def _table(frame: Any, compiled: scoring_core.CompiledModel) -> pa.Table:
    """The model's input columns of ``frame``, as Arrow gives them (floats, strings with nulls)."""
    return pa.Table.from_pandas(frame[compiled.feature_names], preserve_index=False)


def _check(compiled: scoring_core.CompiledModel, spark_model: Any, frames: dict[str, Any]) -> np.ndarray:
    """Compare on the test rows: probabilities (classifiers) or predictions, and the
    labels of Spark's predictions; returns Spark's probabilities (or predictions)."""
    prediction, probability = _spark_outputs(spark_model, frames["test_df"])
    ours = compiled.predict(_table(frames["test"], compiled))
    expected = prediction if probability is None else probability
    assert ours.shape == expected.shape and ours.dtype == np.float64
    error = float(np.abs(ours - expected).max())
    assert error <= TOL, error
    if probability is not None:
        labels = np.asarray(compiled.classes)[ours.argmax(axis=1)].tolist()
        assert [compiled.classes[i] for i in prediction.astype(int)] == labels
    empty = compiled.predict(_table(frames["test"].iloc[:0], compiled))
    assert empty.shape == (0, *ours.shape[1:])
    return expected


# ---------------------------------------------------------------------------------------


def test_vectors_and_matrices_decode_as_pyspark_serialises_them() -> None:
    """Spark stores coefficients dense or compressed, column- or row-major."""
    from pyspark.ml.linalg import DenseMatrix, MatrixUDT, SparseMatrix, Vectors, VectorUDT

    from scoring_core.convert.spark_ml_saved import matrix, vector

    a = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    dense = DenseMatrix(2, 3, a.T.reshape(-1).tolist())
    for m in (dense, DenseMatrix(2, 3, a.reshape(-1).tolist(), True), dense.toSparse(),
              SparseMatrix(2, 3, [0, 2, 3], [0, 2, 1], [1.0, 2.0, 3.0], isTransposed=True)):
        fields = ["type", "numRows", "numCols", "colPtrs", "rowIndices", "values", "isTransposed"]
        np.testing.assert_array_equal(matrix(dict(zip(fields, MatrixUDT().serialize(m))), "m"), a)
    for v in (Vectors.dense([1.0, 0.0, 2.0]), Vectors.sparse(3, [0, 2], [1.0, 2.0])):
        decoded = vector(dict(zip(["type", "size", "indices", "values"], VectorUDT().serialize(v))), "v")
        np.testing.assert_array_equal(decoded, [1.0, 0.0, 2.0])


def test_logistic_regression_pipeline_from_its_saved_directory(logistic: Any, logistic_dir: Path,
                                                               frames: dict[str, Any]) -> None:
    compiled = scoring_core.compile(str(logistic_dir))
    # In order of first use; x3 and species are read by no stage the model needs.
    assert compiled.feature_names == ["x2", "cat", "x0", "x1"]
    assert compiled.classes == [0, 1] and compiled.metadata["source"] == "pyspark.ml.PipelineModel"
    assert compiled.input_schema.field("cat").type == pa.string()
    probability = _check(compiled, logistic, frames)
    # Rows given as a numpy object array (float64 numbers) are scaled in float64, as Spark does.
    rows = frames["test"][compiled.feature_names].to_numpy(dtype=object)
    np.testing.assert_allclose(compiled.predict(rows), probability, rtol=0, atol=TOL)


def test_a_live_pipeline_model_and_multinomial_labels(features: Any, frames: dict[str, Any]) -> None:
    from pyspark.ml.classification import LogisticRegression

    lr = LogisticRegression(labelCol="species_index", family="multinomial", regParam=0.05).fit(features[1])
    model = _pipeline(features, lr)
    compiled = scoring_core.compile(model)
    # The classes are the labels of the StringIndexer that made labelCol, in index order.
    assert compiled.classes == list(features[0].stages[3].labels)
    _check(compiled, model, frames)


@pytest.mark.parametrize("kind", ["DecisionTree", "RandomForest", "GBT"])
def test_tree_classifiers(kind: str, features: Any, frames: dict[str, Any],
                          tmp_path_factory: pytest.TempPathFactory) -> None:
    import pyspark.ml.classification as C

    estimator = {"DecisionTree": C.DecisionTreeClassifier(labelCol="species_index", maxDepth=5),
                 "RandomForest": C.RandomForestClassifier(numTrees=6, maxDepth=4, seed=1),
                 "GBT": C.GBTClassifier(maxIter=4, maxDepth=3, seed=1)}[kind]
    model = _pipeline(features, estimator.setFeaturesCol("tree_features").fit(features[1]))
    compiled = scoring_core.compile(_saved(model, tmp_path_factory, kind))
    _check(compiled, model, frames)


def test_a_lone_saved_model_takes_its_vector(features: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model saved alone reads its features vector: ``tree_features[0]``..., or one tensor column."""
    import pyarrow.parquet as pq
    from pyspark.ml.classification import DecisionTreeClassifier

    tree = DecisionTreeClassifier(featuresCol="tree_features", maxDepth=5).fit(features[1])
    path = _saved(tree, tmp_path_factory, "dt")
    assert any(s["numCategories"] > 0 for s in pq.read_table(path / "data").column("split").to_pylist())
    compiled = scoring_core.compile(path)
    assert compiled.feature_names == [f"tree_features[{i}]" for i in range(8)]
    out = tree.transform(features[1].limit(100)).select("tree_features", "probability").toPandas()
    X = np.stack([v.toArray() for v in out["tree_features"]]).astype(np.float32)
    tensor = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 8)], ["x"])
    got = np.asarray(compiled.predict_arrow(tensor).column(0).to_pylist())
    np.testing.assert_allclose(got, np.stack([v.toArray() for v in out["probability"]]), rtol=0, atol=TOL)


@pytest.mark.parametrize("kind", ["Linear", "DecisionTree", "RandomForest", "GBT"])
def test_regressors(kind: str, features: Any, frames: dict[str, Any]) -> None:
    import pyspark.ml.regression as R

    estimator = {"Linear": R.LinearRegression(labelCol="y", regParam=0.1),
                 "DecisionTree": R.DecisionTreeRegressor(labelCol="y", maxDepth=5),
                 "RandomForest": R.RandomForestRegressor(labelCol="y", numTrees=6, maxDepth=4, seed=2),
                 "GBT": R.GBTRegressor(labelCol="y", maxIter=4, maxDepth=3, seed=2)}[kind]
    column = "features" if kind == "Linear" else "tree_features"
    model = _pipeline(features, estimator.setFeaturesCol(column).fit(features[1]))
    compiled = scoring_core.compile(model)
    assert compiled.task == "regression" and compiled.predict_ndim == 1
    _check(compiled, model, frames)


def test_unseen_labels_and_nulls_follow_handle_invalid(spark: Any, logistic: Any, logistic_dir: Path,
                                                       frames: dict[str, Any]) -> None:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler

    unseen = _frame(60, 3, unseen=True)
    unseen_df = spark.createDataFrame(unseen)
    # keep: unseen labels and null are the extra index
    _check(scoring_core.compile(logistic_dir), logistic, {"test": unseen, "test_df": unseen_df})

    # dropLast=False with keep: the invalid index is a category of its own, kept.
    stages = [StringIndexer(inputCol="cat", outputCol="i", handleInvalid="keep"),
              OneHotEncoder(inputCols=["i"], outputCols=["v"], dropLast=False, handleInvalid="keep"),
              VectorAssembler(inputCols=["x0", "v"], outputCol="features"), LogisticRegression()]
    wide = Pipeline(stages=stages).fit(frames["train_df"])
    _check(scoring_core.compile(wide), wide, {"test": unseen, "test_df": unseen_df})

    # error: Spark fails the job; the core refuses the batch, naming the column.
    strict = Pipeline(stages=[StringIndexer(inputCol="cat", outputCol="i", handleInvalid="error"),
                              VectorAssembler(inputCols=["x0", "i"], outputCol="features"), LogisticRegression()])
    seen = frames["train"][frames["train"]["cat"].notna()]
    strict_model = strict.fit(spark.createDataFrame(seen))
    compiled = scoring_core.compile(strict_model)
    _check(compiled, strict_model, {"test": seen.iloc[:50], "test_df": spark.createDataFrame(seen.iloc[:50])})
    with pytest.raises(InvalidArgument, match="'cat' has unknown category 'zzz'"):
        compiled.predict(_table(unseen, compiled))
    with pytest.raises(InvalidArgument, match="'cat'"):
        compiled.predict(_table(frames["test"], compiled))  # a null


def test_string_indexers_on_number_columns_read_them_as_spark_casts_them(spark: Any, tmp_path: Path) -> None:
    """StringIndexer casts a number to text before its lookup (int 2 -> "2", double 2.0 -> "2.0",
    1e7 -> "1.0E7", NaN -> "NaN", never a label): single- and multi-column indexers, saved and live."""
    import pandas as pd
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
    from pyspark.ml.regression import LinearRegression

    from scoring_core.string_inputs import java_float_text

    rng = np.random.default_rng(4)
    doubles = np.array([2.0, 0.5, 1e7, 1.5e-4, 123.25, -4.0, 0.001, 2.5e-8])

    def frame(n: int, unseen: bool) -> Any:
        k = rng.integers(-2, 4, n).astype(np.int64)
        d = rng.choice(doubles, n)
        d[rng.random(n) < 0.05] = np.nan
        if unseen:
            k[::9], d[::7] = 99, 3.25
        x0 = rng.normal(size=n).astype(np.float32).astype(np.float64)
        return pd.DataFrame({"x0": x0, "k": k, "d": d, "y": x0 + k + np.nan_to_num(d[:]) % 3})

    train, test = frame(400, False), frame(60, True)
    train_df, test_df = spark.createDataFrame(train), spark.createDataFrame(test)
    both = Pipeline(stages=[
        StringIndexer(inputCols=["k", "d"], outputCols=["ki", "di"], handleInvalid="keep"),
        OneHotEncoder(inputCols=["ki", "di"], outputCols=["kv", "dv"], handleInvalid="keep"),
        VectorAssembler(inputCols=["x0", "kv", "dv"], outputCol="features"),
        LinearRegression(labelCol="y", regParam=0.01)]).fit(train_df)
    # Spark's labels are the Java texts of the training values (NaN is not counted)
    assert sorted(both.stages[0].labelsArray[1]) == sorted(java_float_text(v) for v in doubles)
    path = tmp_path / "numbers"
    both.write().save(str(path))
    for source in (str(path), both):
        compiled = scoring_core.compile(source)
        _check(compiled, both, {"test": test, "test_df": test_df})

    single = Pipeline(stages=[StringIndexer(inputCol="k", outputCol="ki", handleInvalid="error"),
                              VectorAssembler(inputCols=["x0", "ki"], outputCol="features"),
                              LinearRegression(labelCol="y")]).fit(train_df)
    compiled = scoring_core.compile(single)
    _check(compiled, single, {"test": train.iloc[:50], "test_df": spark.createDataFrame(train.iloc[:50])})
    with pytest.raises(InvalidArgument, match="'k' has unknown category '99'"):
        compiled.predict(_table(test, compiled))
    # a double column for an indexer fitted on integers: 2.0 is "2.0", not the label "2", in Spark too
    as_doubles = train.iloc[:20].assign(k=train.k.iloc[:20].astype(np.float64))
    with pytest.raises(InvalidArgument, match="'k' has unknown categor"):
        compiled.predict(_table(as_doubles, compiled))
    with pytest.raises(Exception, match="Unseen label"):
        single.transform(spark.createDataFrame(as_doubles)).collect()


def test_edge_batches_and_wrong_names(logistic_dir: Path, frames: dict[str, Any], tmp_path: Path) -> None:
    compiled = scoring_core.compile(logistic_dir)
    table = _table(frames["test"], compiled)
    full = compiled.predict(table)
    np.testing.assert_array_equal(compiled.predict(table.slice(3, 1)), full[3:4])
    empty = compiled.predict_arrow(table.slice(0, 0))
    assert empty.num_rows == 0 and empty.schema == compiled.output_schema
    with pytest.raises(InvalidArgument, match="x2"):
        compiled.predict(table.rename_columns(["x_two", "cat", "x0", "x1"]))
    loaded = scoring_core.load(tmp_path / "b", version=compiled.save(tmp_path / "b"))
    np.testing.assert_array_equal(loaded.predict(table), full)


def test_refusals(spark: Any, logistic: Any, frames: dict[str, Any]) -> None:
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    with pytest.raises(InvalidArgument, match="estimator"):
        scoring_core.compile(LogisticRegression())
    seen = spark.createDataFrame(frames["train"][frames["train"]["cat"].notna()])
    skip = StringIndexer(inputCol="cat", outputCol="i", handleInvalid="skip").fit(seen)
    assembler = VectorAssembler(inputCols=["x0", "i"], outputCol="features")
    with pytest.raises(Unimplemented, match="handleInvalid='skip'"):
        scoring_core.compile(PipelineModel(stages=[skip, assembler, logistic.stages[-1]]))
    with pytest.raises(Unimplemented, match="no model stage"):
        scoring_core.compile(PipelineModel(stages=[assembler]))
    with pytest.raises(Unimplemented, match="after its model"):
        scoring_core.compile(PipelineModel(stages=[*logistic.stages, assembler]))


def test_the_spark_engine_scores_a_compiled_pipeline_in_its_executors(
        logistic: Any, logistic_dir: Path, frames: dict[str, Any], tmp_path: Path) -> None:
    """No Spark ML on the hot path: the bundle runs in mapInArrow, as every scoring_core bundle."""
    import pyarrow.parquet as pq

    from engines.base import DatasetJob
    from engines.spark import SparkEngine

    compiled = scoring_core.compile(logistic_dir)
    compiled.save(tmp_path / "bundle")
    pq.write_table(_table(frames["test"], compiled), tmp_path / "rows.parquet", row_group_size=40)
    SparkEngine(master="local[2]").score_dataset(tmp_path / "bundle", DatasetJob(
        source=str(tmp_path / "rows.parquet"), sink=str(tmp_path / "scored")))
    scored = pq.read_table(tmp_path / "scored").column("probabilities").to_pylist()
    _, probability = _spark_outputs(logistic, frames["test_df"])
    np.testing.assert_allclose(np.asarray(scored), probability, rtol=0, atol=TOL)
