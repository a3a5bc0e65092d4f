"""Turning command-line arguments into values: model references, KEY=VALUE pairs, sizes,
durations, routing arms, and the client a command talks to the coordinator through."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from milepost.core.errors import InvalidArgument
from milepost.core.model_refs import SHA256, split_model_ref
from milepost.core.routing.spec import DEFAULT_WEIGHT
from milepost.core.tls import Tls

if TYPE_CHECKING:
    from milepost.client import Client


def client(args: argparse.Namespace) -> Client:
    """A client of the coordinator at ``--coordinator``, each call with ``--timeout``."""
    from milepost.client import Client

    return Client(args.coordinator, timeout=args.timeout, token=args.token or None, tls=tls(args))


def tls(args: argparse.Namespace) -> Tls | None:
    """The TLS files --tls-cert, --tls-key and --tls-ca name (None: plaintext)."""
    return Tls.from_paths(args.tls_cert, args.tls_key, args.tls_ca)


def model_ref(ref: str) -> tuple[str, str]:
    """NAME, NAME:VERSION, NAME@ALIAS or NAME@sha256:HEX -> (name, version text); the version
    empty for the newest (milepost.core.model_refs reads the text)."""
    name, version = split_model_ref(ref)
    if not name:
        raise InvalidArgument(f"model {ref!r}: expected NAME, NAME:VERSION or NAME@ALIAS")
    return name, version


def optional_port(port: int) -> int | None:
    """--metrics-port, --http-port: -1 (any negative) is off, 0 a free port."""
    return None if port < 0 else port


def pairs(items: list[str], flag: str) -> dict[str, str]:
    """Repeated KEY=VALUE flags -> a dict."""
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag} {item!r}: expected KEY=VALUE")
        found[key] = value
    return found


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def byte_size(text: str) -> int:
    """'512MiB', '2G', '1073741824' -> bytes (binary units)."""
    number = text.strip().rstrip("BbIiGgMmKkTt")
    unit = text.strip()[len(number):].lower()
    try:
        return int(float(number or 0) * _UNITS[unit])
    except (KeyError, ValueError):
        raise InvalidArgument(f"--memory {text!r}: expected a size such as 512MiB or 2GiB") from None


_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(text: str) -> float:
    """'60s', '2m', '500ms', '1h', '30d' or a plain number of seconds."""
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], _SECONDS[suffix]
            break
    else:
        number, scale = text, 1.0
    try:
        return float(number) * scale
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a duration such as 60s, 2m or 500ms") from None


def arm(spec: str, flag: str) -> tuple[str, tuple[str, str, float]]:
    """NAME=MODEL[:VERSION[:WEIGHT]] or NAME=MODEL@ALIAS[:WEIGHT] (VERSION also @ALIAS or
    sha256:HEX) -> (name, (model, version text, weight))."""
    name, sep, ref = spec.partition("=")
    model, version = split_model_ref(ref)
    digest = next((p for p in ("@" + SHA256, SHA256) if version.startswith(p)), "")
    parts = version[len(digest):].split(":")
    if not sep or not name or not model or len(parts) > 2:
        raise InvalidArgument(f"{flag} {spec!r}: expected NAME=MODEL[:VERSION[:WEIGHT]] or NAME=MODEL@ALIAS[:WEIGHT]")
    try:
        weight = float(parts[1]) if len(parts) == 2 and parts[1] else DEFAULT_WEIGHT
    except ValueError:
        raise InvalidArgument(f"{flag} {spec!r}: weight {parts[1]!r} is not a number") from None
    return name, (model, digest + parts[0], weight)
