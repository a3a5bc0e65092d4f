"""Review of model versions: validation reports, approval by a second person, retirement,
and the rule that a production endpoint serves approved versions only.

A version moves registered -> validated -> approved (-> retired); the stage is kept on its
model record and changes in the same transaction as the row that moves it (a validation,
an approval, a retirement) and that row's audit entry:

- A validation report (what `milepost validate` measured against labelled data) is attached
  to the version: a passing one makes a registered version validated, a failing one makes a
  validated version registered again. An approved version keeps its approval (the report
  stays on record for the approver to see). Its verdict is not taken on trust: the
  coordinator judges the report's gates again on the report's own measures, by the one gate
  rule (milepost.core.gates), and refuses a report whose written verdicts or claimed result
  disagree with that (INVALID_ARGUMENT naming the gate). Who recorded it is kept.
- An approval needs role approver and an identity other than the one that pushed the
  version (PERMISSION_DENIED otherwise); with ``approval_requires_validation`` set, also a
  passing validation, standing since the last failing one, by an identity other than the
  one that pushed the version (independent validation, as SR 11-7 asks): FAILED_PRECONDITION
  naming what is missing and the command to run.
- A retired version takes no new deployments anywhere; where it serves already, it keeps
  serving until replaced (retiring is not an outage).

An endpoint marked ``require_approval`` (production) refuses a policy whose serving arms
(every arm and an ensemble's stacker; not a shadow's candidate, whose answers are
discarded) name an unapproved version, or route to an endpoint that serves one, and
promotion of one, with FAILED_PRECONDITION naming each version, where it is named and what
it lacks; a change to an endpoint behind a production one is held to the same rule
(coordinator.endpoints follows the endpoint arms). Rolling back is never refused.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coordinator import audit
from milepost.core import gates
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
    validator TEXT NOT NULL DEFAULT '',
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
    """FailedPrecondition naming every version of ``arms`` that production endpoint ``endpoint``
    may not serve, where it is named (``"arm 'a'"``, or a way through endpoint arms) and what
    it lacks."""
    missing = [f"{where} names {m.label}, which is {m.stage}" for where, m in arms if m.stage != APPROVED]
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
        with store.transaction() as db:
            _migrate(db)

    def record_validation(self, m: ModelRecord, passed: bool, report_json: str) -> str:
        """Attach a validation report whose claimed result (``passed``) its gates bear out;
        the version's stage after it."""
        if len(report_json.encode()) > MAX_REPORT_BYTES:
            raise InvalidArgument(f"a validation report may hold at most {MAX_REPORT_BYTES} bytes")
        _check_verdict(passed, report_json)
        stage = {REGISTERED: VALIDATED} if passed else {VALIDATED: REGISTERED}
        new = stage.get(m.stage, m.stage)
        now = self._clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO validations (name, version, at, actor, passed, report_json, validator) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (m.name, m.version, now, audit.current_actor(), int(passed), report_json, _caller()))
            _move(db, m, new)
            audit.append(db, self.store.audit_key, now, "validate", subject(m),
                         f"validation of {m.label} {'passed' if passed else 'failed'}; stage {new}")
        return new

    def approve(self, m: ModelRecord, note: str) -> None:
        _check_note(note, "approve")
        who = _caller()
        if m.pushed_by and who == m.pushed_by:
            raise PermissionDenied(
                f"{shown(who)} pushed {m.label} and may not approve it: an approver other than the identity "
                "that pushed a version approves it"
            )
        if m.stage == RETIRED:
            raise FailedPrecondition(f"model version {m.label} is retired; push it again to review it anew")
        if m.stage == APPROVED:
            raise FailedPrecondition(f"model version {m.label} is approved already; see `milepost models show`")
        run = f"`milepost validate {m.name}:{m.number} --data LABELLED.parquet --label COLUMN ...`"
        if self.approval_requires_validation and m.stage != VALIDATED:
            raise FailedPrecondition(
                f"model version {m.label} has no passing validation, which approval requires here: run {run}"
            )
        if self.approval_requires_validation and m.pushed_by and not self._independently_validated(m):
            raise FailedPrecondition(
                f"model version {m.label} was validated only by {shown(m.pushed_by)}, who pushed it; approval "
                f"requires here a validation by someone else (independent validation): another identity runs {run}"
            )
        now = self._clock()
        with self.store.transaction() as db:
            _move(db, m, APPROVED)
            db.execute("INSERT INTO approvals (name, version, at, actor, note) VALUES (?, ?, ?, ?, ?)",
                       (m.name, m.version, now, audit.current_actor(), note))
            audit.append(db, self.store.audit_key, now, "approve", subject(m), f"{m.label} approved: {note}")

    def _independently_validated(self, m: ModelRecord) -> bool:
        """Whether a passing validation by an identity other than the pusher stands (no failing
        one after it)."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT passed, validator FROM validations WHERE name=? AND version=? ORDER BY id",
                              (m.name, m.version)).fetchall()
        standing = False
        for passed, validator in rows:
            standing = bool(passed) and (standing or validator != m.pushed_by)
        return standing

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

    def history(self, m: ModelRecord, limit: int = 1000) -> list[audit.Entry]:
        """The audit entries of version ``m``, oldest first: its own (push, validate, approve,
        retire) and the endpoints' that name it or one of its deployments (placement, policy,
        promote, rollback, replicas moved), where it ran and when traffic moved to or from it."""
        label = f"{m.name}:{m.version[:12]}"  # how endpoint entries name a version
        with self.store.transaction() as db:
            named = [audit.Entry(*row) for row in db.execute(
                "SELECT * FROM audit WHERE subject=? OR detail LIKE ? ESCAPE '\\' ORDER BY seq LIMIT ?",
                (subject(m), f"%{_like(label)}%", limit))]
            named = [e for e in named if e.subject == subject(m) or _names(e.detail, label)]
            deployments = {d for e in named for d in re.findall(rf"{re.escape(label)} \(([0-9a-f]+)\)", e.detail)}
            deployments.update(row[0] for row in db.execute(
                "SELECT deployment_id FROM deployments WHERE model=? AND version=?", (m.name, m.version)))
            if deployments:
                ids = sorted(deployments)
                rows = db.execute(
                    f"SELECT * FROM audit WHERE {' OR '.join(['detail LIKE ?'] * len(ids))} ORDER BY seq LIMIT ?",
                    (*(f"%{i}%" for i in ids), limit))
                seen = {e.seq for e in named}
                named += [e for e in (audit.Entry(*row) for row in rows)
                          if e.seq not in seen and any(_names(e.detail, i) for i in ids)]
        return sorted(named, key=lambda e: e.seq)[:limit]

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


def _caller() -> str:
    """The identity name of the running call ("" without one), as versions record who pushed."""
    identity = current_identity()
    return identity.name if identity is not None else ""


def _check_verdict(claimed: bool, report_json: str) -> None:
    """InvalidArgument unless the report's gates, judged again on its own measures
    (milepost.core.gates), give the verdicts it writes and the result claimed."""
    try:
        report = json.loads(report_json)
    except ValueError as err:
        raise InvalidArgument(f"a validation report must be JSON (what `milepost validate` writes): {err}") from err
    if not isinstance(report, dict):
        raise InvalidArgument("a validation report must be a JSON object (what `milepost validate` writes)")
    verdicts = gates.rejudge(report)
    if not verdicts:
        raise InvalidArgument("a validation report judges no gate: give `milepost validate` limits "
                              "(--min-auc, --max-fpr, --max-fnr, ...) for it to record a verdict")
    written = {g["gate"]: g for g in report["gates"]}
    for v in verdicts:
        found = written.pop(v["gate"], None)
        if found is None:
            raise InvalidArgument(f"validation report: gate {v['gate']!r} is missing, though its limits and "
                                  "measures call for it")
        if found.get("passed") is not v["passed"] or not _same(found.get("value"), v["value"]):
            raise InvalidArgument(
                f"validation report: gate {v['gate']!r} says value {shown(found.get('value'))}, "
                f"{'passed' if found.get('passed') else 'failed'}, but its measures give {v['value']!r}, "
                f"{'passed' if v['passed'] else 'failed'}"
            )
    if written:
        raise InvalidArgument(f"validation report: gates {sorted(written)} judge nothing its limits name")
    result = gates.passed(verdicts)
    if claimed is not result or report.get("passed") is not result:
        raise InvalidArgument(
            f"validation report claims {'passed' if claimed else 'failed'} (its 'passed': "
            f"{shown(report.get('passed'))}), but its gates give {'passed' if result else 'failed'}"
        )


def _same(written: object, value: float | None) -> bool:
    if value is None or written is None:
        return value is written
    return isinstance(written, (int, float)) and not isinstance(written, bool) and math.isclose(
        written, value, rel_tol=1e-9, abs_tol=1e-12)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring review's tables from an older release up to this schema: who validated, as the
    identity name its actor ("name (role)") begins with."""
    if "validator" not in {row[1] for row in db.execute("PRAGMA table_info(validations)")}:
        db.execute("ALTER TABLE validations ADD COLUMN validator TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE validations SET validator=substr(actor, 1, instr(actor, ' (') - 1) WHERE instr(actor, ' (') > 0")


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


def _like(text: str) -> str:
    """``text`` as a literal in a LIKE pattern (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _names(detail: str, word: str) -> bool:
    """Whether ``detail`` names ``word`` whole: not as the tail of a longer model name or id."""
    return re.search(rf"(?<![A-Za-z0-9_.-]){re.escape(word)}(?![0-9a-f])", detail) is not None
