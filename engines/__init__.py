"""Engine adapters: one interface (engines.base), one module per engine.

Nothing outside this package imports an engine library (torch, onnxruntime, pyspark, ray)
directly. Importing this package is cheap: adapters import their libraries
only when used.
"""

from __future__ import annotations

# Which engine serves a bundle of a given flavor online (its default engine).
FLAVOR_ENGINES: dict[str, str] = {
    "scoring_core": "native",
    "torch": "torch",
    "onnx": "onnx",
    "python": "python",
}


def engine_for_flavor(flavor: str) -> str:
    from milepost.core.errors import Unimplemented

    try:
        return FLAVOR_ENGINES[flavor]
    except KeyError:
        raise Unimplemented(
            f"no engine serves model flavor {flavor!r}; known flavors: {', '.join(FLAVOR_ENGINES)}"
        ) from None
