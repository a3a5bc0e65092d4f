"""TLS between hosts: `milepost certs init`, mutual TLS between coordinator, agent and client,
and a plaintext server refused off loopback. Real servers on 127.0.0.1, real certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import numpy as np
import pytest

from milepost.cli.certs import init
from milepost.core import tls as tls_mod
from milepost.core.errors import FailedPrecondition, Unavailable
from milepost.core.tls import Tls


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    init(tmp_path / "certs", ["coordinator", "agent", "client"], [])
    return tmp_path / "certs"


def files(certs: Path, name: str, *, ca: bool = True) -> Tls:
    return Tls(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem" if ca else None)


def test_certs_init_writes_a_ca_and_keys_only_their_owner_reads(certs: Path) -> None:
    names = sorted(p.name for p in certs.iterdir())
    assert names == ["agent.key", "agent.pem", "ca.key", "ca.pem", "client.key", "client.pem",
                     "coordinator.key", "coordinator.pem"]
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_mutual_tls_cluster_serves_and_refuses_who_cannot_prove_itself(certs, tmp_path, logistic_model) -> None:
    from agent.server import Agent, AgentConfig
    from coordinator.server import Coordinator, CoordinatorConfig
    from milepost.client import Client

    estimator, bundle_dir, _, rows = logistic_model
    coordinator = Coordinator(CoordinatorConfig(data_dir=tmp_path / "c", port=0, tls=files(certs, "coordinator")))
    coordinator.start()
    agent = Agent(AgentConfig(coordinator=coordinator.address, data_dir=tmp_path / "a", port=0, agent_id="a1",
                              token=coordinator.local_agent_token(), tls=files(certs, "agent")))
    agent.start()
    admin = coordinator.admin_token_file.read_text().strip()
    try:
        assert agent.registration.registered.wait(20), "the agent could not register over mutual TLS"
        with Client(coordinator.address, token=admin, tls=files(certs, "client")) as client:
            client.push_model(bundle_dir, "lr")
            client.deploy("scores", "lr")
            answer = client.infer("scores", rows)  # the agent's data plane, over TLS too
            np.testing.assert_allclose(
                np.asarray(answer.column("probabilities").to_pylist()),
                estimator.predict_proba(rows), atol=1e-6,
            )
        # Plaintext to a TLS port, and TLS without a client certificate: no call gets through.
        with Client(coordinator.address, token=admin) as plain, pytest.raises(Unavailable):
            plain.list_models()
        channel = grpc.secure_channel(coordinator.address, grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes()))
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/milepost.v1.CoordinatorService/ListModels")(
                b"", metadata=[("authorization", f"Bearer {admin}")], timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    finally:
        agent.stop()
        coordinator.stop()


def test_a_plaintext_server_listens_only_on_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from milepost.core.auth import AuthInterceptor
    from milepost.core.grpc_server import new_server

    server = new_server(AuthInterceptor(lambda token: None, {}))
    with pytest.raises(FailedPrecondition, match="without TLS"):
        tls_mod.listen(server, "0.0.0.0", 0, None)  # refused before anything is bound
    assert tls_mod.listen(server, "127.0.0.1", 0, None) > 0
    assert [tls_mod.is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "node-a.example", "0.0.0.0", "")] == \
        [True, True, True, True, False, False, False]
    server.stop(0)


def test_half_a_tls_configuration_is_refused() -> None:
    from milepost.core.errors import InvalidArgument

    assert Tls.from_paths(None, None, None) is None
    with pytest.raises(InvalidArgument, match="--tls-key"):
        Tls.from_paths("cert.pem", None, None)


def test_certs_init_from_the_command_line_and_a_second_time_refused(tmp_path: Path, capsys) -> None:
    from milepost.cli import main

    assert main(["certs", "init", str(tmp_path / "c"), "--name", "node-a", "--host", "node-a.example"]) == 0
    assert (tmp_path / "c" / "node-a.pem").exists() and "node-a.key" in capsys.readouterr().out
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "c" / "node-a.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "node-a.example" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert main(["certs", "init", str(tmp_path / "c")]) != 0
    assert "exists" in capsys.readouterr().err
