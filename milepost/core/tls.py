"""TLS between hosts: one way to listen and one way to connect, for every server and channel.

A process is given a certificate and key (``--tls-cert``, ``--tls-key``) and,
for mutual TLS, the CA that signed its peers (``--tls-ca``): servers then
require a client certificate from that CA, and channels verify the server's
against it. Without TLS a server listens only on loopback unless the operator
passes ``--insecure`` (and a warning says what that gives up): tokens and
features would cross the network in the clear.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.ports import PortUnavailable, check_free

log = logging.getLogger("milepost.tls")


@dataclass(frozen=True)
class Tls:
    """PEM files of this process; ``ca`` set: peers must present certificates it signed."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_paths(cls, cert: str | Path | None, key: str | Path | None, ca: str | Path | None) -> Tls | None:
        """The TLS of the flags or settings given; None when none is; InvalidArgument when half is."""
        if not cert and not key and not ca:
            return None
        if not cert or not key:
            raise InvalidArgument("TLS needs both --tls-cert and --tls-key (and --tls-ca for mutual TLS)")
        return cls(Path(cert), Path(key), Path(ca) if ca else None)

    def _read(self, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as err:
            raise InvalidArgument(f"cannot read TLS file {path.name!r}: {err.strerror}") from err

    def server_credentials(self) -> grpc.ServerCredentials:
        key, cert = self._read(self.key), self._read(self.cert)
        assert key is not None and cert is not None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=self._read(self.ca), require_client_auth=self.ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca), private_key=self._read(self.key),
            certificate_chain=self._read(self.cert),
        )


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(server: grpc.Server, host: str, port: int, tls: Tls | None, *, insecure: bool = False,
           flag: str = "") -> int:
    """Bind host:port (0 picks a free port) with TLS when given; the port bound.

    Without TLS, a non-loopback host is refused unless ``insecure``. A port that cannot be had
    is PortUnavailable (naming ``flag``, the option that set it, when given), found before
    gRPC tries (milepost.core.ports says why)."""
    address = f"{host}:{port}"
    credentials = tls.server_credentials() if tls is not None else None
    if credentials is None:
        check_plaintext(host, insecure)
    check_free(host, port, "gRPC", flag)
    try:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
    except RuntimeError as err:  # taken between check_free and here; grpcio < 1.6x answered 0 instead
        raise PortUnavailable(host, port, "gRPC", flag, "address in use or not available") from err
    if bound == 0:
        raise PortUnavailable(host, port, "gRPC", flag, "address in use or not available")
    return bound


def check_plaintext(host: str, insecure: bool) -> None:
    """A server may listen on ``host`` without TLS: loopback, or ``insecure`` (with a warning);
    FailedPrecondition otherwise."""
    if is_loopback(host):
        return
    if not insecure:
        raise FailedPrecondition(
            f"refusing to listen on {host} without TLS: tokens and features would cross the network "
            "in the clear. Give --tls-cert/--tls-key (see `milepost certs init`), or --insecure"
        )
    log.warning("listening on %s WITHOUT TLS (--insecure): anyone on the network can read and forge calls", host)


# gRPC waits up to 120 s between reconnection attempts to a peer that was down, and every
# channel to that address in the process shares the wait: a coordinator or agent back after a
# restart stayed unreachable for a minute or more. Peers here restart in seconds.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]


def open_channel(address: str, tls: Tls | None, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A channel to ``address``: TLS (verified against the CA, presenting our certificate) when given."""
    options = [*RECONNECT_OPTIONS, *(options or [])]
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=options)
