"""Engines by name, and which of them this node can run.

Only adapters that exist are offered. Engine libraries found on the node
without an adapter yet are still reported, with the reason, so operators see
what the node has.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from engines.base import Engine, EngineInfo
from engines.native import NativeEngine
from milepost.errors import NotFound

_ENGINES: dict[str, Engine] = {"native": NativeEngine()}

# Engines whose adapters are not part of this release, with the package that would back them.
_PLANNED: dict[str, str] = {"torch": "torch", "spark": "pyspark", "ray": "ray"}


def get(name: str) -> Engine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise NotFound(f"engine {name!r} is not available; engines: {', '.join(_ENGINES)}") from None


def discover() -> list[EngineInfo]:
    found = [engine.info() for engine in _ENGINES.values()]
    for name, package in _PLANNED.items():
        try:
            found.append(EngineInfo(name, version(package), False, "no adapter in this Milepost release"))
        except PackageNotFoundError:
            found.append(EngineInfo(name, "", False, f"{package} is not installed"))
    return found
