"""The onnx engine beyond the conformance suite: graphs the core cannot compile, every output
of them, per-column inputs, devices, and `milepost push` of .onnx files.

Parity is with onnxruntime's own default call on the same file (1e-5, same dtypes); the
models are trained and exported here (tests/scoring_core/onnx_models.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engines.base import DeploymentSpec
from engines.onnx import OnnxEngine, save_bundle
from milepost.core.errors import FailedPrecondition, InvalidArgument, Unimplemented
from scoring_core import bundle
from tests.scoring_core.onnx_models import N_FEATURES, build, data, ort_outputs, prediction, sklearn_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def spec(device: str = "cpu", half: bool = False) -> DeploymentSpec:
    return DeploymentSpec("d", "e", "m", "", device=device, half=half)


def batch_of(X: np.ndarray, names: list[str] = FEATURES) -> pa.RecordBatch:
    return pa.record_batch([pa.array(X[:, j]) for j in range(X.shape[1])], names=names)


@pytest.fixture(scope="module")
def bayes_model() -> object:
    """A skl2onnx GaussianNB: label and ZipMap probabilities, computed with operators the core
    has no equivalent for (ReduceLogSumExp, Exp, Pow...), so only the engine serves it."""
    from sklearn.naive_bayes import GaussianNB

    X, y, _ = data()
    return sklearn_onnx(GaussianNB().fit(X, y), X)


@pytest.fixture
def loaded(bayes_model, tmp_path: Path):
    save_bundle(bayes_model, tmp_path / "b")
    model = OnnxEngine().load(tmp_path / "b", spec())
    yield model
    model.close()


def test_bundle_records_inputs_outputs_and_the_file(bayes_model, tmp_path: Path) -> None:
    version = save_bundle(bayes_model, tmp_path / "b")
    manifest = bundle.read_manifest(tmp_path / "b")
    assert manifest["flavor"] == "onnx" and (tmp_path / "b" / "model.onnx").read_bytes() == bayes_model.SerializeToString()
    assert [i["name"] for i in manifest["inputs"]] == FEATURES
    assert manifest["outputs"] == [
        {"name": "output_label", "type": "int64", "shape": []},
        {"name": "output_probability", "type": "float32", "shape": [3], "labels": [0, 1, 2]},
    ]
    assert save_bundle(bayes_model.SerializeToString(), tmp_path / "b") == version  # bytes: the same bundle


def test_every_output_matches_onnxruntime(loaded, bayes_model) -> None:
    X = data(n=1000, seed=4)[0]
    out = loaded.predict(batch_of(X))
    expected = ort_outputs(bayes_model, X)
    assert out.schema.names == ["output_label", "output_probability"]
    np.testing.assert_array_equal(out.column(0).to_numpy(), expected[0])
    probabilities = np.asarray(out.column(1).flatten().to_numpy()).reshape(len(X), 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, prediction(expected, [0, 1, 2]), rtol=0, atol=1e-5)


def test_a_tensor_column_one_row_and_an_empty_batch(loaded, bayes_model) -> None:
    X = data(n=50, seed=5)[0]
    tensor = pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), N_FEATURES)], names=["input"])
    np.testing.assert_array_equal(loaded.predict(tensor).column(0).to_numpy(), ort_outputs(bayes_model, X)[0])
    assert loaded.predict(batch_of(X[:1])).num_rows == 1
    empty = loaded.predict(batch_of(X[:0]))
    assert empty.num_rows == 0 and empty.schema.equals(loaded.output_schema)


def test_a_wrong_input_name_is_refused_naming_the_inputs(loaded) -> None:
    X = data(n=5)[0]
    with pytest.raises(InvalidArgument, match="unexpected column.*'X'.*'f5'"):
        loaded.predict(batch_of(X, [*FEATURES[:-1], "X"]))


@pytest.mark.parametrize("case", ["sklearn-random-forest", "lightgbm-binary", "torch-mlp-softmax"])
def test_graphs_the_core_compiles_serve_alike_on_the_engine(case: str, tmp_path: Path) -> None:
    model, missing = build(case)
    save_bundle(model, tmp_path / "b")
    loaded = OnnxEngine().load(tmp_path / "b", spec())
    X = data(n=800, seed=6, missing=missing)[0]
    out = loaded.predict(batch_of(X))
    got = out.column(out.num_columns - 1)
    width = got.type.list_size if pa.types.is_fixed_size_list(got.type) else 1
    values = np.asarray(got.flatten().to_numpy() if width > 1 else got.to_numpy()).reshape(len(X), width)
    expected = prediction(ort_outputs(model, X), list(range(width)))
    np.testing.assert_allclose(values, expected.reshape(len(X), width), rtol=0, atol=1e-5)


def test_one_column_inputs_of_several_types_string_included(tmp_path: Path) -> None:
    """skl2onnx's per-column inputs (a DataFrame with a string column): one field an input."""
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"amount": rng.normal(size=300).astype(np.float32), "city": rng.choice(["ams", "oslo", "rome"], 300)})
    y = ((frame.amount > 0) ^ (frame.city == "rome")).astype(int)
    pipeline = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["amount"]),
                                                ("c", OneHotEncoder(handle_unknown="ignore"), ["city"])]),
                             LogisticRegression()).fit(frame, y)
    model = to_onnx(pipeline, initial_types=[("amount", FloatTensorType([None, 1])), ("city", StringTensorType([None, 1]))],
                    target_opset={"": 17, "ai.onnx.ml": 3})
    with pytest.raises(Unimplemented, match="onnx engine"):
        import scoring_core

        scoring_core.compile(model)
    save_bundle(model, tmp_path / "b")
    loaded = OnnxEngine().load(tmp_path / "b", spec())
    assert loaded.input_schema == pa.schema([("amount", pa.float32()), ("city", pa.string())])
    out = loaded.predict(pa.record_batch([pa.array(frame.amount), pa.array(frame.city)], names=["amount", "city"]))
    expected = ort_outputs(model, {"amount": frame[["amount"]].to_numpy(), "city": frame[["city"]].to_numpy().astype(object)})
    np.testing.assert_array_equal(out.column(0).to_numpy(), expected[0])
    with pytest.raises(InvalidArgument, match="city.*nulls"):
        loaded.predict(pa.record_batch([pa.array([1.0], pa.float32()), pa.array([None], pa.string())], names=["amount", "city"]))


def test_input_onnxruntime_refuses_is_invalid_argument(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = np.random.default_rng(0).integers(0, 3, size=(200, 2)).astype(np.float32)
    model = sklearn_onnx(make_pipeline(OneHotEncoder(handle_unknown="error"), LogisticRegression()).fit(X, X[:, 0] > 0), X)
    save_bundle(model, tmp_path / "b")
    loaded = OnnxEngine().load(tmp_path / "b", spec())
    with pytest.raises(InvalidArgument, match="onnxruntime refused"):
        loaded.predict(batch_of(np.array([[7.0, 1.0]], np.float32), ["f0", "f1"]))


def test_cuda_without_a_gpu_and_half_precision_are_clear_errors(bayes_model, tmp_path: Path) -> None:
    import onnxruntime

    save_bundle(bayes_model, tmp_path / "b")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this node's onnxruntime has a CUDA provider")
    with pytest.raises(FailedPrecondition, match="cuda:0.*no CUDA execution provider"):
        OnnxEngine().load(tmp_path / "b", spec("cuda:0"))
    with pytest.raises(InvalidArgument, match="half"):
        OnnxEngine().load(tmp_path / "b", spec("cpu", half=True))
    assert OnnxEngine().load(tmp_path / "b", spec("auto")).device == "cpu"


def test_push_compiles_what_the_core_can_and_ships_the_rest_as_onnx(bayes_model, tmp_path: Path) -> None:
    from milepost.client import _compile_file

    for name, model, flavor in (("core.onnx", build("xgboost-binary")[0], "scoring_core"),
                                ("graph.onnx", bayes_model, "onnx")):
        path = tmp_path / name
        path.write_bytes(model.SerializeToString())
        bundle.unpack(_compile_file(path), tmp_path / f"{name}.bundle")
        assert bundle.read_manifest(tmp_path / f"{name}.bundle")["flavor"] == flavor


def test_pushed_onnx_file_is_deployed_and_scored_over_the_data_plane(cluster, bayes_model, tmp_path: Path) -> None:
    """`milepost push model.onnx` end to end: an onnx bundle on the registry, deployed on the
    agent's onnx engine, scored by the Open Inference Protocol with both outputs."""
    import grpc

    from milepost.inference import grpc_predict_v2_pb2 as pb
    from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    path = tmp_path / "bayes.onnx"
    path.write_bytes(bayes_model.SerializeToString())
    with cluster.client as client:
        assert client.push_model(path, "graph").flavor == "onnx"
        assert client.deploy("graph-api", "graph").deployments[0].state == "READY"
    X = data(n=64, seed=9)[0]
    request = pb.ModelInferRequest(model_name="graph-api")
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(cluster.agent.address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    expected = ort_outputs(bayes_model, X)
    (label, label_bytes), (proba, proba_bytes) = zip(response.outputs, response.raw_output_contents)
    assert (label.name, label.datatype, proba.name, proba.datatype) == ("output_label", "INT64", "output_probability", "FP32")
    np.testing.assert_array_equal(np.frombuffer(label_bytes, "<i8"), expected[0])
    np.testing.assert_allclose(np.frombuffer(proba_bytes, "<f4").reshape(len(X), 3), prediction(expected, [0, 1, 2]),
                               rtol=0, atol=1e-5)


def test_a_hand_made_bundle_whose_weights_live_elsewhere_is_refused_at_load(bayes_model, tmp_path: Path) -> None:
    """External data would make onnxruntime open paths the artifact names: refused before it reads a byte."""
    import onnx

    save_bundle(bayes_model, tmp_path / "good")
    model = onnx.load_model_from_string(build("torch-mlp-regressor")[0].SerializeToString())
    onnx.external_data_helper.convert_model_to_external_data(model, location="../../weights.bin", size_threshold=0)
    files = {name: (tmp_path / "good" / name).read_bytes() for name in (bundle.MANIFEST,)}
    files["model.onnx"] = model.SerializeToString()
    bundle.write_bundle(tmp_path / "bad", files)
    with pytest.raises(InvalidArgument, match="external data"):
        OnnxEngine().load(tmp_path / "bad", spec())
