"""The audit trail: every change of state, who made it and when, in a chain that shows tampering.

Each entry is appended in the same SQLite transaction as the change it records (an
acknowledged change always has its entry; a rolled-back one never does). It carries the
actor (the identity of the call, or ``coordinator`` for what the control loop does on its
own), the time, the action, its subject and a sentence, and the digest of the entry before
it. An entry's digest is an HMAC-SHA256, under a key kept in its own file beside the
database (``audit.key``, 0600), of its sequence number, its fields and the previous digest.
So ``verify`` finds an edited entry (its digest no longer matches), a removed one (a gap, or
the next entry no longer follows), and a reordered one; someone who can edit the database
but not read the key cannot forge the digests again. Removing the newest entries leaves a
valid shorter chain: ``verify`` reports the head (sequence and digest) to keep elsewhere, and
checks an expected head given back (``milepost audit verify --expect-head``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from milepost.core import auth
from milepost.core.errors import InvalidArgument
from milepost.v1 import coordinator_pb2

GENESIS = "0" * 64  # the "previous digest" of the first entry
SYSTEM_ACTOR = "coordinator"
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_sha256 TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Entry:
    seq: int
    at: float
    actor: str
    action: str
    subject: str
    detail: str
    prev_sha256: str
    sha256: str


@dataclass(frozen=True)
class Verification:
    entries: int
    head_seq: int
    head_sha256: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_proto(self) -> coordinator_pb2.VerifyAuditResponse:
        return coordinator_pb2.VerifyAuditResponse(ok=self.ok, entries=self.entries, head_seq=self.head_seq,
                                                   head_sha256=self.head_sha256, problems=list(self.problems))


def load_key(path: Path) -> bytes:
    """The chain's key: made on first use (0600), then read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        key = secrets.token_hex(32)
        f.write(key + "\n")
    return bytes.fromhex(key)


def current_actor() -> str:
    """Who the running call is: token name and role, or the coordinator itself."""
    identity = auth.current_identity()
    return f"{identity.name} ({identity.role})" if identity is not None else SYSTEM_ACTOR


def _digest(key: bytes, seq: int, at: float, actor: str, action: str, subject: str, detail: str, prev: str) -> str:
    body = json.dumps([seq, repr(at), actor, action, subject, detail, prev], ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def append(db: sqlite3.Connection, key: bytes, at: float, action: str, subject: str, detail: str) -> None:
    """Add an entry; call inside the write transaction of the change it records (which
    also serialises appends from every connection to the file)."""
    last = db.execute("SELECT seq, sha256 FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    actor = current_actor()
    db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (seq, at, actor, action, subject, detail, prev, _digest(key, seq, at, actor, action, subject, detail, prev)))


def entries(db: sqlite3.Connection, after_seq: int = 0, limit: int = 1000) -> list[Entry]:
    rows = db.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
    return [Entry(*row) for row in rows]


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:SHA256`` as ``verify`` prints it."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise InvalidArgument(f"an audit head is SEQ:SHA256 as `milepost audit verify` prints it, got {text!r}")
    return int(seq), digest


def verify(db: sqlite3.Connection, key: bytes, expect_head: tuple[int, str] | None = None) -> Verification:
    """Walk the chain from the first entry; every problem found, one sentence each."""
    return verify_entries((Entry(*row) for row in db.execute("SELECT * FROM audit ORDER BY seq")), key, expect_head)


def verify_entries(chain: Iterable[Entry], key: bytes, expect_head: tuple[int, str] | None = None) -> Verification:
    """``verify`` of entries in the order given: the database's, or an export's
    (``milepost audit verify --file``, checked away from the coordinator with its key)."""
    problems: list[str] = []
    count, seq, prev = 0, 0, GENESIS
    seen: dict[int, str] = {}
    for e in chain:
        count += 1
        if e.seq != seq + 1:
            missing = f"entry {seq + 1}" if e.seq == seq + 2 else f"entries {seq + 1} to {e.seq - 1}"
            problems.append(f"{missing} removed (entry {e.seq} follows entry {seq})")
        elif e.prev_sha256 != prev:
            problems.append(f"entry {e.seq} does not follow entry {seq}: an entry was removed, replaced or moved there")
        if e.sha256 != _digest(key, e.seq, e.at, e.actor, e.action, e.subject, e.detail, e.prev_sha256):
            problems.append(f"entry {e.seq} was edited: its content does not match its digest")
        seen[e.seq] = e.sha256
        seq, prev = e.seq, e.sha256
    if expect_head is not None:
        head_seq, head_sha = expect_head
        if head_seq > seq:
            problems.append(f"entries {seq + 1} to {head_seq} removed: the chain ends at {seq}, the expected head is {head_seq}")
        elif seen.get(head_seq) != head_sha:
            problems.append(f"entry {head_seq} is not the expected head: the chain was rewritten up to there")
    return Verification(count, seq, prev, tuple(problems))
