"""The decision log driven as operators and auditors use it: a real coordinator and agent on loopback
serving a real XGBoost model, logging turned on per endpoint, decisions read back over ListDecisions
and the CLI, and replayed bit for bit."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from milepost.cli import main
from milepost.client import Client
from milepost.core.errors import InvalidArgument, NotFound
from milepost.v1 import agent_pb2, agent_pb2_grpc
from tests.agent.served import matrix_request, running

ENDPOINT = "lr-api"  # tests.agent.served deploys the bundle under this name
FEATURES = 6


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def xgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import xgboost as xgb

    import scoring_core

    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    y = (X[:, 0] + np.sin(3 * X[:, 1]) * X[:, 2] > 0).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1}, xgb.DMatrix(X, y), 40)
    path = tmp_path_factory.mktemp("xgb") / "model.json"
    booster.save_model(str(path))
    directory = path.parent / "bundle"
    scoring_core.compile(path).save(directory)
    return directory


@pytest.fixture(scope="module")
def served(xgb_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with running(tmp_path_factory.mktemp("decisions"), xgb_bundle) as r:
        yield r


@pytest.fixture(scope="module")
def admin(served) -> Iterator[Client]:
    with Client(served.coordinator.address, token=served.coordinator.admin_token_file.read_text().strip()) as c:
        yield c


def sample(admin: Client, served, rate: float) -> None:
    admin.set_decision_log(ENDPOINT, rate)
    wait_for(lambda: served.agent.router.table.get(ENDPOINT).decision_sample_rate == rate, "the route's sample rate")


def score(served, n: int, prefix: str, seed: int = 0) -> tuple[np.ndarray, list[bytes]]:
    rows = np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)
    answers = [served.stub.ModelInfer(matrix_request(rows[i:i + 1], f"{prefix}-{i}")).raw_output_contents[0]
               for i in range(n)]
    return rows, answers


def decisions_of(served, prefix: str) -> pa.Table:
    table = pa.concat_tables(list(served.agent.decisions.read(ENDPOINT, limit=100_000)))
    return table.filter(pa.compute.starts_with(table["request_id"], prefix + "-"))


def test_a_full_sample_logs_every_request_with_its_model_inputs_and_outputs(served, admin) -> None:
    sample(admin, served, 1.0)
    rows, answers = score(served, 40, "full")
    table = decisions_of(served, "full")
    assert table.num_rows == 40
    by_request = {r["request_id"]: r for r in table.to_pylist()}
    (model,) = admin.list_models("lr")
    for i in range(40):
        r = by_request[f"full-{i}"]
        assert r["endpoint"] == ENDPOINT and r["arm"] == "primary" and r["row"] == 0
        assert (r["model"], r["model_version"], r["model_digest"]) == ("lr", "1", model.digest)
        assert r["decision_id"].startswith("front/")
        assert np.array(r["inputs"]["input"], np.float32).tobytes() == rows[i].tobytes()
        (name,) = r["outputs"]
        assert np.array([r["outputs"][name]], "<f8").tobytes() == answers[i] or \
            np.array([r["outputs"][name]], "<f4").tobytes() == answers[i]
    assert len(set(table["decision_id"].to_pylist())) == 40
    assert 'milepost_decisions_logged_total{endpoint="lr-api"}' in served.agent.metrics_text()


def test_a_half_sample_logs_a_binomial_share(served, admin) -> None:
    sample(admin, served, 0.5)
    n = 400
    score(served, n, "half", seed=1)
    logged = decisions_of(served, "half").num_rows
    sigma = math.sqrt(n * 0.25)
    assert abs(logged - n / 2) <= 4.5 * sigma, logged  # fails by chance about once in 150,000 runs


def test_off_logs_nothing_and_the_setting_is_checked_and_audited(served, admin) -> None:
    sample(admin, served, 0.0)
    score(served, 20, "off")
    assert decisions_of(served, "off").num_rows == 0
    with pytest.raises(InvalidArgument, match=r"sample_rate must be in \[0, 1\]"):
        admin.set_decision_log(ENDPOINT, 1.5)
    with pytest.raises(NotFound, match="does not exist"):
        admin.set_decision_log("no-such-endpoint", 0.5)
    messages = [(e.kind, e.message) for e in admin.events(ENDPOINT)]
    assert ("decision_log", "decision log: 0.5 of requests sampled") in messages
    assert ("decision_log", "decision log: off") in messages
    assert any(e.action == "decision_log" for e in admin.audit())


def test_a_blocked_writer_drops_and_counts_and_the_coordinator_alerts(served, admin) -> None:
    from agent.decision_log import DecisionLogSettings

    sample(admin, served, 1.0)
    log = served.agent.decisions
    before = log.settings
    log.settings = DecisionLogSettings(queue_items=2)  # a deliberately tiny queue
    try:
        # The writer holds this lock while it writes; a reader holding it (as a long ListDecisions
        # does) stalls it for real. Serving must go on, dropping what does not fit.
        with log._files_lock:
            _, answers = score(served, 10, "blocked", seed=2)
            assert len(answers) == 10
            assert log.dropped() == {ENDPOINT: 8}
        assert 'milepost_decisions_dropped_total{endpoint="lr-api"} 8.0' in served.agent.metrics_text()
    finally:
        log.settings = before
    assert decisions_of(served, "blocked").num_rows == 2
    wait_for(lambda: any(e.kind == "alert" and "dropped 8 decision(s)" in e.message for e in admin.events(ENDPOINT)),
             "the coordinator's alert")
    alerts = [e for e in admin.audit() if e.action == "alert"]
    assert alerts and "agent front dropped 8 decision(s) of lr-api" in alerts[-1].detail


def test_list_decisions_filters_by_time_limit_and_id(served, admin) -> None:
    from milepost import decisions

    sample(admin, served, 1.0)
    start = time.time()
    score(served, 5, "early", seed=3)
    middle = time.time()
    score(served, 5, "late", seed=4)
    late = decisions.list_decisions(admin, ENDPOINT, since=middle)
    assert sorted(late["request_id"].to_pylist()) == sorted(f"late-{i}" for i in range(5))
    window = decisions.list_decisions(admin, ENDPOINT, since=start, until=middle)
    assert sorted(window["request_id"].to_pylist()) == sorted(f"early-{i}" for i in range(5))
    first = decisions.list_decisions(admin, ENDPOINT, since=start, limit=3)
    assert first["request_id"].to_pylist() == ["early-0", "early-1", "early-2"]
    one_id = late["decision_id"][0].as_py()
    one = decisions.get_decision(admin, one_id)
    assert one["decision_id"].to_pylist() == [one_id] and one["request_id"][0].as_py() == late["request_id"][0].as_py()
    with pytest.raises(InvalidArgument, match="is not AGENT_ID/TIME-SEQ"):
        decisions.get_decision(admin, "garbage")
    with pytest.raises(NotFound, match="not in this agent's decision log"):
        decisions.get_decision(admin, "front/1-00001")
    with pytest.raises(NotFound, match="agent 'elsewhere'"):
        decisions.get_decision(admin, "elsewhere/1-00001")


def test_replay_is_identical_bit_for_bit_and_a_changed_log_is_shown(served, admin, tmp_path, capsys) -> None:
    from milepost import decisions

    sample(admin, served, 1.0)
    rows = np.random.default_rng(5).normal(size=(7, FEATURES)).astype(np.float32)
    rows[0, 1] = np.nan  # a missing value takes the trees' default branches
    served.stub.ModelInfer(matrix_request(rows, "replayed-0"))
    (decision_id,) = set(decisions_of(served, "replayed")["decision_id"].to_pylist())
    result = decisions.replay(admin, decision_id)
    assert result.identical and result.rows == 7 and result.differences == []
    flags = ["--coordinator", served.coordinator.address, "--token", admin.token]
    assert main(["replay", decision_id, *flags]) == 0
    assert "identical, bit for bit" in capsys.readouterr().out

    # Someone edits the logged answer: replay says so, and which row.
    (path,) = [p for p in served.agent.decisions.directory.rglob("*.parquet") if decision_id in pq.read_table(p, columns=["decision_id"])["decision_id"].to_pylist()]
    table = pq.read_table(path)
    outputs = table["outputs"].combine_chunks()
    name = outputs.type.field(0).name
    column = outputs.field(name)  # probabilities: fixed_size_list<double>[2]
    values = column.flatten().to_numpy().copy()
    target = [d == decision_id for d in table["decision_id"].to_pylist()].index(True) + 3
    values[2 * target + 1] = np.nextafter(values[2 * target + 1], np.inf)  # one ulp of P(class 1), row 3
    changed = pa.StructArray.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(values), type=column.type)],
                                         fields=[outputs.type.field(0)])
    pq.write_table(table.set_column(table.schema.get_field_index("outputs"), "outputs", changed), path)
    assert main(["replay", decision_id, *flags]) == 1
    shown = capsys.readouterr().out
    assert "DIFFERENT" in shown and f"{name}[3]" in shown


def test_decisions_cli_writes_json_and_parquet(served, admin, tmp_path, capsys) -> None:
    sample(admin, served, 1.0)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    rows, _ = score(served, 3, "cli", seed=6)
    flags = ["--coordinator", served.coordinator.address, "--token", admin.token]
    assert main(["decisions", ENDPOINT, "--since", since, *flags]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cli = [r for r in lines if r["request_id"].startswith("cli-")]
    assert [r["request_id"] for r in cli] == ["cli-0", "cli-1", "cli-2"]
    assert cli[0]["inputs"]["input"] == [float(v) for v in rows[0]] and cli[0]["time"].endswith("+00:00")
    out = tmp_path / "d.parquet"
    assert main(["decisions", ENDPOINT, "--since", "1m", "--output", "parquet", "--out", str(out), *flags]) == 0
    table = pq.read_table(out)
    assert {"cli-0", "cli-1", "cli-2"} <= set(table["request_id"].to_pylist())
    assert table.schema.field("inputs").type == pa.struct([pa.field("input", pa.list_(pa.float32(), FEATURES))])
    assert main(["decisions", ENDPOINT, "--output", "parquet", *flags]) == 1
    assert "--output parquet needs --out FILE" in capsys.readouterr().err


def test_a_viewer_reads_decisions_and_no_token_cannot(served, admin) -> None:
    viewer_token = admin.create_token("auditor", "viewer").token
    request = agent_pb2.ListDecisionsRequest(endpoint=ENDPOINT, limit=1)
    with grpc.insecure_channel(served.agent.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ListDecisions(request))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        def viewer_reads() -> bool:
            try:
                return len(list(stub.ListDecisions(request, metadata=[("authorization", f"Bearer {viewer_token}")]))) >= 0
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED  # until the next heartbeat brings the token
                return False

        wait_for(viewer_reads, "the viewer's token to reach the agent")
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.ListDecisions(agent_pb2.ListDecisionsRequest(), metadata=[("authorization", f"Bearer {viewer_token}")]))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs an endpoint or a decision_id" in bad.value.details()


def test_explain_a_logged_decision_agrees_with_xgboost(served, admin, xgb_bundle, capsys) -> None:
    import xgboost as xgb

    from milepost import decisions

    sample(admin, served, 1.0)
    rows = np.random.default_rng(8).normal(size=(2, FEATURES)).astype(np.float32)
    served.stub.ModelInfer(matrix_request(rows, "explained-0"))
    (decision_id,) = set(decisions_of(served, "explained")["decision_id"].to_pylist())
    explanations = decisions.explain(admin, decision_id, top=3)
    assert len(explanations) == 2
    booster = xgb.Booster(model_file=str(xgb_bundle.parent / "model.json"))
    expected = booster.predict(xgb.DMatrix(rows), pred_contribs=True)
    for e, want in zip(explanations, expected):
        np.testing.assert_allclose(e.contributions, want, atol=1e-5)
        assert len(e.top) == 3 and e.text
    flags = ["--coordinator", served.coordinator.address, "--token", admin.token]
    assert main(["explain", decision_id, "--output", "json", *flags]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["row"] for s in shown] == [0, 1] and shown[0]["decision_id"] == decision_id


@contextmanager
def logging_everything(tmp_path, xgb_bundle, replicas: int) -> Iterator[tuple[Any, Any]]:
    """A coordinator, agents a1 and a2, and endpoint "risk" (``replicas`` of the XGBoost model)
    logging every decision: (the agents, an admin client)."""
    from tests.chaos import nodes

    coord = nodes.coordinator(tmp_path / "coordinator")
    agents = nodes.Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    try:
        for agent_id in ("a1", "a2"):
            agents.start(agent_id)
        with nodes.client(coord) as admin:
            admin.push_model(xgb_bundle, "xgb")
            admin.deploy("risk", "xgb", replicas=replicas)
            admin.set_decision_log("risk", 1.0)
            yield agents, admin
    finally:
        agents.stop_all()
        coord.stop()


def test_decisions_are_read_from_every_agent_serving_the_endpoint(tmp_path, xgb_bundle) -> None:
    from milepost import decisions

    with logging_everything(tmp_path, xgb_bundle, replicas=2) as (agents, admin):
        for node in agents.running.values():
            wait_for(lambda node=node: (r := node.router.table.get("risk")) is not None
                     and r.decision_sample_rate == 1.0 and len(r.remotes) == 1, f"{node.agent_id}'s route")
        rows = np.random.default_rng(9).normal(size=(6, FEATURES)).astype(np.float32)
        for i, node in enumerate([*agents.running.values()] * 3):
            admin.infer("risk", rows[i:i + 1], agent=node.address)
        table = decisions.list_decisions(admin, "risk")
        holders = [d.split("/")[0] for d in table["decision_id"].to_pylist()]
        assert sorted(holders) == ["a1"] * 3 + ["a2"] * 3
        assert table["time"].to_pylist() == sorted(table["time"].to_pylist())
        assert decisions.replay(admin, table["decision_id"][-1].as_py()).identical
        assert decisions.list_decisions(admin, "risk", limit=4).num_rows == 4


def test_a_decision_asked_to_explain_itself_logs_the_models_answer_and_replays_identical(served, admin) -> None:
    from milepost import decisions

    sample(admin, served, 1.0)
    rows = np.random.default_rng(10).normal(size=(3, FEATURES)).astype(np.float32)
    request = matrix_request(rows, "why-0")
    request.parameters["explain"].bool_param = True
    answered = served.stub.ModelInfer(request)
    assert {o.name for o in answered.outputs} == {"probabilities", "contributions", "explanation"}
    logged = decisions_of(served, "why")
    assert logged.num_rows == 3 and logged.schema.field("outputs").type.names == ["probabilities"]
    result = decisions.replay(admin, logged["decision_id"][0].as_py())
    assert result.identical and result.differences == [] and result.rows == 3


def test_calls_of_a_deployment_are_logged_under_its_endpoint_but_the_clusters_own_are_not(served, admin) -> None:
    from milepost.core.tensor_codec import MATRIX_INPUT_NAME

    sample(admin, served, 1.0)
    (hosted,) = served.agent.table.hosted()
    deployment = hosted.spec.deployment_id
    rows = np.random.default_rng(11).normal(size=(2, FEATURES)).astype(np.float32)

    def direct(request_id: str, model: str, token: str = "") -> None:
        request = matrix_request(rows, request_id, model=model, name=MATRIX_INPUT_NAME)
        request.parameters["milepost-deployment"].string_param = deployment
        served.stub.ModelInfer(request, metadata=[("authorization", f"Bearer {token}")] if token else None)

    direct("direct-0", ENDPOINT)  # a client naming the deployment, as the audit's probe did
    direct("direct-1", deployment)  # ... or calling it by its id, as remote members do
    direct("direct-2", deployment, admin.token)  # a person's token is no cluster identity
    control = served.agent.registration.control_token
    assert control
    direct("internal-0", deployment, control)  # the cluster's own call: its routing agent logs the decision
    table = decisions_of(served, "direct")
    assert sorted(set(table["request_id"].to_pylist())) == ["direct-0", "direct-1", "direct-2"]
    assert set(table["endpoint"].to_pylist()) == {ENDPOINT} and set(table["arm"].to_pylist()) == {"primary"}
    assert set(table["deployment"].to_pylist()) == {deployment} and set(table["model"].to_pylist()) == {"lr"}
    assert table.num_rows == 6
    assert decisions_of(served, "internal").num_rows == 0


def test_decisions_a_crash_cut_off_are_counted_and_alerted_at_the_next_start(tmp_path, xgb_bundle) -> None:
    from agent.routing.route_table import Route
    from milepost import decisions
    from tests.agent.test_decision_log_files import cut_off_part, open_log

    opened: list = []

    def make(directory: Path) -> object:
        opened.append(open_log(directory))
        return opened[-1]

    try:  # what an agent killed in the middle of a write leaves in its data directory
        cut_off_part(make, tmp_path / "agent" / "decisions", Route(ENDPOINT, None, "", {}, pushed=True,
                                                                   decision_sample_rate=1.0))
    finally:
        for log in opened:
            log.close()
    with running(tmp_path, xgb_bundle) as r, \
            Client(r.coordinator.address, token=r.coordinator.admin_token_file.read_text().strip()) as admin:
        assert r.agent.decisions.wait_recovered(10) and r.agent.decisions.dropped() == {ENDPOINT: 1}
        wait_for(lambda: any(e.action == "alert" and f"dropped 1 decision(s) of {ENDPOINT}" in e.detail
                             for e in admin.audit()), "the coordinator's alert")
        recovered = decisions.list_decisions(admin, ENDPOINT)
        assert sorted(recovered["request_id"].to_pylist()) == ["r0", "r1", "r2"]
        assert 'milepost_decisions_dropped_total{endpoint="lr-api"} 1.0' in r.agent.metrics_text()


def test_a_remote_arms_decision_is_logged_once_by_the_agent_that_routed_it(tmp_path, xgb_bundle) -> None:
    """The agent that routes a request to another agent's replica logs the decision; that agent,
    called by the cluster's own identity (agent.routing.members), does not log it again."""
    from milepost import decisions

    with logging_everything(tmp_path, xgb_bundle, replicas=1) as (agents, admin):
        (router,) = [n for n in agents.running.values() if not n.table.hosted()]
        wait_for(lambda: (r := router.router.table.get("risk")) is not None and r.decision_sample_rate == 1.0
                 and len(r.remotes) == 1, "the routing agent's route to the other's replica")
        rows = np.random.default_rng(12).normal(size=(3, FEATURES)).astype(np.float32)
        for i in range(3):
            admin.infer("risk", rows[i:i + 1], agent=router.address)
        table = decisions.list_decisions(admin, "risk")
        assert [d.split("/")[0] for d in table["decision_id"].to_pylist()] == [router.agent_id] * 3
        assert set(table["arm"].to_pylist()) == {"primary"} and set(table["model"].to_pylist()) == {"xgb"}
