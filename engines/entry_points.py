"""Finding the object a "module:name" reference names: the one resolver for stage entry
points (engines.stages) and the classes and functions of code bundles (engines.python).

The module is imported as installed or, with ``package``, as a submodule of that package:
a code bundle's, whose modules engines.user_code serves from the verified bundle. The name
after the colon is one identifier, looked up in that module alone: no dotted attribute
paths, so a reference cannot walk from a module it names to anything that module imported
("engines.trainers:importlib.import_module"). With ``defined_here`` the object must be a
function defined in that module itself, not one it imported.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from milepost.core.errors import InvalidArgument, NotFound, shown

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def well_formed(ref: str) -> bool:
    """Whether ``ref`` is "dotted.module:identifier": the only shape a reference may have."""
    module_name, sep, attr = ref.partition(":")
    return bool(sep) and bool(_MODULE.match(module_name)) and bool(_NAME.match(attr))


def resolve(ref: str, what: str, *, package: str = "", defined_here: bool = False) -> Any:
    """The callable ``ref`` names; ``what`` ("stage 'train' entry") starts every error message.

    InvalidArgument: ``ref`` is not "module:identifier", or names something not callable
    (with ``defined_here``: not a function defined in that module).
    NotFound: the module, one it imports, or the name is not there.
    """
    if not isinstance(ref, str) or not well_formed(ref):
        raise InvalidArgument(f"{what} {shown(ref)} must look like 'module:function': a module and one name "
                              f"defined in it, without attribute paths")
    module_name, _, attr = ref.partition(":")
    full_name = f"{package}.{module_name}" if package else module_name
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (full_name == err.name or full_name.startswith(f"{err.name}.")):
            where = "in the code bundle (code/)" if package else "installed here"
            raise NotFound(f"{what} {ref!r}: there is no module {module_name!r} {where}") from err
        raise NotFound(f"{what} {ref!r}: module {module_name!r} imports {shown(err.name)}, which is not installed here") from err
    target = vars(module).get(attr)  # the module's own namespace: no __getattr__, no walking
    if target is None:
        raise NotFound(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
    if defined_here and not (inspect.isfunction(target) and target.__module__ == module.__name__):
        raise InvalidArgument(f"{what} {ref!r} is not a function defined in module {module_name!r}")
    if not callable(target):
        raise InvalidArgument(f"{what} {ref!r} is not callable")
    return target
