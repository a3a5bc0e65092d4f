"""The registry of stage kinds: what a bundle's ``model`` and ``transforms`` entries can be.

A bundle stores every stage (a feature transform or the final model) the same way: a
``kind`` name, a few JSON parameters and some named numpy arrays. Keeping that one shape
lets tree ensembles, MLPs and feature transforms arrive later as new kinds without a new
bundle format: a module defines a class with the ``Stage`` methods and calls
``register_kind`` on it, and ``scoring_core.load`` can read its bundles from then on.
"""

from __future__ import annotations

import io
import re
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import numpy as np

from milepost.core.errors import DataLoss, InvalidArgument, Unimplemented

_RESERVED_KEYS = frozenset({"kind", "arrays"})
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@runtime_checkable
class Stage(Protocol):
    """One step of scoring: maps an (n, n_features) float array to (n, n_outputs) floats.

    ``predict`` must accept float32 or float64 input in C or Fortran order (Arrow batches
    arrive column-major as float32, network tensors row-major, and transforms keep the
    dtype and order they are given). A model stage returns a C-ordered float64 array; a
    transform stage returns its input's dtype, in either order. It must be safe to call
    from several threads at once (no mutable state).
    """

    kind: ClassVar[str]

    @property
    def n_features(self) -> int: ...

    @property
    def n_outputs(self) -> int: ...

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able parameters and named arrays that fully describe the stage."""
        ...

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Stage:
        """Rebuild the stage; raise InvalidArgument when params or arrays are inconsistent."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


_KINDS: dict[str, type[Stage]] = {}
_StageClass = TypeVar("_StageClass", bound=type)


def register_kind(cls: _StageClass) -> _StageClass:
    """Make a stage class loadable by its ``kind`` name; usable as a class decorator.

    Registering a different class under a taken name is refused, since two modules
    disagreeing about what a stored bundle means would silently change predictions.
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} has no 'kind' class attribute")
    for method in ("to_arrays", "from_arrays", "predict"):
        if not callable(getattr(cls, method, None)):
            raise ValueError(f"{cls.__name__} lacks {method}()")
    existing = _KINDS.get(kind)
    if existing is not None and existing is not cls:
        raise ValueError(f"kind {kind!r} is already registered to {existing.__qualname__}")
    _KINDS[kind] = cast("type[Stage]", cls)  # its methods were checked above
    return cls


def kind_class(kind: str) -> type[Stage]:
    """The class registered for ``kind``; Unimplemented names the kinds this build knows."""
    try:
        return _KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise Unimplemented(f"stage kind {kind!r} is not supported; known kinds: {known}") from None


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialise one array as .npy bytes, C-ordered and little-endian, so equal arrays
    always give equal bytes (and so equal bundle versions)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ValueError("object arrays cannot be stored in a bundle")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_array(data: bytes, name: str) -> np.ndarray:
    """Parse .npy bytes, never unpickling."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        raise DataLoss(f"{name}: not a readable .npy array ({err})") from err


def stage_to_manifest(stage: Stage, prefix: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest entry for ``stage`` and the files holding its arrays.

    Arrays go to ``arrays/<prefix>.<name>.npy`` so several stages can share the folder.
    """
    params, arrays = stage.to_arrays()
    clash = _RESERVED_KEYS.intersection(params)
    if clash:
        raise ValueError(f"{type(stage).__name__} params use reserved keys {sorted(clash)}")
    entry: dict[str, Any] = {"kind": stage.kind, **params, "arrays": {}}
    files: dict[str, bytes] = {}
    for name, array in sorted(arrays.items()):
        if not _ARRAY_NAME.match(name):
            raise ValueError(f"array name {name!r} must match {_ARRAY_NAME.pattern}")
        rel = f"arrays/{prefix}.{name}.npy"
        entry["arrays"][name] = rel
        files[rel] = npy_bytes(array)
    return entry, files


def stage_from_manifest(entry: Any, files: dict[str, bytes], where: str) -> Stage:
    """Rebuild a stage from its manifest entry and the bundle's verified file contents."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise InvalidArgument(f"milepost.json: {where} must be an object with a 'kind'")
    cls = kind_class(entry["kind"])
    refs = entry.get("arrays", {})
    if not isinstance(refs, dict):
        raise InvalidArgument(f"milepost.json: {where}.arrays must be an object")
    arrays: dict[str, np.ndarray] = {}
    for name, rel in refs.items():
        if not isinstance(rel, str) or rel not in files:
            raise InvalidArgument(f"milepost.json: {where}.arrays.{name} names {rel!r}, which is not in the bundle")
        arrays[name] = npy_array(files[rel], rel)
    params = {k: v for k, v in entry.items() if k not in _RESERVED_KEYS}
    return cls.from_arrays(params, arrays)
