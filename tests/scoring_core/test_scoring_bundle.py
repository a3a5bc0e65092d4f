"""Bundles: content-addressed versions, verification on load, safe pack/unpack."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import scoring_core
from milepost.core.errors import DataLoss, InvalidArgument, ResourceExhausted, Unimplemented
from scoring_core import bundle
from scoring_core.model import CompiledModel
from tests.security.archives import UNSAFE_MEMBERS, regular, tar


@pytest.fixture(scope="module")
def multinomial(X, y_multi):
    return scoring_core.compile(LogisticRegression().fit(X, y_multi))


@pytest.fixture
def saved(multinomial, tmp_path) -> tuple[Path, str]:
    path = tmp_path / "bundle"
    return path, multinomial.save(path)


def test_save_load_round_trip(multinomial, saved, X, tensor_batch):
    path, version = saved
    assert len(version) == 64 and int(version, 16) >= 0
    assert multinomial.version == version
    loaded = scoring_core.load(path)
    assert loaded.version == version
    assert loaded.feature_names == multinomial.feature_names
    assert loaded.classes == multinomial.classes
    assert loaded.task == "classification" and loaded.flavor == "scoring_core"
    assert loaded.input_schema == multinomial.input_schema
    assert loaded.output_schema == multinomial.output_schema
    assert loaded.metadata == multinomial.metadata
    np.testing.assert_array_equal(loaded.predict(X), multinomial.predict(X))
    assert loaded.predict_arrow(tensor_batch(X)).equals(multinomial.predict_arrow(tensor_batch(X)))
    assert scoring_core.load(path, version=version).version == version


def test_same_model_same_version(X, y_reg, tmp_path):
    versions = set()
    for i in range(2):
        model = scoring_core.compile(LinearRegression().fit(X, y_reg))
        versions.add(model.save(tmp_path / f"b{i}"))
    assert len(versions) == 1
    assert bundle.bundle_version(tmp_path / "b0") == versions.pop()
    assert bundle.pack(tmp_path / "b0") == bundle.pack(tmp_path / "b1")


def test_different_content_different_version(X, y_reg, tmp_path):
    model = scoring_core.compile(LinearRegression().fit(X, y_reg))
    v1 = model.save(tmp_path / "a")
    model.metadata["lineage"]["run"] = "second"
    assert model.save(tmp_path / "b") != v1


def test_saving_again_in_place_is_idempotent_but_never_overwrites(multinomial, saved, X, y_reg):
    path, version = saved
    assert multinomial.save(path) == version
    other = scoring_core.compile(LinearRegression().fit(X, y_reg))
    with pytest.raises(FileExistsError):
        other.save(path)
    assert bundle.bundle_version(path) == version


def test_manifest_layout(saved, multinomial):
    path, version = saved
    manifest = bundle.read_manifest(path)
    assert manifest["format_version"] == 1
    assert manifest["flavor"] == "scoring_core"
    assert manifest["task"] == "classification"
    assert manifest["inputs"][0] == {"name": "f0", "type": "float32"}
    assert manifest["outputs"] == [{"name": "probabilities", "type": "float64", "shape": [3]}]
    assert manifest["classes"] == [0, 1, 2]
    assert manifest["transforms"] == []
    assert manifest["model"]["kind"] == "linear" and manifest["model"]["link"] == "softmax"
    assert set(manifest["model"]["arrays"]) == {"coef", "intercept"}
    coef = np.load(path / manifest["model"]["arrays"]["coef"], allow_pickle=False)
    assert coef.shape == (3, 20) and coef.dtype == np.float64
    raw = (path / "milepost.json").read_text()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, indent=2) + "\n"
    lines = (path / "CHECKSUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted(
        ["milepost.json", "arrays/model.coef.npy", "arrays/model.intercept.npy"]
    )


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["arrays/model.coef.npy", "milepost.json", "CHECKSUMS"])
def test_tampering_is_data_loss(saved, victim):
    path, _ = saved
    _flip_last_byte(path / victim)
    with pytest.raises(DataLoss):
        scoring_core.load(path)
    with pytest.raises(DataLoss):
        bundle.bundle_version(path)


def test_tampered_manifest_is_caught_by_read_manifest(saved):
    path, _ = saved
    text = (path / "milepost.json").read_text().replace('"softmax"', '"identity"')
    (path / "milepost.json").write_text(text)
    with pytest.raises(DataLoss, match="milepost.json"):
        bundle.read_manifest(path)


def test_extra_and_missing_files_are_data_loss(saved):
    path, _ = saved
    (path / "arrays" / "extra.npy").write_bytes(b"x")
    with pytest.raises(DataLoss, match="extra.npy"):
        scoring_core.load(path)
    (path / "arrays" / "extra.npy").unlink()
    (path / "arrays" / "model.intercept.npy").unlink()
    with pytest.raises(DataLoss, match="model.intercept.npy"):
        scoring_core.load(path)


def test_wrong_expected_version_is_data_loss(saved):
    path, version = saved
    wrong = ("0" if version[0] != "0" else "1") + version[1:]
    with pytest.raises(DataLoss, match=wrong):
        scoring_core.load(path, version=wrong)


def test_pack_unpack_round_trip(saved, tmp_path, X, multinomial):
    path, version = saved
    data = bundle.pack(path)
    assert data == bundle.pack(path)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {m.mtime for m in members} == {0}
    dest = tmp_path / "unpacked"
    assert bundle.unpack(data, dest) == version
    np.testing.assert_array_equal(scoring_core.load(dest, version=version).predict(X), multinomial.predict(X))
    with pytest.raises(FileExistsError):
        bundle.unpack(data, dest)
    empty = tmp_path / "empty"
    empty.mkdir()  # callers stage into a fresh temporary directory
    assert bundle.unpack(data, empty) == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "empty", "unpacked"]


@pytest.mark.parametrize("members, needle", UNSAFE_MEMBERS.values(), ids=UNSAFE_MEMBERS.keys())
def test_unpack_refuses_unsafe_archives(members, needle, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(InvalidArgument, match=needle.replace(".", r"\.")):
        bundle.unpack(tar(*members), dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere, not even a temp dir


def test_unpack_refuses_oversized_archives(saved, tmp_path):
    path, _ = saved
    with pytest.raises(ResourceExhausted, match="beyond 100 bytes"):
        bundle.unpack(bundle.pack(path), tmp_path / "dest", limits=bundle.UnpackLimits(max_bundle_expanded_bytes=100))


def test_unpack_of_garbage_or_unverifiable_content_is_data_loss(tmp_path):
    with pytest.raises(DataLoss):
        bundle.unpack(b"not a tar archive at all" * 50, tmp_path / "a")
    with pytest.raises(DataLoss, match="CHECKSUMS"):
        bundle.unpack(tar(regular("milepost.json", b"{}")), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_unknown_kinds_and_formats(tmp_path, X, y_reg):
    model = scoring_core.compile(LinearRegression().fit(X, y_reg))
    manifest, files = model.manifest_and_files()
    for change, error in (({"format_version": 99}, Unimplemented), ({"flavor": "torch"}, Unimplemented)):
        bad = {**files, "milepost.json": bundle.manifest_bytes({**manifest, **change})}
        target = tmp_path / str(sorted(change))
        bundle.write_bundle(target, bad)
        with pytest.raises(error):
            scoring_core.load(target)
    unknown = {**manifest, "model": {**manifest["model"], "kind": "quantum"}}
    bundle.write_bundle(tmp_path / "unknown", {**files, "milepost.json": bundle.manifest_bytes(unknown)})
    with pytest.raises(Unimplemented, match="quantum"):
        scoring_core.load(tmp_path / "unknown")


@scoring_core.register_kind
@dataclass(frozen=True)
class _Doubler:
    """A toy transform kind: proves a new kind plugs into bundles without format changes."""

    kind: ClassVar[str] = "test_doubler"
    width: int

    @property
    def n_features(self) -> int:
        return self.width

    @property
    def n_outputs(self) -> int:
        return self.width

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"width": self.width}, {"factor": np.full(self.width, 2.0)}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> _Doubler:
        assert np.all(arrays["factor"] == 2.0)
        return cls(params["width"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(X, dtype=np.float64) * 2.0


def test_registered_kinds_load_as_transform_stages(X, y_reg, tmp_path):
    est = LinearRegression().fit(X, y_reg)
    base = scoring_core.compile(est)
    model = CompiledModel(
        base.model,
        feature_names=base.feature_names,
        task="regression",
        transforms=[_Doubler(X.shape[1])],
    )
    version = model.save(tmp_path / "b")
    assert bundle.read_manifest(tmp_path / "b")["transforms"][0]["kind"] == "test_doubler"
    loaded = scoring_core.load(tmp_path / "b", version=version)
    np.testing.assert_allclose(loaded.predict(X), est.predict(2 * X), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="already registered"):
        scoring_core.register_kind(type("Other", (_Doubler,), {}))
