"""Which functions a pipeline stage may name on this agent: the one rule, checked twice.

A stage entry names a function this agent will call with parameters from a remote spec:
"os:system" would be remote code execution, and so would any attribute path that walks
from an allowed module to what it imported ("engines.trainers:importlib.import_module").
The agent checks the name before it starts a stage (``allowed_entry``, importing nothing),
and the stage's own process checks it again as it resolves the function (``check_entry``),
so that what runs is exactly what was checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines import entry_points, trainers
from milepost.core.errors import InvalidArgument, PermissionDenied, shown
from milepost.core.settings import Settings, env_var, get_settings


def allowed_entry(entry: Any, settings: Settings | None = None) -> str:
    """``entry`` if this agent allows it, without importing anything.

    Allowed are exact "module:function" names: the built-in trainers (engines.trainers.BUILT_IN)
    and those the operator lists in ``stage_entries`` (MILEPOST_STAGE_ENTRIES), or any
    "module:function" with ``allow_code_bundles`` (MILEPOST_ALLOW_CODE_BUNDLES=1).
    ``settings``: the process's when None.

    InvalidArgument: not "module:function". PermissionDenied: not an allowed name.
    """
    settings = settings or get_settings()
    if not isinstance(entry, str) or not entry_points.well_formed(entry):
        raise InvalidArgument(f"stage entry {shown(entry)} must be an exact 'module:function' name "
                              f"(no attribute paths), e.g. {trainers.BUILT_IN[0]}")
    listed = [e for e in settings.stage_entries if entry_points.well_formed(e)]
    if not settings.allow_code_bundles and entry not in trainers.BUILT_IN and entry not in listed:
        ignored = [e for e in settings.stage_entries if e not in listed]
        note = (f"; {env_var('stage_entries')} holds {shown(ignored[0], 40)}, which is not an exact "
                f"'module:function' name (prefixes are not accepted)") if ignored else ""
        raise PermissionDenied(
            f"stage entry {shown(entry)} is not allowed on this agent: the built-in trainers are "
            f"{', '.join(trainers.BUILT_IN)}; an operator allows more with "
            f"{env_var('stage_entries')}=module:function,... or {env_var('allow_code_bundles')}=1{note}"
        )
    return entry


def check_entry(entry: Any, settings: Settings | None = None) -> Callable[..., Any]:
    """The function an allowed stage entry names (see ``allowed_entry``): a function defined
    in the module it names, resolved without walking attributes. Importing the module runs
    its code, so only the stage's own process calls this."""
    return entry_points.resolve(allowed_entry(entry, settings), "stage entry", defined_here=True)
