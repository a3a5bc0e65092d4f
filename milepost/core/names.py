"""What a name of a model, endpoint or agent may be: one rule, checked wherever a name enters.

Names become file names in the artifact store, keys in SQLite and labels in
metrics, so they are kept to a safe alphabet: 1-128 letters, digits, '_', '.',
'-', starting with a letter or digit (so never '..' or a path).
"""

from __future__ import annotations

import re

from milepost.core.errors import InvalidArgument, shown

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid ``kind`` name, else InvalidArgument saying what is allowed
    (quoting at most a short prefix of what was sent)."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{kind} name {shown(value)} is invalid: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value
