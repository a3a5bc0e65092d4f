"""Tokens and the identities they stand for, kept in the coordinator's SQLite file.

A token is shown once, when it is created; the table keeps its id, name, role,
times and the SHA-256 of its secret, never the secret. A token authenticates
until it expires or is revoked. An agent token is bound to the first agent id
it registers as, and no other token may register or heartbeat as that agent.

The coordinator's own identity towards its agents (``control_token``) is a
secret kept here too; agents learn it when they register and accept control
calls bearing it, and nothing else.

Creating and revoking a token are recorded in the audit trail (coordinator.audit), in
the same transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator import audit
from milepost.core import auth
from milepost.core.auth import Identity
from milepost.core.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from milepost.core.names import check_name
from milepost.v1 import coordinator_pb2 as pb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL DEFAULT 0,
    revoked_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agent_identities (
    agent_id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_COLUMNS = "token_id, name, role, created_at, expires_at, revoked_at"


class TokenBook:
    def __init__(self, path: Path, clock: Callable[[], float], audit_key: bytes) -> None:
        self._audit_key = audit_key
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self.control_token = self._secret("control_token")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _secret(self, name: str) -> str:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, secrets.token_urlsafe(32))
            )
            (value,) = self._db.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        return str(value)

    # ---- the admin's calls ----
    def create(self, name: str, role: str, ttl_s: float = 0.0) -> tuple[pb.TokenInfo, str]:
        check_name("token", name)
        if role not in auth.ROLES:
            raise InvalidArgument(f"role {role!r} is unknown; use one of {', '.join(auth.ROLES)}")
        if not 0 <= ttl_s < float("inf"):
            raise InvalidArgument(f"a token's lifetime must be a finite number of seconds >= 0, got {ttl_s}")
        token_id, token, digest = auth.new_token()
        now = self._clock()
        expires = now + ttl_s if ttl_s else 0.0
        try:
            with self._audited(now, "token_create", name, f"token {token_id} ({name}, role {role}) created"
                               + (f", expires in {ttl_s:g} s" if ttl_s else "")) as db:
                db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, 0)", (token_id, name, role, digest, now, expires))
        except sqlite3.IntegrityError as err:
            raise AlreadyExists(f"a token named {name!r} exists; revoke it or choose another name") from err
        return self._info(token_id), token

    @contextmanager
    def _audited(self, now: float, action: str, subject: str, detail: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: the change the caller makes and its audit entry."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                audit.append(self._db, self._audit_key, now, action, subject, detail)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def infos(self) -> list[pb.TokenInfo]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at").fetchall()
        return [_info_message(r) for r in rows]

    def revoke(self, which: str) -> pb.TokenInfo:
        """Revoke a token by id or name; revoking twice keeps the first time."""
        with self._lock:
            row = self._db.execute("SELECT token_id, name, revoked_at FROM tokens WHERE token_id=? OR name=?",
                                   (which, which)).fetchone()
        if row is not None and not row[2]:
            with self._audited(self._clock(), "token_revoke", row[1], f"token {row[0]} ({row[1]}) revoked") as db:
                db.execute("UPDATE tokens SET revoked_at=? WHERE token_id=? AND revoked_at=0", (self._clock(), row[0]))
        if row is None:
            raise NotFound(f"no token has id or name {which[:64]!r}; see `milepost tokens list`")
        return self._info(row[0])

    def _info(self, token_id: str) -> pb.TokenInfo:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM tokens WHERE token_id=?", (token_id,)).fetchone()
        return _info_message(row)

    def digests(self) -> list[pb.TokenDigest]:
        """The user tokens valid now, as agents check them on their data plane (hashes only)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT token_id, secret_sha256, role, expires_at FROM tokens "
                f"WHERE revoked_at=0 AND (expires_at=0 OR expires_at>?) AND role IN ({','.join('?' * len(auth.USER_ROLES))})",
                (self._clock(), *auth.USER_ROLES),
            ).fetchall()
        return [pb.TokenDigest(token_id=t, secret_sha256=h, role=r, expires_at=e) for t, h, r, e in rows]

    def has_tokens(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None

    # ---- every call ----
    def authenticate(self, token: str) -> Identity | None:
        parts = auth.split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, secret_sha256, expires_at, revoked_at FROM tokens WHERE token_id=?", (token_id,)
            ).fetchone()
        if row is None:
            return None
        name, role, digest, expires_at, revoked_at = row
        if revoked_at or (expires_at and self._clock() >= expires_at) or not auth.hash_matches(secret, digest):
            return None
        return Identity(name, role, token_id)

    def bind_agent(self, agent_id: str, identity: Identity | None) -> None:
        """An agent token may act as one agent id only: the first it registered as."""
        if identity is None or identity.role != auth.AGENT:
            return  # an admin may act for any agent
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO agent_identities VALUES (?, ?)", (agent_id, identity.token_id))
            (bound,) = self._db.execute(
                "SELECT token_id FROM agent_identities WHERE agent_id=?", (agent_id,)
            ).fetchone()
        if bound != identity.token_id:
            raise PermissionDenied(f"agent {agent_id!r} is registered under another agent token than {identity.name!r}")


def _info_message(row: tuple) -> pb.TokenInfo:
    token_id, name, role, created_at, expires_at, revoked_at = row
    return pb.TokenInfo(token_id=token_id, name=name, role=role, created_at=created_at,
                        expires_at=expires_at, revoked_at=revoked_at)


def token_file(book: TokenBook, path: Path, name: str, role: str) -> str:
    """The token kept in ``path`` (mode 0600), made and written there first when it is missing or
    no longer valid: how `milepost up` hands its admin and its local agent their tokens."""
    if path.exists():
        kept = path.read_text().strip()
        if book.authenticate(kept) is not None:
            return kept
    taken = {t.name for t in book.infos()}
    unique = name if name not in taken else next(f"{name}-{i}" for i in range(2, 10_000) if f"{name}-{i}" not in taken)
    _, token = book.create(unique, role)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return token
