"""Review of model versions: validation reports, approval by a second person, retirement,
and the rule that a production endpoint serves approved versions only.

A version moves registered -> validated -> approved (-> retired); the stage is kept on its
model record and changes in the same transaction as the row that moves it (a validation,
an approval, a retirement) and that row's audit entry:

- A validation report (what `milepost validate` measured against labelled data) is attached
  to the version: a passing one makes a registered version validated, a failing one makes a
  validated version registered again. An approved version keeps its approval (the report
  stays on record for the approver to see).
- An approval needs role approver and an identity other than the one that pushed the
  version (PERMISSION_DENIED otherwise); with ``approval_requires_validation`` set, also a
  passing validation (FAILED_PRECONDITION naming the command to run).
- A retired version takes no new deployments anywhere; where it serves already, it keeps
  serving until replaced (retiring is not an outage).

An endpoint marked ``require_approval`` (production) refuses a policy whose serving arms
(every arm and an ensemble's stacker; not a shadow's candidate, whose answers are
discarded) name an unapproved version, and promotion of one, with FAILED_PRECONDITION
naming each version and what it lacks. Rolling back is never refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coordinator import audit
from milepost.core.auth import current_identity
from milepost.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, shown

if TYPE_CHECKING:
    from coordinator.store import ModelRecord, Store

REGISTERED, VALIDATED, APPROVED, RETIRED = "registered", "validated", "approved", "retired"
MAX_NOTE_CHARS = 4096
MAX_REPORT_BYTES = 1 << 20
SCHEMA = """
CREATE TABLE IF NOT EXISTS validations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    passed INTEGER NOT NULL,
    report_json TEXT NOT NULL,
    FOREIGN KEY (name, version) REFERENCES models(name, version) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    FOREIGN KEY (name, version) REFERENCES models(name, version) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS retirements (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES models(name, version) ON DELETE CASCADE
);
"""


@dataclass(frozen=True)
class Review:
    """What review has recorded about one version, oldest first."""

    validations: tuple[tuple[float, str, bool, str], ...]  # (at, actor, passed, report_json)
    approvals: tuple[tuple[float, str, str], ...]  # (at, actor, note)
    retired_note: str


def subject(m: ModelRecord) -> str:
    """The audit subject of a version: its name and whole content hash, as a push writes it."""
    return f"{m.name}:{m.version}"


def check_servable(endpoint: str, arms: Sequence[tuple[str, ModelRecord]]) -> None:
    """FailedPrecondition naming every (arm, version) of ``arms`` that production endpoint
    ``endpoint`` may not serve, and what each lacks."""
    missing = [f"arm {arm!r} names {m.label}, which is {m.stage}" for arm, m in arms if m.stage != APPROVED]
    if missing:
        raise FailedPrecondition(
            f"endpoint {endpoint!r} requires approved versions: {'; '.join(missing)}. An approver runs "
            "`milepost models approve NAME:VERSION --note TEXT` (someone other than who pushed it)"
        )


def check_deployable(m: ModelRecord) -> None:
    """A retired version takes no new deployments."""
    if m.stage == RETIRED:
        raise FailedPrecondition(f"model version {m.label} is retired: deploy another version")


class Governance:
    def __init__(self, store: Store, clock: Callable[[], float], approval_requires_validation: bool = False) -> None:
        self.store = store
        self._clock = clock
        self.approval_requires_validation = approval_requires_validation

    def record_validation(self, m: ModelRecord, passed: bool, report_json: str) -> str:
        """Attach a validation report; the version's stage after it."""
        if len(report_json.encode()) > MAX_REPORT_BYTES:
            raise InvalidArgument(f"a validation report may hold at most {MAX_REPORT_BYTES} bytes")
        stage = {REGISTERED: VALIDATED} if passed else {VALIDATED: REGISTERED}
        new = stage.get(m.stage, m.stage)
        now = self._clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO validations (name, version, at, actor, passed, report_json) VALUES (?, ?, ?, ?, ?, ?)",
                       (m.name, m.version, now, audit.current_actor(), int(passed), report_json))
            _move(db, m, new)
            audit.append(db, self.store.audit_key, now, "validate", subject(m),
                         f"validation of {m.label} {'passed' if passed else 'failed'}; stage {new}")
        return new

    def approve(self, m: ModelRecord, note: str) -> None:
        _check_note(note, "approve")
        identity = current_identity()
        who = identity.name if identity is not None else ""
        if m.pushed_by and who == m.pushed_by:
            raise PermissionDenied(
                f"{shown(who)} pushed {m.label} and may not approve it: an approver other than the identity "
                "that pushed a version approves it"
            )
        if m.stage == RETIRED:
            raise FailedPrecondition(f"model version {m.label} is retired; push it again to review it anew")
        if m.stage == APPROVED:
            raise FailedPrecondition(f"model version {m.label} is approved already; see `milepost models show`")
        if self.approval_requires_validation and m.stage != VALIDATED:
            raise FailedPrecondition(
                f"model version {m.label} has no passing validation, which approval requires here: run "
                f"`milepost validate {m.name}:{m.number} --data LABELLED.parquet --label COLUMN ...`"
            )
        now = self._clock()
        with self.store.transaction() as db:
            _move(db, m, APPROVED)
            db.execute("INSERT INTO approvals (name, version, at, actor, note) VALUES (?, ?, ?, ?, ?)",
                       (m.name, m.version, now, audit.current_actor(), note))
            audit.append(db, self.store.audit_key, now, "approve", subject(m), f"{m.label} approved: {note}")

    def retire(self, m: ModelRecord, note: str) -> None:
        _check_note(note, "retire")
        if m.stage == RETIRED:
            raise FailedPrecondition(f"model version {m.label} is retired already")
        now = self._clock()
        with self.store.transaction() as db:
            _move(db, m, RETIRED)
            db.execute("INSERT INTO retirements VALUES (?, ?, ?, ?, ?)",
                       (m.name, m.version, now, audit.current_actor(), note))
            audit.append(db, self.store.audit_key, now, "retire", subject(m), f"{m.label} retired: {note}")

    def review(self, m: ModelRecord) -> Review:
        with self.store.transaction() as db:
            key = (m.name, m.version)
            validations = db.execute(
                "SELECT at, actor, passed, report_json FROM validations WHERE name=? AND version=? ORDER BY id", key,
            ).fetchall()
            approvals = db.execute(
                "SELECT at, actor, note FROM approvals WHERE name=? AND version=? ORDER BY id", key,
            ).fetchall()
            retired = db.execute("SELECT note FROM retirements WHERE name=? AND version=?", key).fetchone()
        return Review(
            tuple((at, actor, bool(passed), report) for at, actor, passed, report in validations),
            tuple(approvals), retired[0] if retired else "",
        )


def _move(db: sqlite3.Connection, m: ModelRecord, stage: str) -> None:
    """Set the stage of ``m``, provided it is still the one ``m`` was read with (two
    approvals at once: the second finds the stage moved and is refused)."""
    moved = db.execute("UPDATE models SET stage=? WHERE name=? AND version=? AND stage=?",
                       (stage, m.name, m.version, m.stage)).rowcount
    if moved != 1:
        raise FailedPrecondition(f"model version {m.label} changed while this call ran (deleted, or reviewed by "
                                 "someone else); see `milepost models show` and try again")


def _check_note(note: str, what: str) -> None:
    if not note.strip():
        raise InvalidArgument(f"{what} needs a --note saying why (the audit trail keeps it)")
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidArgument(f"a note may hold at most {MAX_NOTE_CHARS} characters, got {len(note)}")
