"""Numbered versions and aliases, as MLflow users expect them: a real coordinator and agent.

Versions count 1, 2, 3... per model name with the content hash kept as the digest; `NAME:3`,
`NAME@sha256:HEX`, hash prefixes and `NAME@ALIAS` resolve wherever a version goes; the agent
reports the number on the Open Inference Protocol; a database made before numbers existed
is migrated.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import scoring_core
from coordinator.store import Store
from coordinator.versions import resolve
from milepost.cli import main
from milepost.core import tensor_codec
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound
from milepost.core.model_refs import parse_version, serves, split_model_ref
from milepost.inference import grpc_predict_v2_pb2 as oip
from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from milepost.v1 import routing_pb2
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[Path, str]], np.ndarray]:
    """Seventeen logistic regressions over the same eight features, each its own bundle
    (path, content hash): among any seventeen hashes two share their first hex digit."""
    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=1)
    X = X.astype(np.float32)
    root = tmp_path_factory.mktemp("versions")
    made = []
    for i in range(17):
        estimator = LogisticRegression(C=0.05 * (i + 1), max_iter=500).fit(X[:300], y[:300])
        made.append((root / f"b{i}", scoring_core.compile(estimator).save(root / f"b{i}")))
    return made, X[300:]


def rows_batch(rows: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(rows[:, j]) for j in range(rows.shape[1])],
                                      names=[f"f{j}" for j in range(rows.shape[1])])


def infer(stub: oip_grpc.GRPCInferenceServiceStub, name: str, rows: np.ndarray, version: str = "") -> oip.ModelInferResponse:
    request = oip.ModelInferRequest(model_name=name, model_version=version)
    tensor_codec.encode_inputs(rows_batch(rows), request)
    return stub.ModelInfer(request, timeout=10)


# ---- the rule, on its own ----
def test_version_texts_read_as_numbers_digests_and_aliases() -> None:
    assert parse_version("").newest and parse_version("latest").newest and parse_version("@latest").newest
    assert parse_version("3").number == 3
    assert parse_version("sha256:AB12").digest == "ab12" and parse_version("@sha256:ab12").digest == "ab12"
    assert parse_version("ab12").digest == "ab12"
    assert parse_version("champion").alias == "champion" and parse_version("@beef").alias == "beef"
    with pytest.raises(InvalidArgument, match="sha256"):
        parse_version("sha256:xyz")
    assert split_model_ref("churn@sha256:ab") == ("churn", "@sha256:ab")
    assert split_model_ref("churn:3") == ("churn", "3") and split_model_ref("churn@champion") == ("churn", "@champion")
    with pytest.raises(InvalidArgument):
        split_model_ref("churn:3", "4")
    digest = "ab" + "0" * 62
    assert serves("3", "3", digest) and not serves("13", "3", digest) and not serves("1", "3", digest)
    assert serves("ab0", "3", digest) and serves("sha256:ab", "3", digest) and not serves("champion", "3", digest)
    assert serves("", "3", digest) and not serves("0000", "3", digest) and parse_version("0").number == 0


# ---- the registry ----
def test_numbers_count_per_name_and_a_repush_is_the_same_version(cluster, bundles, tmp_path) -> None:
    made, _ = bundles
    (a, ha), (b, hb), (c, hc) = made[:3]
    with cluster.client as client:
        first = client.push_model(a, "m")
        assert (first.number, first.version, first.digest) == (1, ha, f"sha256:{ha}")
        assert client.push_model(b, "m").number == 2
        again = client.push_model(a, "m")
        assert (again.number, again.created_at) == (1, first.created_at)  # idempotent: the version it already is
        assert client.push_model(c, "m").number == 3
        assert client.push_model(b, "other").number == 1  # numbers are per name
        assert [(m.number, m.version) for m in client.list_models("m")] == [(1, ha), (2, hb), (3, hc)]

        for version, expected in (("2", hb), (f"sha256:{hc}", hc), (f"@sha256:{ha[:10]}", ha), (hb[:12], hb),
                                  ("", hc), ("latest", hc)):
            assert client.fetch_model("m", version, tmp_path / f"f-{version or 'newest'}") == expected
        assert client.fetch_model(f"m@sha256:{hb}", "", tmp_path / "whole-ref") == hb
        for missing in ("9", "0"):
            with pytest.raises(NotFound, match=f"no version {missing}"):
                client.fetch_model("m", missing, tmp_path / "none")
        with pytest.raises(NotFound, match="no alias 'champion'"):
            client.fetch_model("m", "@champion", tmp_path / "none")


def test_an_ambiguous_prefix_is_invalid_argument_listing_the_candidates(cluster, bundles, tmp_path) -> None:
    made, _ = bundles
    by_first: dict[str, list[tuple[Path, str]]] = {}
    for path, version in made:
        by_first.setdefault(version[0], []).append((path, version))
    (p1, h1), (p2, h2) = next(group for group in by_first.values() if len(group) >= 2)[:2]
    with cluster.client as client:
        n1, n2 = client.push_model(p1, "amb").number, client.push_model(p2, "amb").number
        prefix = f"sha256:{h1[0]}" if h1[0].isdigit() else h1[0]  # digits alone would be a number
        with pytest.raises(InvalidArgument) as ambiguous:
            client.deploy("amb-api", "amb", prefix)
        message = ambiguous.value.message
        assert f"amb:{n1} (sha256:{h1[:12]})" in message and f"amb:{n2} (sha256:{h2[:12]})" in message
        assert "ambiguous" in message
        with pytest.raises(InvalidArgument):
            client.fetch_model(f"amb@sha256:{h1[0]}", "", tmp_path / "x")
        assert client.endpoints() == []
        common = next(i for i, (x, y) in enumerate(zip(h1, h2)) if x != y)
        assert client.fetch_model("amb", f"sha256:{h1[: common + 1]}", tmp_path / "one") == h1  # one digit more: unique


def test_aliases_move_atomically_resolve_in_deploy_and_split_and_are_recorded(cluster, bundles) -> None:
    made, rows = bundles
    with cluster.client as client:
        for path, _ in made[:3]:
            client.push_model(path, "m")
        champion = client.set_alias("m", "champion", "1")
        assert (champion.number, list(champion.aliases)) == (1, ["champion"])
        endpoint = client.deploy("api", "m@champion")
        assert [(d.number, d.version) for d in endpoint.deployments] == [(1, made[0][1])]

        moved = client.set_alias("m", "champion", "3")
        assert (moved.number, list(moved.aliases)) == (3, ["champion"])
        listed = {m.number: list(m.aliases) for m in client.list_models("m")}
        assert listed == {1: [], 2: [], 3: ["champion"]}
        client.set_alias("m", "challenger", "@champion")  # an alias to what another names now
        assert {m.number: list(m.aliases) for m in client.list_models("m")}[3] == ["challenger", "champion"]
        client.set_alias("m", "challenger", "2")

        arms = {"a": ("m", "@champion", 1.0), "b": ("m", "challenger", 1.0)}
        split = client.split("api", arms)
        numbers = {a.name: next(d.number for d in split.deployments if d.deployment_id == a.deployment_id)
                   for a in split.routing.arms}
        assert numbers == {"a": 3, "b": 2}

        events = [e for e in client.events() if e.kind == "alias"]
        assert [e.message for e in events][-3:] == [
            f"m@champion -> m:3 (sha256:{made[2][1][:12]}) (it named m:1 (sha256:{made[0][1][:12]}))",
            f"m@challenger -> m:3 (sha256:{made[2][1][:12]})",
            f"m@challenger -> m:2 (sha256:{made[1][1][:12]}) (it named m:3 (sha256:{made[2][1][:12]}))",
        ]
        assert client.remove_alias("m", "challenger").number == 2
        with pytest.raises(NotFound, match="no alias 'challenger'"):
            client.deploy("other", "m@challenger")
        with pytest.raises(NotFound):
            client.remove_alias("m", "challenger")
        for bad in ("3", "latest", "sha256x", "a/b"):
            with pytest.raises(InvalidArgument):
                client.set_alias("m", bad, "1")
        assert [e.kind for e in client.events()][-1] == "unalias"
        for hexadecimal in ("beef", "0a1b2c", "cafe00"):  # m:beef reads as a digest prefix
            with pytest.raises(InvalidArgument, match="all hexadecimal digits.*digest prefix"):
                client.set_alias("m", hexadecimal, "1")
        assert client.set_alias("m", "beef-1", "1").number == 1  # a '-' makes it an alias again
        assert "beef-1" in {m.number: list(m.aliases) for m in client.list_models("m")}[1]


def test_delete_is_refused_while_deployed_then_removes_record_aliases_and_artifact(cluster, bundles, tmp_path) -> None:
    made, _ = bundles
    (a, ha), (b, hb) = made[3:5]
    artifacts = cluster.coordinator.artifacts
    with cluster.client as client:
        client.push_model(a, "d")
        client.push_model(b, "d")
        client.push_model(b, "twin")  # the same content under another name shares the artifact
        client.set_alias("d", "prod", "1")
        client.deploy("d-api", "d:1")
        with pytest.raises(FailedPrecondition, match="d-api") as refused:
            client.delete_model("d:1")
        assert "d:1" in refused.value.message
        with pytest.raises(InvalidArgument, match="which version"):
            client.delete_model("d")  # never "the newest"
        assert [m.number for m in client.list_models("d")] == [1, 2]

        client.undeploy("d-api")
        deleted = client.delete_model("d@prod")
        assert (deleted.number, deleted.version) == (1, ha)
        assert [m.number for m in client.list_models("d")] == [2]
        assert not artifacts.path_for(ha).exists()
        with pytest.raises(NotFound):
            client.fetch_model("d", "1", tmp_path / "gone")
        with pytest.raises(NotFound, match="no alias 'prod'"):
            client.fetch_model("d", "@prod", tmp_path / "gone")
        assert client.events()[-1].kind == "delete_model" and "aliases prod removed" in client.events()[-1].message

        client.delete_model("d", "2")
        assert artifacts.path_for(hb).exists()  # still twin:1's
        assert client.fetch_model("twin", "1", tmp_path / "twin") == hb
        assert client.push_model(a, "d").number == 3  # numbers are never reused


def test_a_database_from_before_numbers_is_migrated_in_created_at_order(tmp_path) -> None:
    path = tmp_path / "milepost.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE models (
            name TEXT NOT NULL, version TEXT NOT NULL, flavor TEXT NOT NULL, size_bytes INTEGER NOT NULL,
            created_at REAL NOT NULL, manifest_json TEXT NOT NULL, PRIMARY KEY (name, version)
        );
    """)
    rows = [("m", "c" * 64, 30.0), ("m", "a" * 64, 10.0), ("n", "d" * 64, 5.0), ("m", "b" * 64, 20.0)]
    old.executemany("INSERT INTO models VALUES (?, ?, 'scoring_core', 1, ?, '{}')", [(n, v, at) for n, v, at in rows])
    old.commit()
    old.close()

    store = Store(path)
    try:
        assert [(m.version[0], m.number) for m in store.list_models("m")] == [("a", 1), ("b", 2), ("c", 3)]
        assert [m.number for m in store.list_models("n")] == [1]
        assert resolve(store, "m:2").version == "b" * 64
        assert resolve(store, "m").version == "c" * 64
        record, created = store.add_model(store.list_models("m")[0].__class__("m", "e" * 64, "scoring_core", 1, 40.0, "{}"))
        assert created and record.number == 4
    finally:
        store.close()
    reopened = Store(path)  # a second open finds nothing left to migrate
    try:
        assert [m.number for m in reopened.list_models("m")] == [1, 2, 3, 4]
    finally:
        reopened.close()


# ---- the data plane ----
def test_the_agent_reports_the_number_and_serves_requests_naming_it(cluster, bundles) -> None:
    made, rows = bundles
    (a, ha), (b, hb) = made[5:7]
    with cluster.client as client:
        client.push_model(a, "oip")
        client.push_model(b, "oip")
        client.deploy("oip-api", "oip:2")
        channel = grpc.insecure_channel(cluster.agent.address)
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        try:
            metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name="oip-api"), timeout=10)
            assert list(metadata.versions) == ["2"]
            config = stub.ModelConfig(oip.ModelConfigRequest(name="oip-api"), timeout=10).config
            assert config.parameters["version"].string_value == "2"
            assert config.parameters["digest"].string_value == hb
            for version in ("", "2", hb[:10], f"sha256:{hb}"):
                assert infer(stub, "oip-api", rows[:3], version).model_version == "2"
            for version in ("1", "12", ha[:10]):
                with pytest.raises(grpc.RpcError) as missing:
                    infer(stub, "oip-api", rows[:3], version)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND, version
            stats = stub.ModelStatistics(oip.ModelStatisticsRequest(name="oip-api"), timeout=10).model_stats
            assert [s.version for s in stats] == ["2"]

            # A routed endpoint: each arm answers as its model's number; a request for one goes to it.
            client.split("oip-api", {"old": ("oip", "1", 0.0), "new": ("oip", "2", 1.0)})
            wait_until(lambda: stub.ModelConfig(oip.ModelConfigRequest(name="oip-api"), timeout=10)
                       .config.parameters["routing_policy"].string_value == "split")
            assert infer(stub, "oip-api", rows[:3]).model_version == "2"
            pinned = infer(stub, "oip-api", rows[:3], "1")
            assert pinned.model_version == "1" and pinned.parameters["milepost-arm"].string_param == "old"
            # One entry per version its arms serve, each with that version's requests (perf_analyzer reads
            # the one it asks for, or the highest that served, as it does against Triton).
            counts = {s.version: s.execution_count for s in stub.ModelStatistics(
                oip.ModelStatisticsRequest(name="oip-api"), timeout=10).model_stats}
            assert list(counts) == ["1", "2"] and counts["1"] == 1 and counts["2"] >= 1 + 4
        finally:
            channel.close()


def test_a_split_arm_named_by_alias_in_a_policy_spec(cluster, bundles) -> None:
    """SetPolicy's ArmSpec takes the same references (the CLI's and pipelines' way in)."""
    made, _ = bundles
    with cluster.client as client:
        for path, _ in made[7:9]:
            client.push_model(path, "s")
        client.set_alias("s", "blue", "1")
        from milepost.v1 import coordinator_pb2 as pb

        arms = [pb.ArmSpec(name="x", model="s@blue", weight=1.0), pb.ArmSpec(name="y", model="s", version="2", weight=1.0)]
        endpoint = client.set_policy("s-api", routing_pb2.RoutingPolicy(kind="split"), arms)
        assert sorted(d.number for d in endpoint.deployments) == [1, 2]


# ---- the CLI ----
def test_the_cli_lists_aliases_and_deletes_by_number(cluster, bundles, capsys) -> None:
    made, _ = bundles
    (a, ha), (b, hb) = made[9:11]
    c = ["--coordinator", cluster.coordinator.address]
    assert main(["models", "push", str(a), "--name", "cli", *c]) == 0
    assert capsys.readouterr().out.strip() == f"cli:1 sha256:{ha}"
    assert main(["models", "push", str(b), "--name", "cli", *c]) == 0
    assert main(["models", "alias", "cli", "champion", "1", *c]) == 0
    assert capsys.readouterr().out.strip().endswith(f"cli@champion -> cli:1 sha256:{ha}")
    assert main(["models", "list", "cli", *c]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("-")]
    assert listing[0].split() == ["NAME", "NUMBER", "DIGEST", "ALIASES", "STAGE", "CREATED", "FLAVOR", "SIZE"]
    assert listing[1].split()[:5] == ["cli", "1", f"sha256:{ha[:12]}", "champion", "registered"]
    assert listing[2].split()[:5] == ["cli", "2", f"sha256:{hb[:12]}", "-", "registered"]

    assert main(["deploy", "cli-api", "--model", "cli@champion", *c]) == 0
    assert "cli:1" in capsys.readouterr().out
    assert main(["models", "delete", "cli:1", *c]) == 1
    err = capsys.readouterr().err
    assert "FAILED_PRECONDITION" in err and "cli-api" in err
    assert main(["split", "cli-api", "--arm", "a=cli@champion:50", "--arm", "b=cli:2:50", *c]) == 0
    capsys.readouterr()
    assert main(["models", "unalias", "cli", "champion", *c]) == 0
    assert "cli@champion removed" in capsys.readouterr().out
    assert main(["undeploy", "cli-api", *c]) == 0
    assert main(["models", "delete", "cli:1", *c]) == 0
    assert capsys.readouterr().out.strip().endswith(f"cli:1 sha256:{ha} deleted")
    assert main(["models", "list", "cli", *c]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]] == ["2"]


def test_the_cli_says_which_aliases_a_delete_removed(cluster, bundles, capsys) -> None:
    made, _ = bundles
    (a, ha), (b, hb) = made[13:15]
    c = ["--coordinator", cluster.coordinator.address]
    for path in (a, b):
        assert main(["models", "push", str(path), "--name", "gone", *c]) == 0
    for alias, version in (("prod", "1"), ("blue", "1"), ("next", "2")):
        assert main(["models", "alias", "gone", alias, version, *c]) == 0
    capsys.readouterr()
    assert main(["models", "delete", "gone:1", *c]) == 0
    assert capsys.readouterr().out.strip() == f"gone:1 sha256:{ha} deleted (aliases removed with it: blue, prod)"
    assert main(["models", "delete", "gone:2", "--output", "json", *c]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["deleted"], shown["aliases_removed"], shown["number"]) == (True, ["next"], "2")


def test_a_pipeline_names_versions_by_alias(cluster, bundles, tmp_path) -> None:
    """A deploy stage's params.model and a batch-scoring stage's take the same references."""
    import pyarrow.parquet as pq

    from milepost.pipeline_spec import spec_from_dict

    made, rows = bundles
    with cluster.client as client:
        for path, _ in made[11:13]:
            client.push_model(path, "p")
        client.set_alias("p", "live", "2")
        data_dir = cluster.agent.config.data_dir  # where the agent's stages may read and write
        pq.write_table(pa.Table.from_batches([rows_batch(rows)]), data_dir / "in.parquet")
        spec = spec_from_dict({"name": "aliases", "stages": [
            {"name": "deploy", "kind": "deploy", "params": {"endpoint": "p-api", "model": "p@live"}},
            {"name": "score", "kind": "batch_scoring", "engine": "native",
             "params": {"model": "p@live", "source": str(data_dir / "in.parquet"), "sink": str(data_dir / "out")}},
        ]}, base=tmp_path)
        run = client.submit_pipeline(spec)
        finished = wait_until(lambda: (r := client.run(run.run_id)).state in ("SUCCEEDED", "FAILED") and r, timeout=60)
        assert finished.state == "SUCCEEDED", [s.message for s in finished.stages]
        (endpoint,) = [e for e in client.endpoints() if e.name == "p-api"]
        assert [d.number for d in endpoint.deployments] == [2]
        assert finished.stages[1].rows == len(rows)
