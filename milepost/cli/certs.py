"""`milepost certs init DIR`: a CA and certificates for a small cluster, for mutual TLS.

DIR gets ca.pem (give it to every process as --tls-ca), and for each name a
NAME.pem and NAME.key (that process's --tls-cert and --tls-key). Server
certificates name their hosts (DNS names or IP addresses, plus localhost and
127.0.0.1 so the embedded default works); every certificate may act as client
and server, since coordinator and agents call each other. Keys are written
with mode 0600. Made with the `cryptography` package; EC P-256, SHA-256.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from milepost.core.errors import AlreadyExists

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

DAYS = 825


def cmd_certs_init(args: argparse.Namespace) -> int:
    written = init(Path(args.dir), args.name or ["coordinator", "agent", "client"], args.host, args.days)
    for path in written:
        print(path)
    return 0


def init(directory: Path, names: list[str], hosts: list[str], days: int = DAYS) -> list[Path]:
    """Write ca.pem/ca.key and NAME.pem/NAME.key for each name; refuse to overwrite a CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists():
        raise AlreadyExists(f"{directory.name}/ca.pem exists; choose an empty directory")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "milepost cluster CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    written = [_write(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644),
               _write(directory / "ca.key", _key_bytes(ca_key), 0o600)]
    alt_names: list[x509.GeneralName] = []
    for host in [*hosts, "localhost", "127.0.0.1", "::1"]:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        written.append(_write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644))
        written.append(_write(directory / f"{name}.key", _key_bytes(key), 0o600))
    return written


def _key_bytes(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.touch(mode=mode)
    path.chmod(mode)
    path.write_bytes(data)
    return path


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    certs = sub.add_parser("certs", help="make a CA and certificates for mutual TLS")
    actions = certs.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("init", parents=[common], help="write ca.pem and NAME.pem/NAME.key for each --name into DIR")
    p.add_argument("dir")
    p.add_argument("--name", action="append", default=[], help="one per process (default: coordinator, agent, client)")
    p.add_argument("--host", action="append", default=[], metavar="HOST",
                   help="DNS name or IP the servers are reached at (repeat; localhost and 127.0.0.1 always)")
    p.add_argument("--days", type=int, default=DAYS)
    p.set_defaults(func=cmd_certs_init)
