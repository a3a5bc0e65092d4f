"""Approvals as a regulated team drives them: an author pushes, a second person approves, a
production endpoint takes approved versions only; real coordinator and agent on loopback."""

from __future__ import annotations

import json

import pytest

from coordinator.server import Coordinator, CoordinatorConfig
from milepost.cli import main
from milepost.client import Client
from milepost.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
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


def test_models_show_tells_the_whole_story(team, capsys, monkeypatch) -> None:
    coord, admin, people = team
    people["alice"].record_validation("churn", "1", True, {"gates": [{"gate": "min_auc", "value": 0.91, "limit": 0.8,
                                                                       "passed": True}], "data": {"sha256": "ab" * 32}})
    people["carol"].approve_model("churn:1", note="model risk committee 2026-12")
    people["alice"].deploy("api", "churn:1")
    details = admin.model_details("churn", "1")
    assert details.model.stage == "approved" and details.model.pushed_by == "alice"
    assert [(v.passed, v.actor) for v in details.validations] == [(True, "alice (deployer)")]
    assert [a.note for a in details.approvals] == ["model risk committee 2026-12"]
    assert [(p.endpoint, p.state) for p in details.placements] == [("api", "READY")]
    assert [e.action for e in details.audit] == ["push", "validate", "approve"]
    monkeypatch.setenv("MILEPOST_COORDINATOR", coord.address)
    monkeypatch.setenv("MILEPOST_TOKEN", coord.admin_token_file.read_text().strip())
    assert main(["models", "show", "churn:1"]) == 0
    out = capsys.readouterr().out
    for text in ("churn:1", "stage       approved", "by alice", "VALIDATIONS", "min_auc=0.91", "carol (approver)",
                 "model risk committee", "RUNS ON", "api", "AUDIT", "validate"):
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
                Client(node.address, token=admin.create_token("risk", "approver").token) as risk:
            ci.push_model(bundle_dir, "m")
            with pytest.raises(FailedPrecondition, match="no passing validation.*milepost validate m:1"):
                risk.approve_model("m:1", note="ok")
            assert ci.record_validation("m", "1", False, {"passed": False}).stage == "registered"
            with pytest.raises(FailedPrecondition, match="no passing validation"):
                risk.approve_model("m:1", note="ok")
            assert ci.record_validation("m", "1", True, {"passed": True}).stage == "validated"
            assert risk.approve_model("m:1", note="ok").stage == "approved"
            # A later failing validation leaves the approval standing, on record.
            assert ci.record_validation("m", "1", False, {"passed": False}).stage == "approved"
            assert [v.passed for v in admin.model_details("m", "1").validations] == [False, True, False]
        admin.close()
    finally:
        node.stop()


def test_an_older_database_gains_stages_and_keeps_its_versions(tmp_path, logistic_model) -> None:
    """A database made before review existed: versions open as registered, pushed by nobody known."""
    import sqlite3

    from coordinator.store import Store

    _, bundle_dir, _, _ = logistic_model
    node = coordinator(tmp_path / "c")
    with client(node) as admin:
        admin.push_model(bundle_dir, "old")
        admin.deploy("e", "old")
    node.stop()
    db = sqlite3.connect(tmp_path / "c" / "milepost.db")
    for table, column in (("models", "stage"), ("models", "pushed_by"), ("endpoints", "require_approval")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    store = Store(tmp_path / "c" / "milepost.db")
    try:
        (m,) = store.list_models("old")
        assert (m.number, m.stage, m.pushed_by) == (1, "registered", "")
        assert [e.require_approval for e in store.list_endpoints()] == [False]
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
