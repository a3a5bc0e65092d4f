"""The torch engine beyond the conformance suite: making bundles, devices, and the CUDA path.

The CUDA tests need a GPU and are skipped, with that reason, where torch sees none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.base import DeploymentSpec
from engines.torch import TorchEngine, save_bundle
from milepost.core.errors import InvalidArgument
from scoring_core import bundle
from tests.engines.conftest import FEATURES, Data, as_matrix, feature_batch

torch = pytest.importorskip("torch")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none on this node")


def spec(device: str = "cpu", half: bool = False) -> DeploymentSpec:
    return DeploymentSpec("d", "e", "m", "", device=device, half=half)


def test_bundle_holds_the_model_file_and_manifest(torch_model) -> None:
    _, bundles = torch_model
    manifest = bundle.read_manifest(bundles["export"])
    assert manifest["flavor"] == "torch"
    assert manifest["torch"]["format"] == "torch.export" and (bundles["export"] / "model.pt2").is_file()
    assert [i["name"] for i in manifest["inputs"]] == FEATURES
    assert manifest["outputs"] == [{"name": "probabilities", "type": "float32", "shape": [2]}]
    assert (bundles["torchscript"] / "model.ts").is_file()


def test_scalar_output_and_any_batch_size(tmp_path: Path, data: Data) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(8, 1)).eval()
    save_bundle(module, tmp_path / "b", example_input=data.X[:4], feature_names=FEATURES, export="export")
    model = TorchEngine().load(tmp_path / "b", spec())
    for rows in (1, 2, 777):
        out = model.predict(feature_batch(data.X[:rows]))
        with torch.inference_mode():
            expected = module(torch.from_numpy(data.X[:rows])).numpy()
        np.testing.assert_allclose(as_matrix(out.column("prediction")), expected, rtol=1e-6, atol=1e-6)
    model.close()


def test_save_bundle_checks_its_arguments(tmp_path: Path, data: Data) -> None:
    module = torch.nn.Linear(8, 1)
    with pytest.raises(InvalidArgument, match="example_input has shape"):
        save_bundle(module, tmp_path / "a", example_input=data.X[:4, :3], feature_names=FEATURES)
    with pytest.raises(InvalidArgument, match="export must be"):
        save_bundle(module, tmp_path / "b", example_input=data.X[:4], feature_names=FEATURES, export="onnx")


def test_half_precision_on_cpu_is_refused(torch_model) -> None:
    with pytest.raises(InvalidArgument, match="half"):
        TorchEngine().load(torch_model[1]["torchscript"], spec("cpu", half=True))


def test_unknown_device_is_refused_naming_the_field(torch_model) -> None:
    with pytest.raises(InvalidArgument, match="device"):
        TorchEngine().load(torch_model[1]["torchscript"], spec("tpu:0"))


def test_auto_device_takes_what_the_node_has(torch_model) -> None:
    model = TorchEngine().load(torch_model[1]["export"], spec("auto"))
    assert model.device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    model.close()


@pytest.mark.parametrize("export", ["torchscript", "export"])
def test_a_bad_archive_is_the_callers_invalid_argument_naming_the_file(torch_model, tmp_path: Path, export: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that are no archive, a truncated one, and a zip torch cannot read: INVALID_ARGUMENT
    naming the model file, never INTERNAL and never the bundle's path on this node, with the
    checks on and (torch's own errors) with them off."""
    _, files = bundle.read_bundle(torch_model[1][export])
    name = "model.ts" if export == "torchscript" else "model.pt2"
    real = files[name]
    import io
    import zipfile

    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("archive/version", "3")
    for n, (allow, data) in enumerate([(a, d) for a in ("0", "1") for d in (b"\x10" * 64, real[: len(real) // 2], other.getvalue())]):
        monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", allow)
        broken = {rel: blob for rel, blob in files.items() if rel != bundle.CHECKSUMS}
        broken[name] = data
        bundle.write_bundle(tmp_path / f"b{n}", broken)
        with pytest.raises(InvalidArgument, match=rf"^{name}") as caught:
            TorchEngine().load(tmp_path / f"b{n}", spec())
        assert str(tmp_path) not in str(caught.value) and len(str(caught.value)) < 400


@needs_gpu
@pytest.mark.parametrize("export", ["torchscript", "export"])
def test_cuda_predictions_equal_cpu(torch_model, data: Data, export: str) -> None:
    module, bundles = torch_model
    model = TorchEngine().load(bundles[export], spec("cuda:0"))
    assert model.device == "cuda:0"
    out = model.predict(feature_batch(data.X[:4096]))
    with torch.inference_mode():
        expected = module(torch.from_numpy(data.X[:4096])).numpy()
    np.testing.assert_allclose(as_matrix(out.column(0)), expected, rtol=1e-4, atol=1e-5)
    model.close()


@needs_gpu
def test_cuda_half_precision_is_close(torch_model, data: Data) -> None:
    module, bundles = torch_model
    model = TorchEngine().load(bundles["torchscript"], spec("cuda", half=True))
    out = model.predict(feature_batch(data.X[:2048]))
    assert out.schema.field(0).type.value_type == "float"  # outputs stay float32
    with torch.inference_mode():
        expected = module(torch.from_numpy(data.X[:2048])).numpy()
    np.testing.assert_allclose(as_matrix(out.column(0)), expected, atol=2e-2)
    model.close()


@needs_gpu
def test_info_lists_the_gpus() -> None:
    info = TorchEngine().info()
    assert info.devices[0] == "cpu"
    assert [d for d in info.devices if d.startswith("cuda:")] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
