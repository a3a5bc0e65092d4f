"""Version prefixes are matched literally: SQL LIKE wildcards in them match nothing."""

from __future__ import annotations

import pytest

from coordinator.store import ModelRecord, Store, like_prefix
from coordinator.versions import resolve
from milepost.core.errors import InvalidArgument, NotFound
from milepost.core.model_refs import VersionRef


def record(version: str, at: float) -> ModelRecord:
    return ModelRecord(name="m", version=version, flavor="scoring_core", size_bytes=1, created_at=at, manifest_json="{}")


def test_like_prefix_escapes_its_wildcards_and_the_escape() -> None:
    assert like_prefix("ab") == "ab%"
    assert like_prefix("a%b_c\\") == "a\\%b\\_c\\\\%"


def test_the_store_matches_a_prefix_literally(tmp_path) -> None:
    store = Store(tmp_path / "milepost.db")
    try:
        store.add_model(record("ab" + "0" * 62, 1.0))
        store.add_model(record("ab" + "1" * 62, 2.0))
        store.add_model(record("a" + "f" * 63, 3.0))
        assert resolve(store, "m", "ab0").version == "ab" + "0" * 62
        # A digest prefix is hexadecimal: anything else reads as an alias, which no version has.
        for text in ("ab_", "a%", "a\\", "%", "_", "%0"):
            with pytest.raises(NotFound):
                resolve(store, "m", text)
        # Should a wildcard reach the store's LIKE anyway, it matches itself only.
        assert store.find_models("m", VersionRef(digest="a_")) == []
        assert store.find_models("m", VersionRef(digest="%")) == []
        with pytest.raises(InvalidArgument, match="ambiguous"):
            resolve(store, "m", "ab")  # a real prefix shared by two versions
    finally:
        store.close()


@pytest.mark.parametrize("prefix", ["%", "_", "%%", "_" * 10, "\\", "%0"])
def test_wildcard_version_prefixes_find_no_model_over_grpc(cluster, logistic_model, tmp_path, prefix) -> None:
    _, bundle_dir, version, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "churn")
        with pytest.raises(NotFound):
            client.fetch_model("churn", prefix, tmp_path / "fetched")
        with pytest.raises(NotFound):
            client.deploy("churn-api", "churn", prefix)
        assert client.endpoints() == []
        assert client.fetch_model("churn", version[:8], tmp_path / "by-prefix") == version  # prefixes still work
