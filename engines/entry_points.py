"""Finding the object a "module:attribute" reference names: the one resolver for stage
entry points (engines.stages) and the classes and functions of code bundles (engines.python).

The module is imported as installed or, with ``package``, as a submodule of that package:
a code bundle's, whose modules engines.user_code serves from the verified bundle. The
attribute may be dotted ("module:Class.method"); what it names must be callable.
"""

from __future__ import annotations

import importlib
from typing import Any

from milepost.core.errors import InvalidArgument, NotFound


def resolve(ref: str, what: str, *, package: str = "") -> Any:
    """The callable ``ref`` names; ``what`` ("stage 'train' entry") starts every error message.

    InvalidArgument: ``ref`` is not "module:attribute", or names something not callable.
    NotFound: the module, one it imports, or the attribute is not there.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgument(f"{what} {ref!r} must look like 'module:attribute'")
    full_name = f"{package}.{module_name}" if package else module_name
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (full_name == err.name or full_name.startswith(f"{err.name}.")):
            where = "in the code bundle (code/)" if package else "installed here"
            raise NotFound(f"{what} {ref!r}: there is no module {module_name!r} {where}") from err
        raise NotFound(f"{what} {ref!r}: module {module_name!r} imports {err.name!r}, which is not installed here") from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise NotFound(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidArgument(f"{what} {ref!r} is not callable")
    return target
