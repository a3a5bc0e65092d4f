"""Why a server cannot listen on its port, said one way for every server of a process (gRPC,
REST, console, metrics): the address, the flag that sets it, and what to do about it.

It is FAILED_PRECONDITION: asking for that port is a fine request, but the machine is not in a
state to grant it (another process holds the port, the host is none of its addresses).

gRPC says only "Failed to bind" (a RuntimeError, since grpcio 1.6x; before, port 0) and logs a
line of its C core on stderr first, so ``check_free`` binds the port with a plain socket before
gRPC does, with the options gRPC's server sockets have (SO_REUSEADDR; SO_REUSEPORT off, as
milepost.core.grpc_server sets it), and so refuses exactly what gRPC would, without that line.
"""

from __future__ import annotations

import errno
import os
import socket

from milepost.core.errors import FailedPrecondition

_HINTS = {
    errno.EADDRINUSE: "another process holds it: stop that one, or choose another port (0 picks a free one)",
    errno.EADDRNOTAVAIL: "the host is not an address of this machine (--host)",
    errno.EACCES: "ports below 1024 need privileges: choose a higher one",
}


class PortUnavailable(FailedPrecondition):
    """A server of this process cannot listen on ``host:port``; ``flag`` names the option that sets
    the port (empty where the code that listens does not know it: ``naming`` adds it)."""

    def __init__(self, host: str, port: int, server: str, flag: str, reason: str, code: int | None = None) -> None:
        self.host, self.port, self.server, self.flag, self.reason, self.errno = host, port, server, flag, reason, code
        hint = _HINTS.get(code, "") if code is not None else ""
        super().__init__(f"cannot listen on {host}:{port} for the {server} server" + (f" ({flag})" if flag else "")
                         + f": {reason}" + (f"; {hint}" if hint else ""))

    def naming(self, flag: str) -> PortUnavailable:
        """The same error, saying that ``flag`` sets the port."""
        return PortUnavailable(self.host, self.port, self.server, flag, self.reason, self.errno)


def bind_error(host: str, port: int, server: str, flag: str, err: OSError) -> PortUnavailable:
    """``err`` (from binding ``host:port``) as the error that says so."""
    reason = os.strerror(err.errno) if err.errno else str(err)  # socket.create_server adds the address to strerror
    return PortUnavailable(host, port, server, flag, reason[:1].lower() + reason[1:], err.errno)


def check_free(host: str, port: int, server: str, flag: str = "") -> None:
    """PortUnavailable unless some address ``host`` resolves to can be bound at ``port`` as gRPC
    binds it (gRPC listens when any of them can; port 0 always can)."""
    if port == 0:
        return
    bare = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise PortUnavailable(host, port, server, flag, f"the host does not resolve ({err.strerror})") from err
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
            return
        except OSError as err:
            failure = err
    if failure is not None:
        raise bind_error(host, port, server, flag, failure) from failure
