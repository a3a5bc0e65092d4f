"""Identities on every call: a matrix generated from the services' own descriptors.

Every RPC of the coordinator and of an agent is called with every kind of bad
credential; each call must be refused with UNAUTHENTICATED or PERMISSION_DENIED
and leave the coordinator's store exactly as it was. A new RPC without a rule in
milepost.core.auth.RULES fails test_every_rpc_has_a_rule, and is refused for
everyone meanwhile.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from milepost.core import auth
from milepost.inference import grpc_predict_v2_pb2
from milepost.v1 import agent_pb2, coordinator_pb2
from tests.conftest import wait_until

SERVICES = {
    "milepost.v1.CoordinatorService": coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"],
    "milepost.v1.AgentService": agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    "inference.GRPCInferenceService": grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    "grpc.health.v1.Health": health_pb2.DESCRIPTOR.services_by_name["Health"],
}
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def methods(service: str) -> list[tuple[str, bool, bool]]:
    """(full method name, client streams, server streams) of every RPC of a service."""
    return [
        (f"/{service}/{m.name}", m.client_streaming, m.server_streaming)
        for m in SERVICES[service].methods
    ]


def test_every_rpc_has_a_rule_and_every_rule_an_rpc() -> None:
    every = {name for service in SERVICES for name, _, _ in methods(service)}
    assert every - set(auth.RULES) == set(), "RPCs without a rule in milepost.core.auth.RULES"
    assert set(auth.RULES) - every == set(), "rules for RPCs that no service has"


def call(channel: grpc.Channel, method: str, client_streams: bool, server_streams: bool, token: str) -> grpc.StatusCode:
    """Call ``method`` with an empty request (the handler is never reached when refused)."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    kinds = {"request_serializer": None, "response_deserializer": None}
    try:
        if client_streams and server_streams:
            list(channel.stream_stream(method, **kinds)(iter([b""]), metadata=metadata, timeout=10))
        elif client_streams:
            channel.stream_unary(method, **kinds)(iter([b""]), metadata=metadata, timeout=10)
        elif server_streams:
            list(channel.unary_stream(method, **kinds)(b"", metadata=metadata, timeout=10))
        else:
            channel.unary_unary(method, **kinds)(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def store_dump(cluster) -> str:
    """Every row of the coordinator's store, as SQL text (a read-only connection)."""
    db = sqlite3.connect(f"file:{cluster.coordinator.config.data_dir / 'milepost.db'}?mode=ro", uri=True)
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


@pytest.fixture
def credentials(cluster) -> Iterator[dict[str, str]]:
    """One token of every kind the matrix tries, made on the cluster's coordinator."""
    tokens = cluster.coordinator.tokens
    _, viewer = tokens.create("matrix-viewer", auth.VIEWER)
    _, deployer = tokens.create("matrix-deployer", auth.DEPLOYER)
    _, agent = tokens.create("matrix-agent", auth.AGENT)
    _, revoked = tokens.create("matrix-revoked", auth.ADMIN)
    tokens.revoke("matrix-revoked")
    _, expired = tokens.create("matrix-expired", auth.ADMIN, ttl_s=0.01)
    time.sleep(0.05)
    # Agents learn the valid tokens from heartbeats: wait until this agent's copy is the
    # coordinator's (a heartbeat between create and revoke would otherwise still carry it).
    valid = {d.token_id for d in tokens.digests()}
    wait_until(lambda: set(cluster.agent.registration.access_tokens) == valid)
    token_id, _ = auth.split_token(viewer) or ("", "")
    yield {
        "none": "", "malformed": "not-a-token", "unknown": f"mpt_{token_id}_wrong-secret",
        "revoked": revoked, "expired": expired, "viewer": viewer, "deployer": deployer, "agent": agent,
        "admin": cluster.coordinator.admin_token_file.read_text().strip(),
    }


def allowed(rule: auth.Rule, role: str) -> bool:
    return auth.Identity("matrix", role).may(rule)


def test_coordinator_refuses_every_bad_credential_and_changes_nothing(cluster, credentials) -> None:
    channel = grpc.insecure_channel(cluster.coordinator.address)
    before = store_dump(cluster)
    tried = refused = 0
    for method, client_streams, server_streams in methods("milepost.v1.CoordinatorService"):
        rule = auth.RULES[method]
        for kind, token in credentials.items():
            if kind in ("viewer", "deployer", "agent", "admin") and allowed(rule, kind):
                continue  # a role the method admits: not a refusal case
            code = call(channel, method, client_streams, server_streams, token)
            tried += 1
            expected = grpc.StatusCode.PERMISSION_DENIED if kind in ("viewer", "deployer", "agent", "admin") \
                else grpc.StatusCode.UNAUTHENTICATED
            assert code == expected, f"{method} with a {kind} token answered {code.name}"
            refused += 1
    channel.close()
    assert store_dump(cluster) == before, "a refused call changed the store"
    assert tried == refused and tried >= 6 * len(methods("milepost.v1.CoordinatorService"))


def test_an_agent_takes_control_calls_from_its_coordinator_only(cluster, credentials) -> None:
    channel = grpc.insecure_channel(cluster.agent.address)
    for method, client_streams, server_streams in methods("milepost.v1.AgentService"):
        for kind, token in credentials.items():
            if kind in ("viewer", "deployer", "agent", "admin") and allowed(auth.RULES[method], kind):
                continue  # people read the decision log (ListDecisions, role viewer): not a refusal case
            code = call(channel, method, client_streams, server_streams, token)
            assert code in REFUSED, f"agent {method} with a {kind} token answered {code.name}"
    # The coordinator's own identity is accepted (the call then fails on its empty request, not on who sent it).
    code = call(channel, "/milepost.v1.AgentService/Status", False, False, cluster.coordinator.tokens.control_token)
    assert code == grpc.StatusCode.OK
    channel.close()


def test_the_data_plane_is_open_on_loopback_and_health_always(cluster) -> None:
    channel = grpc.insecure_channel(cluster.agent.address)
    assert call(channel, "/inference.GRPCInferenceService/ServerLive", False, False, "") == grpc.StatusCode.OK
    assert call(channel, "/grpc.health.v1.Health/Check", False, False, "") == grpc.StatusCode.OK
    channel.close()


def test_the_coordinator_answers_health_probes_without_a_token(cluster) -> None:
    from grpc_health.v1 import health_pb2_grpc

    with grpc.insecure_channel(cluster.coordinator.address) as channel:
        probe = health_pb2_grpc.HealthStub(channel)
        for service in ("", "milepost.v1.CoordinatorService"):
            reply = probe.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            probe.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_agent_token_registers_as_one_agent_only(cluster, credentials) -> None:
    from milepost.v1 import coordinator_pb2_grpc, types_pb2

    stub = coordinator_pb2_grpc.CoordinatorServiceStub(grpc.insecure_channel(cluster.coordinator.address))
    metadata = [("authorization", f"Bearer {credentials['agent']}")]
    info = types_pb2.AgentInfo(agent_id="node-x", address="127.0.0.1:1")
    assert stub.RegisterAgent(coordinator_pb2.RegisterAgentRequest(agent=info), metadata=metadata, timeout=10).control_token
    taken = types_pb2.AgentInfo(agent_id="a1", address="127.0.0.1:1")  # the cluster's agent, under its own token
    with pytest.raises(grpc.RpcError) as refused:
        stub.RegisterAgent(coordinator_pb2.RegisterAgentRequest(agent=taken), metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "a1" in refused.value.details()
    with pytest.raises(grpc.RpcError) as not_agent:
        stub.Heartbeat(coordinator_pb2.HeartbeatRequest(agent_id="a1"),
                       metadata=[("authorization", f"Bearer {credentials['admin']}")], timeout=10)
    assert not_agent.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_agent_that_requires_tokens_checks_them_itself(cluster, tmp_path) -> None:
    """--inference-auth token: inference needs a user token (viewer or above), checked by the agent
    against the hashes its coordinator sends; a revocation reaches it within a heartbeat."""
    from agent.server import Agent, AgentConfig
    from milepost.inference import grpc_predict_v2_pb2 as oip
    from milepost.inference import grpc_predict_v2_pb2_grpc as oip_grpc
    from tests.conftest import wait_until

    coordinator = cluster.coordinator
    _, viewer = coordinator.tokens.create("reader", auth.VIEWER)
    _, agent_token = coordinator.tokens.create("strict-agent", auth.AGENT)
    strict = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "strict", port=0,
                               agent_id="strict", token=agent_token, inference_auth=True))
    strict.start()
    try:
        assert strict.registration.registered.wait(10)
        stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(strict.address))

        def live(token: str) -> grpc.StatusCode:
            metadata = [("authorization", f"Bearer {token}")] if token else []
            try:
                stub.ServerLive(oip.ServerLiveRequest(), metadata=metadata, timeout=10)
            except grpc.RpcError as err:
                return err.code()
            return grpc.StatusCode.OK

        assert live("") == grpc.StatusCode.UNAUTHENTICATED
        assert live("mpt_0000_forged") == grpc.StatusCode.UNAUTHENTICATED
        assert live(viewer) == grpc.StatusCode.OK
        assert live(coordinator.admin_token_file.read_text().strip()) == grpc.StatusCode.OK
        assert live(agent_token) == grpc.StatusCode.UNAUTHENTICATED  # agent tokens are no user tokens: not sent to agents
        coordinator.tokens.revoke("reader")
        wait_until(lambda: live(viewer) == grpc.StatusCode.UNAUTHENTICATED, timeout=15)
        channel = grpc.insecure_channel(strict.address)
        assert call(channel, "/grpc.health.v1.Health/Check", False, False, "") == grpc.StatusCode.OK
        channel.close()
    finally:
        strict.stop()


REGISTRY_WRITES = ("SetAlias", "DeleteModel")


def test_registry_writes_need_a_deployer_and_change_nothing_when_refused(cluster, credentials, logistic_model) -> None:
    """Moving an alias or deleting a version is a change to what serves: the matrix above
    refuses every bad credential on them; here a viewer and an agent are refused on a real
    request, the store untouched, and a deployer's same request goes through."""
    from milepost.v1 import coordinator_pb2_grpc

    _, bundle_dir, version, _ = logistic_model
    with cluster.client as client:
        client.push_model(bundle_dir, "guarded")
    for name in REGISTRY_WRITES:
        assert auth.RULES[f"/milepost.v1.CoordinatorService/{name}"] == auth.DEPLOYER
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(grpc.insecure_channel(cluster.coordinator.address))
    alias = coordinator_pb2.SetAliasRequest(name="guarded", alias="prod", version="1")
    delete = coordinator_pb2.DeleteModelRequest(name="guarded", version="1")
    before = store_dump(cluster)
    for kind in ("viewer", "agent"):
        metadata = [("authorization", f"Bearer {credentials[kind]}")]
        for method, request in ((stub.SetAlias, alias), (stub.DeleteModel, delete)):
            with pytest.raises(grpc.RpcError) as refused:
                method(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "deployer" in refused.value.details()
    assert store_dump(cluster) == before
    metadata = [("authorization", f"Bearer {credentials['deployer']}")]
    assert list(stub.SetAlias(alias, metadata=metadata, timeout=10).aliases) == ["prod"]
    assert stub.DeleteModel(delete, metadata=metadata, timeout=10).version == version
