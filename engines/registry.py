"""Engines by name, and which of them this node can run.

Every adapter is registered; ``discover`` asks each for its EngineInfo, so an
engine that cannot run here (library not installed, no Java for Spark, code
bundles not allowed, no CUDA) is still reported, with the reason, and operators
see what the node has. Adapters import their libraries lazily, so this module
is cheap to import.
"""

from __future__ import annotations

from engines import FLAVOR_ENGINES
from engines.base import Engine, EngineInfo
from engines.native import NativeEngine
from engines.onnx import OnnxEngine
from engines.python import PythonEngine
from engines.ray import RayEngine
from engines.spark import SparkEngine
from engines.torch import TorchEngine
from milepost.core.errors import FailedPrecondition, NotFound, Unimplemented

_ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (NativeEngine(), TorchEngine(), OnnxEngine(), PythonEngine(), SparkEngine(), RayEngine())
}


def get(name: str) -> Engine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise NotFound(f"engine {name!r} is not available; engines: {', '.join(_ENGINES)}") from None


def names() -> list[str]:
    return list(_ENGINES)


def discover() -> list[EngineInfo]:
    return [engine.info() for engine in _ENGINES.values()]


def engine_for(flavor: str, requested: str = "", *, online: bool = True) -> Engine:
    """The engine to run a bundle of ``flavor``: ``requested`` by name when given (it must
    run that flavor, and serve online when ``online``), else the flavor's default engine.
    The engine must be usable on this node; FailedPrecondition says why it is not."""
    name = requested or FLAVOR_ENGINES.get(flavor, "")
    if not name:
        raise Unimplemented(f"no engine runs model flavor {flavor!r}; known flavors: {', '.join(FLAVOR_ENGINES)}")
    engine = get(name)
    info = engine.info()
    if flavor not in info.flavors:
        raise Unimplemented(f"engine {name!r} does not run flavor {flavor!r}; it runs {list(info.flavors)}")
    if online and not info.online:
        raise Unimplemented(f"engine {name!r} scores datasets and runs stages; it does not serve online")
    if not info.available:
        raise FailedPrecondition(f"engine {name!r} cannot run on this node: {info.reason}")
    return engine
