"""Approvals as a regulated team drives them: an author pushes, a second person approves, a
production endpoint takes approved versions only; real coordinator and agent on loopback."""

from __future__ import annotations

import json

import pytest

from coordinator.server import Coordinator, CoordinatorConfig
from milepost.cli import main
from milepost.client import Client
from milepost.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import routing_pb2
from tests.chaos.nodes import HEARTBEAT_S, Agents, client, coordinator, wait_for


def _second_bundle(tmp_path):
    """Another version of the model: retrained with stronger regularisation (new content, new hash)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    import scoring_core

    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    path = tmp_path / "second"
    scoring_core.compile(LogisticRegression(C=0.05, max_iter=500).fit(X.astype("float32"), y)).save(path)
    return path


@pytest.fixture
def team(tmp_path, logistic_model):
    """A coordinator, an agent, and three people: an author (deployer), two approvers."""
    _, bundle_dir, _, _ = logistic_model
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    agents.start("a1")
    admin = client(coord)
    wait_for(lambda: [a.state for a in admin.status().agents] == ["ALIVE"], 10, "agent alive")
    people = {name: Client(coord.address, token=admin.create_token(name, role).token)
              for name, role in (("alice", "deployer"), ("bob", "approver"), ("carol", "approver"))}
    people["alice"].push_model(bundle_dir, "churn")
    people["bob"].push_model(_second_bundle(tmp_path), "churn")
    yield coord, admin, people
    for c in people.values():
        c.close()
    agents.stop_all()
    admin.close()
    coord.stop()


def test_the_author_cannot_approve_and_another_approver_can(team) -> None:
    _, admin, people = team
    with pytest.raises(PermissionDenied, match="needs role approver"):
        people["alice"].approve_model("churn:1", note="looks fine to me")
    with pytest.raises(PermissionDenied, match="'bob' pushed churn:2 .* may not approve it"):
        people["bob"].approve_model("churn:2", note="my own work")
    with pytest.raises(InvalidArgument, match="--note"):
        people["carol"].approve_model("churn:2", note="  ")
    approved = people["carol"].approve_model("churn:2", note="fairness review FR-12 passed")
    assert (approved.number, approved.stage, approved.pushed_by) == (2, "approved", "bob")
    with pytest.raises(FailedPrecondition, match="approved already"):
        people["carol"].approve_model("churn:2", note="x")
    assert [(m.number, m.stage, m.pushed_by) for m in admin.list_models("churn")] == [
        (1, "registered", "alice"), (2, "approved", "bob")]
    entry = [e for e in admin.audit() if e.action == "approve"]
    assert len(entry) == 1 and entry[0].actor == "carol (approver)" and "FR-12" in entry[0].detail


def test_a_production_endpoint_takes_approved_versions_only(team) -> None:
    _, admin, people = team
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    with pytest.raises(FailedPrecondition, match=r"requires approved versions: arm 'primary' names churn:1 .* registered"):
        alice.deploy("prod", "churn:1", require_approval=True)
    assert [e.name for e in admin.endpoints()] == []  # the refusal placed nothing
    carol.approve_model("churn:1", note="baseline, validated offline")
    endpoint = alice.deploy("prod", "churn:1", require_approval=True)
    assert endpoint.require_approval and [d.number for d in endpoint.deployments] == [1]

    # churn:2 is unapproved: no canary, no redeploy; a shadow (answers discarded) is allowed.
    with pytest.raises(FailedPrecondition, match="arm 'candidate' names churn:2"):
        alice.canary("prod", "churn:2")
    with pytest.raises(FailedPrecondition, match="churn:2"):
        alice.deploy("prod", "churn:2")  # the mark stays without the flag
    shadowed = alice.shadow("prod", "churn:2")
    assert sorted(d.number for d in shadowed.deployments) == [1, 2]
    with pytest.raises(FailedPrecondition, match="churn:2"):
        alice.promote("prod")
    carol.approve_model("churn:2", note="shadow agreed on 99.8% of requests")
    promoted = alice.promote("prod")
    assert [d.number for d in promoted.deployments] == [2]

    # Lifting the requirement is an approver's call.
    with pytest.raises(PermissionDenied, match="needs role approver"):
        alice.set_endpoint_approval("prod", False)
    assert not bob.set_endpoint_approval("prod", False).require_approval
    kinds = [e.kind for e in admin.events("prod")]
    assert "require_approval" in kinds


def _split_to(endpoint: str, client: Client, model_arm: str = "churn:1"):
    """Half of ``endpoint``'s traffic to a model, half to endpoint 'staging' (an endpoint arm)."""
    name, version = model_arm.split(":")
    arms = [pb.ArmSpec(name="a", model=name, version=version, weight=0.5),
            pb.ArmSpec(name="b", endpoint="staging", weight=0.5)]
    return client.set_policy(endpoint, routing_pb2.RoutingPolicy(kind="split"), arms)


def test_a_production_endpoint_serves_approved_versions_through_endpoint_arms_too(team) -> None:
    _, admin, people = team
    alice, carol = people["alice"], people["carol"]
    carol.approve_model("churn:1", note="baseline")
    alice.deploy("prod", "churn:1", require_approval=True)
    alice.deploy("staging", "churn:2")  # unapproved, and staging is no production endpoint
    with pytest.raises(FailedPrecondition, match=r"endpoint 'prod' requires approved versions: arm 'b' "
                                                 r"\(endpoint 'staging', its arm 'primary'\) names churn:2 .*, which is registered"):
        _split_to("prod", alice)
    assert [a.name for a in next(e for e in admin.endpoints() if e.name == "prod").routing.arms] == ["primary"]

    alice.deploy("staging", "churn:1")
    routed = _split_to("prod", alice)
    assert [(a.name, a.endpoint) for a in routed.routing.arms] == [("a", ""), ("b", "staging")]
    # Now staging is behind prod: what would put churn:2 behind it is refused, naming the way there.
    behind = r"endpoint 'prod' requires approved versions: arm 'b' \(endpoint 'staging', its arm '{}'\) names churn:2"
    with pytest.raises(FailedPrecondition, match=behind.format("candidate") + " .*, which is registered"):
        alice.canary("staging", "churn:2")
    with pytest.raises(FailedPrecondition, match=behind.format("primary")):
        alice.deploy("staging", "churn:2")
    alice.shadow("staging", "churn:2")  # a shadow's answers are discarded: allowed behind prod too
    with pytest.raises(FailedPrecondition, match=behind.format("shadow")):
        alice.promote("staging")
    alice.rollback("staging")  # never refused
    # Two endpoints up: edge (production) -> prod (no longer) -> staging.
    alice.deploy("edge", "churn:1")
    alice.set_policy("edge", routing_pb2.RoutingPolicy(kind="single"), [pb.ArmSpec(name="all", endpoint="prod")])
    assert alice.set_endpoint_approval("edge", True).require_approval
    assert not people["bob"].set_endpoint_approval("prod", False).require_approval
    with pytest.raises(FailedPrecondition, match=r"endpoint 'edge' requires approved versions: arm 'all' \(endpoint "
                       r"'prod', its arm 'b' \(endpoint 'staging', its arm 'primary'\)\) names churn:2"):
        alice.deploy("staging", "churn:2")

    carol.approve_model("churn:2", note="reviewed")
    assert alice.canary("staging", "churn:2").policy == "canary"
    assert [d.number for d in alice.promote("staging").deployments] == [2]


def test_marking_an_endpoint_that_routes_to_an_unapproved_version_is_refused(team) -> None:
    _, _, people = team
    alice, carol = people["alice"], people["carol"]
    carol.approve_model("churn:1", note="baseline")
    alice.deploy("staging", "churn:2")
    alice.deploy("front", "churn:1")
    _split_to("front", alice)
    with pytest.raises(FailedPrecondition, match=r"endpoint 'front' requires approved versions: arm 'b' "
                                                 r"\(endpoint 'staging', its arm 'primary'\) names churn:2"):
        alice.set_endpoint_approval("front", True)
    alice.deploy("staging", "churn:1")
    assert alice.set_endpoint_approval("front", True).require_approval


def test_marking_an_endpoint_that_serves_an_unapproved_version_is_refused(team) -> None:
    _, _, people = team
    people["alice"].deploy("staging", "churn:1")
    with pytest.raises(FailedPrecondition, match="churn:1"):
        people["alice"].set_endpoint_approval("staging", True)
    people["carol"].approve_model("churn:1", note="ok")
    assert people["alice"].set_endpoint_approval("staging", True).require_approval


def test_a_retired_version_takes_no_new_deployment(team) -> None:
    _, _, people = team
    with pytest.raises(PermissionDenied):
        people["alice"].retire_model("churn:1", note="superseded")
    retired = people["bob"].retire_model("churn:1", note="superseded by churn:2")
    assert retired.stage == "retired"
    with pytest.raises(FailedPrecondition, match="churn:1 .* is retired"):
        people["alice"].deploy("api", "churn:1")
    with pytest.raises(FailedPrecondition, match="retired"):
        people["carol"].approve_model("churn:1", note="too late")


def _report(auc: float, min_auc: float = 0.8, **extra) -> dict:
    """A validation report as `milepost validate` writes one, with one gate (min_auc)."""
    passed = auc >= min_auc
    return {"metrics": {"auc": auc}, "gates": [{"gate": "min_auc", "value": auc, "limit": min_auc, "passed": passed}],
            "passed": passed, "data": {"sha256": "ab" * 32}, **extra}


def test_models_show_tells_the_whole_story(team, capsys, monkeypatch) -> None:
    coord, admin, people = team
    alice = people["alice"]
    alice.record_validation("churn", "1", True, _report(0.91))
    people["carol"].approve_model("churn:1", note="model risk committee 2026-12")
    alice.deploy("api", "churn:1")
    alice.canary("api", "churn:2")
    alice.rollback("api")
    details = admin.model_details("churn", "1")
    assert details.model.stage == "approved" and details.model.pushed_by == "alice"
    assert [(v.passed, v.actor) for v in details.validations] == [(True, "alice (deployer)")]
    assert [a.note for a in details.approvals] == ["model risk committee 2026-12"]
    assert [(p.endpoint, p.state) for p in details.placements] == [("api", "READY")]
    # Its own entries, and the endpoint's that name it: placed, deployed, the canary's baseline, rolled back to.
    version = f"churn:{details.model.digest.removeprefix('sha256:')}"
    assert [(e.action, e.subject) for e in details.audit] == [
        ("push", version), ("validate", version), ("approve", version),
        ("placement", "api"), ("deploy", "api"), ("policy", "api"), ("rollback", "api")]
    # churn:2 was the candidate: its history shows where it went and that it was rolled back.
    candidate = admin.model_details("churn", "2")
    short = candidate.model.digest.removeprefix("sha256:")[:12]
    assert [(e.action, e.subject) for e in candidate.audit] == [
        ("push", f"churn:{candidate.model.digest.removeprefix('sha256:')}"), ("placement", "api"), ("policy", "api"),
        ("rollback", "api")]
    assert f"leaving candidate (churn:{short}," in candidate.audit[-1].detail
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    monkeypatch.setenv("MILEPOST_TOKEN", coord.admin_token_file.read_text().strip())
    assert main(["models", "show", "churn:1"]) == 0
    out = capsys.readouterr().out
    for text in ("churn:1", "stage       approved", "by alice", "VALIDATIONS", "min_auc=0.91", "carol (approver)",
                 "model risk committee", "RUNS ON", "api", "AUDIT", "validate", "rollback"):
        assert text in out, text
    assert main(["models", "show", "churn:1", "--output", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"]["stage"] == "approved" and shown["placements"][0]["endpoint"] == "api"
    assert main(["models", "approve", "churn:9", "--note", "x"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_approval_can_require_a_passing_validation(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, _ = logistic_model
    node = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0, heartbeat_interval_s=HEARTBEAT_S,
                                         approval_requires_validation=True))
    node.start()
    try:
        admin = client(node)
        with Client(node.address, token=admin.create_token("ci", "deployer").token) as ci, \
                Client(node.address, token=admin.create_token("qa", "deployer").token) as qa, \
                Client(node.address, token=admin.create_token("risk", "approver").token) as risk:
            ci.push_model(bundle_dir, "m")
            with pytest.raises(FailedPrecondition, match="no passing validation.*milepost validate m:1"):
                risk.approve_model("m:1", note="ok")
            assert qa.record_validation("m", "1", False, _report(0.7)).stage == "registered"
            with pytest.raises(FailedPrecondition, match="no passing validation"):
                risk.approve_model("m:1", note="ok")
            # The author's own passing validation is not independent: approval still waits.
            assert ci.record_validation("m", "1", True, _report(0.9)).stage == "validated"
            with pytest.raises(FailedPrecondition, match=r"validated only by 'ci', who pushed it.*independent"):
                risk.approve_model("m:1", note="ok")
            assert qa.record_validation("m", "1", True, _report(0.9)).stage == "validated"
            assert risk.approve_model("m:1", note="ok").stage == "approved"
            # A later failing validation leaves the approval standing, on record.
            assert qa.record_validation("m", "1", False, _report(0.7)).stage == "approved"
            assert [(v.passed, v.actor) for v in admin.model_details("m", "1").validations] == [
                (False, "qa (deployer)"), (True, "ci (deployer)"), (True, "qa (deployer)"), (False, "qa (deployer)")]
        admin.close()
    finally:
        node.stop()


def test_an_older_database_gains_stages_and_keeps_its_versions(tmp_path, logistic_model) -> None:
    """A database made before review existed: versions open as registered, pushed by nobody known."""
    import sqlite3

    from coordinator.governance import Governance
    from coordinator.store import Store

    _, bundle_dir, _, _ = logistic_model
    node = coordinator(tmp_path / "c")
    with client(node) as admin:
        admin.push_model(bundle_dir, "old")
        admin.deploy("e", "old")
        with Client(node.address, token=admin.create_token("qa", "deployer").token) as qa:
            qa.record_validation("old", "1", True, _report(0.9))
    node.stop()
    db = sqlite3.connect(tmp_path / "c" / "milepost.db")
    for table, column in (("models", "stage"), ("models", "pushed_by"), ("endpoints", "require_approval"),
                          ("validations", "validator")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    store = Store(tmp_path / "c" / "milepost.db")
    try:
        (m,) = store.list_models("old")
        assert (m.number, m.stage, m.pushed_by) == (1, "registered", "")
        assert [e.require_approval for e in store.list_endpoints()] == [False]
        Governance(store, lambda: 0.0)  # review's own tables: who validated, read back from the actor
        with store.transaction() as tx:
            assert tx.execute("SELECT validator, actor FROM validations").fetchall() == [("qa", "qa (deployer)")]
    finally:
        store.close()


def test_the_cli_drives_review_as_the_readme_shows(team, capsys, monkeypatch) -> None:
    coord, admin, _ = team
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    tokens = {role: admin.create_token(f"cli-{role}", role).token for role in ("deployer", "approver")}
    as_role = lambda role, *argv: main([*argv, "--token", tokens[role]])  # noqa: E731
    assert as_role("deployer", "deploy", "prod", "--model", "churn:1", "--require-approval") == 1
    err = capsys.readouterr().err
    assert "FAILED_PRECONDITION" in err and "churn:1" in err and "milepost models approve" in err
    assert as_role("approver", "models", "approve", "churn:1", "--note", "MR-118") == 0
    assert capsys.readouterr().out.strip().startswith("churn:1 sha256:")
    assert as_role("deployer", "deploy", "prod", "--model", "churn:1", "--require-approval") == 0
    capsys.readouterr()
    assert as_role("deployer", "endpoints", "prod", "--require-approval", "off") == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert as_role("approver", "endpoints", "prod", "--require-approval", "off") == 0
    assert capsys.readouterr().out.strip() == "prod: approval not required"
    assert as_role("approver", "models", "retire", "churn:2", "--note", "superseded") == 0
    assert main(["models", "list", "churn", "--token", tokens["deployer"]]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("churn ")]
    assert [(r[1], r[4]) for r in rows] == [("1", "approved"), ("2", "retired")]


def test_who_submits_a_training_run_is_the_author_of_what_it_trains(team, tmp_path) -> None:
    """The agent pushes the version a training stage makes, for the person who submitted the
    run: that person is its author, and may not approve it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from milepost.pipeline_spec import spec_from_dict

    _, admin, people = team
    bob, carol = people["bob"], people["carol"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    data = tmp_path / "a1" / "train.parquet"  # the agent's data directory, which its stages may read
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x[:, 0] > 0).astype(np.int64)}), data)
    spec = {"name": "retrain", "stages": [{"name": "train", "kind": "training", "engine": "native", "params": {
        "entry": "engines.trainers:sklearn", "data": str(data), "model_name": "trained",
        "params": {"label": "y", "estimator": "sklearn.linear_model.LogisticRegression"}}}]}
    run = bob.submit_pipeline(spec_from_dict(spec, base=tmp_path))
    wait_for(lambda: admin.run(run.run_id).state in ("SUCCEEDED", "FAILED"), 60, "the run finished")
    (stage,) = admin.run(run.run_id).stages
    assert stage.state == "SUCCEEDED", stage.message
    (trained,) = admin.list_models("trained")
    assert (trained.number, trained.pushed_by) == (1, "bob")  # not the agent 'a1' that carried the push out
    with pytest.raises(PermissionDenied, match="'bob' pushed trained:1 .* may not approve it"):
        bob.approve_model("trained:1", note="my own retrain")
    assert carol.approve_model("trained:1", note="reviewed the retrain").stage == "approved"
