"""What a failure of the coordinator's data directory means, in one place, for the operator.

SQLite and the file system report a full disk or a read-only directory as
``sqlite3.OperationalError`` or ``OSError``; left alone they reach the caller as
INTERNAL "see the server log", or as a traceback at start. Both are conditions
of the machine, not bugs: a full disk is RESOURCE_EXHAUSTED, a directory this
process cannot write is FAILED_PRECONDITION, and either message names the
directory and what to do about it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from milepost.core.errors import FailedPrecondition, MilepostError, ResourceExhausted

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# SQLite's own words (its result codes do not reach Python before 3.11's sqlite_errorcode).
_SQLITE_FULL = ("database or disk is full",)
_SQLITE_NOT_WRITABLE = ("readonly", "read-only", "unable to open database file", "attempt to write")


def storage_error(directory: Path, err: BaseException, doing: str) -> MilepostError | None:
    """The MilepostError a failed write (``doing``, e.g. "storing a model") under ``directory``
    means, or None when ``err`` is not about the disk (then it is a bug: re-raise it)."""
    text = str(err).lower()
    code = getattr(err, "sqlite_errorcode", None) if isinstance(err, sqlite3.Error) else None
    if (isinstance(err, OSError) and err.errno in _FULL) or code == 13 or any(w in text for w in _SQLITE_FULL):
        return ResourceExhausted(
            f"{doing}: the coordinator's data directory {directory} is full ({_detail(err)}); free space on "
            "that disk, or restart the coordinator with --data-dir on a disk with room"
        )
    if (isinstance(err, OSError) and err.errno in _NOT_WRITABLE) or code in (8, 14) or any(
        w in text for w in _SQLITE_NOT_WRITABLE
    ):
        return FailedPrecondition(
            f"{doing}: the coordinator cannot write its data directory {directory} ({_detail(err)}); make it "
            f"writable by the user running the coordinator (uid {os.getuid()}), or start the coordinator with "
            "--data-dir pointing at a writable directory"
        )
    return None


def _detail(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno is not None:
        return os.strerror(err.errno)
    return str(err)
