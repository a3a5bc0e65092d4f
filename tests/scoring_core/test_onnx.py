"""scoring_core.compile of ONNX graphs: parity with onnxruntime on what the exporters emit.

Every model is trained here and exported by skl2onnx, onnxmltools or torch.onnx (and one
Keras model by tf2onnx, checked in: tests/scoring_core/data/make_keras_onnx.py); the compiled
model must give onnxruntime's prediction output within 1e-5, in its shape and dtype, and the
class of its label output, from the file and from the ModelProto alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from milepost.core.errors import InvalidArgument, ResourceExhausted, Unimplemented
from tests.scoring_core.onnx_models import CASES, DATA_DIR, N_FEATURES, build, data, ort_outputs, prediction, sklearn_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
TOLERANCE = 1e-5
PARITY: dict[str, float] = {}  # case -> max |compiled - onnxruntime|, printed at the end for the report


def _probe(missing: bool) -> np.ndarray:
    X = data(n=2000, seed=11)[0] * 1.3
    X[0] = 0.0  # a zero row: a Normalizer leaves it as it is
    if missing:
        X[np.random.default_rng(5).random(X.shape) < 0.15] = np.nan
    return X


def assert_parity(compiled: scoring_core.CompiledModel, model, X: np.ndarray, case: str = "") -> None:
    outputs = ort_outputs(model, X)
    expected = prediction(outputs, compiled.classes)
    got = compiled.predict(X)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.shape, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    if case and len(X):
        PARITY[case] = max(PARITY.get(case, 0.0), float(np.abs(got.astype(np.float64) - expected).max()))
    if compiled.classes is not None and len(outputs) == 2:
        top2 = np.sort(got, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > TOLERANCE  # ties may break either way
        labels = np.asarray(compiled.classes)[got.argmax(axis=1)]
        np.testing.assert_array_equal(labels[clear], np.asarray(outputs[0]).reshape(-1)[clear])


@pytest.mark.parametrize("case", CASES)
def test_compiled_graph_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    model, missing = build(case)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    X = _probe(missing)
    from_file = scoring_core.compile(path)
    assert_parity(from_file, model, X, case)
    assert_parity(scoring_core.compile(model), model, X)
    assert from_file.metadata["source"] == "onnx" and from_file.feature_names == [f"f{i}" for i in range(N_FEATURES)]
    # The served output is named as the graph names its prediction (the last output), as
    # onnxruntime, Triton and the onnx engine answer it.
    assert from_file.output_schema.names == [model.graph.output[-1].name]


@pytest.mark.parametrize("case", ["sklearn-scaler-logistic", "sklearn-normalizer-scaler-logistic", "xgboost-binary",
                                  "torch-mlp-softmax"])
def test_one_row_empty_batch_and_a_saved_bundle(case: str, tmp_path: Path) -> None:
    model, missing = build(case)
    compiled = scoring_core.compile(model)
    X = _probe(missing)
    assert_parity(compiled, model, X[:1])
    assert compiled.predict(X[:0]).shape == (0, compiled.n_outputs)
    loaded = scoring_core.load(tmp_path / "b", version=compiled.save(tmp_path / "b"))
    assert loaded.output_schema.equals(compiled.output_schema)
    batch = pa.record_batch([pa.array(X[:, j]) for j in range(N_FEATURES)], names=loaded.feature_names)
    expected = compiled.predict(X).astype(np.float64)
    np.testing.assert_allclose(np.asarray(loaded.predict_arrow(batch).column(0).to_pylist(), np.float64).reshape(expected.shape),
                               expected, rtol=0, atol=1e-7)


def test_a_wrong_input_name_is_refused_naming_the_inputs() -> None:
    compiled = scoring_core.compile(build("sklearn-logistic")[0])
    X = _probe(False)[:5]
    names = [f"f{i}" for i in range(N_FEATURES - 1)] + ["X"]
    with pytest.raises(InvalidArgument, match="unexpected column.*'X'.*f5"):
        compiled.predict_arrow(pa.record_batch([pa.array(X[:, j]) for j in range(N_FEATURES)], names=names))


def test_several_one_column_inputs_become_features_named_as_the_inputs() -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(size=400), rng.integers(0, 4, 400), rng.normal(size=400)]).astype(np.float32)
    y = (X[:, 0] + (X[:, 1] == 2) > 0.3).astype(int)
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), [0, 2]), ("cat", OneHotEncoder(handle_unknown="ignore"), [1])]),
        LogisticRegression(max_iter=500),
    ).fit(X, y)
    types = [("amount", FloatTensorType([None, 1])), ("kind", FloatTensorType([None, 1])), ("age", FloatTensorType([None, 1]))]
    import pandas as pd

    frame = pd.DataFrame(X, columns=["amount", "kind", "age"])
    pipeline.fit(frame, y)
    model = to_onnx(pipeline, initial_types=types, target_opset={"": 17, "ai.onnx.ml": 3})
    compiled = scoring_core.compile(model)
    assert compiled.feature_names == ["amount", "kind", "age"]
    X[:7, 1] = 9  # categories the encoder never saw: zeros, as in onnxruntime
    feed = {name: X[:, [j]] for j, name in enumerate(compiled.feature_names)}
    expected = prediction(ort_outputs(model, feed), compiled.classes)
    np.testing.assert_allclose(compiled.predict(X), expected, rtol=0, atol=TOLERANCE)


def test_keras_model_exported_by_tf2onnx() -> None:
    """The TensorFlow path: a Keras MLP exported once by tf2onnx (TensorFlow is not installed here)."""
    import onnx

    path = DATA_DIR / "keras_mlp.onnx"
    reference = np.load(DATA_DIR / "keras_mlp_reference.npz")
    compiled = scoring_core.compile(path)
    assert_parity(compiled, onnx.load(str(path)), reference["x"], "keras-mlp (tf2onnx)")
    np.testing.assert_allclose(compiled.predict(reference["x"]), reference["keras"], rtol=0, atol=TOLERANCE)
    assert compiled.n_features == 6 and compiled.n_outputs == 3


def test_an_operator_the_core_lacks_is_refused_naming_it_and_the_onnx_engine() -> None:
    import torch
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC

    from tests.scoring_core.onnx_models import torch_onnx

    X, y, _ = data()
    with pytest.raises(Unimplemented, match="SVMClassifier.*onnx engine"):
        scoring_core.compile(sklearn_onnx(SVC().fit(X[:200], y[:200]), X))
    with pytest.raises(Unimplemented, match="Elu.*onnx engine"):
        scoring_core.compile(torch_onnx(torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 4), torch.nn.ELU()), X))
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    with pytest.raises(Unimplemented, match="Normalizer: norm MAX.*onnx engine"):
        scoring_core.compile(sklearn_onnx(make_pipeline(Normalizer("max"), LinearRegression()).fit(X, y), X))


def test_a_file_that_is_not_onnx_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(InvalidArgument, match="not an ONNX model"):
        scoring_core.compile(path)


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(build("sklearn-logistic")[0].SerializeToString())
    monkeypatch.setenv("MILEPOST_MAX_BUNDLE_BYTES", "100")
    with pytest.raises(ResourceExhausted, match="max_bundle_bytes"):
        scoring_core.compile(path)


def test_weights_in_external_data_are_refused(tmp_path: Path) -> None:
    import onnx

    model = build("torch-mlp-regressor")[0]
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(InvalidArgument, match="external data"):
        scoring_core.compile(tmp_path / "model.onnx")


def test_report_parity(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the largest difference seen per case (run with -s); the assertions are above."""
    with capsys.disabled():
        for case, diff in sorted(PARITY.items()):
            print(f"\n  onnx parity {case}: max |compiled - onnxruntime| = {diff:.2e}", end="")
