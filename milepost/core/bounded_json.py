"""JSON that callers send, parsed with a bound on its nesting.

``json.loads`` recurses once per level of nesting, so a few kilobytes of ``[[[[...``
raise RecursionError inside a server (INTERNAL, our fault by the error rule). The
depth is measured first, by a flat scan that never recurses, and text deeper than
the bound is refused as the caller's mistake before it is parsed. NaN and the
infinities are not JSON (RFC 8259) and are refused too, so a number read from here
is finite.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from milepost.core.errors import InvalidArgument, shown

# The characters that open, close or quote something; the scan looks at nothing else.
_STRUCTURAL = re.compile(r'[\[\]{}"\\]')


def depth(text: str) -> int:
    """How deeply lists and objects nest in JSON ``text`` (0 for a scalar), in one flat pass.

    Brackets inside strings do not count. Text that is not JSON gets some number; parsing
    it then says what is wrong.
    """
    level = deepest = 0
    in_string = False
    escaped_at = -1  # the position a backslash inside a string escapes
    for match in _STRUCTURAL.finditer(text):
        position, char = match.start(), match.group()
        if position == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; numbers must be finite")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {shown(literal)} is out of range; numbers must be finite")
    return value


def loads(text: str | bytes, *, max_depth: int, what: str, setting: str = "") -> Any:
    """``json.loads(text)``, or InvalidArgument naming ``what`` when the text nests deeper
    than ``max_depth`` (and the ``setting`` that sets it, if any), holds NaN or an infinity,
    or is not JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidArgument(f"{what} is not UTF-8 text: {err.reason} at byte {err.start}") from err
    found = depth(text)
    if found > max_depth:
        limit = f" (the limit {setting})" if setting else ""
        raise InvalidArgument(f"{what} nests {found} levels deep; at most {max_depth} are allowed{limit}")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as err:  # JSONDecodeError is a ValueError, and so is a refused constant
        raise InvalidArgument(f"{what} is not valid JSON: {err}") from err
