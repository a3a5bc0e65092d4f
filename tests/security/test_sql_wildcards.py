"""Version prefixes are matched literally: SQL LIKE wildcards in them match nothing."""

from __future__ import annotations

import pytest

from coordinator.store import ModelRecord, Store, like_prefix
from milepost.core.errors import NotFound


def record(version: str, at: float) -> ModelRecord:
    return ModelRecord(name="m", version=version, flavor="scoring_core", size_bytes=1, created_at=at, manifest_json="{}")


def test_like_prefix_escapes_its_wildcards_and_the_escape() -> None:
    assert like_prefix("ab") == "ab%"
    assert like_prefix("a%b_c\\") == "a\\%b\\_c\\\\%"


def test_the_store_matches_a_prefix_literally(tmp_path) -> None:
    store = Store(tmp_path / "milepost.db")
    try:
        store.add_model(record("ab_cd" + "0" * 59, 1.0))
        store.add_model(record("abxcd" + "1" * 59, 2.0))
        store.add_model(record("a%" + "2" * 62, 3.0))
        store.add_model(record("a\\" + "3" * 62, 4.0))
        assert store.get_model("m", "ab_").version.startswith("ab_")  # '_' is not "any one character"
        assert store.get_model("m", "a%").version.startswith("a%")  # '%' is not "anything"
        assert store.get_model("m", "a\\").version.startswith("a\\")
        assert store.get_model("m", "%") is None and store.get_model("m", "_") is None
        assert store.get_model("m", "a_") is None  # no version starts with these two characters
        assert store.get_model("m", "ab") is None  # a real prefix shared by two versions stays ambiguous
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
