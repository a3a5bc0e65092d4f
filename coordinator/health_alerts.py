"""Health alerts: an event in the audit trail, and a JSON POST to the endpoint's webhook.

An alert says that something entered a breach (event ``alert``, ``"status": "firing"``) or left
it (event ``resolved``, ``"status": "resolved"``), not that it is still in one: what is in a breach
now is kept in the store (``SCHEMA``: per endpoint, kind and subject, e.g. a deployment's
feature and statistic on one agent), and ``transitions`` says which of the subjects judged now
changed. A restart raises nothing twice; ``active`` is what the coordinator's gauges show.

The event is written at once, in the store's transaction (coordinator.store: every event
is also a hash-chained audit entry), so an alert is never lost. The webhook is delivered
beside it, from one daemon thread and a bounded queue, so a slow receiver never holds up a
heartbeat: each POST is tried ``ATTEMPTS`` times with doubling backoff, a 2xx answer ends it,
and an alert that could not be delivered is an event of its own (``webhook_failed``). A full
queue drops the POST (the event is there) and says so in the log.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coordinator.store import DeploymentRecord, Store
from milepost.v1 import coordinator_pb2 as pb

log = logging.getLogger("milepost.coordinator")
ATTEMPTS = 4
FIRST_BACKOFF_S = 0.2
POST_TIMEOUT_S = 5.0
QUEUE = 1000
SCHEMA = ("CREATE TABLE IF NOT EXISTS health_breaches (endpoint TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, "
          "deployment_id TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (endpoint, kind, subject))",)


class Alerts:
    def __init__(self, store: Store, clock: Callable[[], float], *, backoff_s: float = FIRST_BACKOFF_S) -> None:
        self.store = store
        self.clock = clock
        self.backoff_s = backoff_s
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        with store.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def transitions(self, endpoint: str, kind: str, judged: Mapping[str, bool], deployment_id: str = "", *,
                    every: str | None = None) -> tuple[list[str], list[str]]:
        """Record whether each subject judged now is in a breach; the subjects that entered one and
        those that left it (sorted). Subjects not judged now keep their state, unless they start
        with ``every`` (``judged`` names every subject there is of that prefix: the others are no
        more, and are dropped without a word). ``deployment_id``: what the subjects belong to, if
        a deployment (forgotten with it: ``forget_gone``)."""
        with self.store.transaction() as db:
            before = {s for (s,) in db.execute("SELECT subject FROM health_breaches WHERE endpoint=? AND kind=?",
                                               (endpoint, kind))}
            entered = sorted(s for s, breach in judged.items() if breach and s not in before)
            left = sorted(s for s, breach in judged.items() if not breach and s in before)
            gone = [s for s in before if every is not None and s.startswith(every) and s not in judged]
            now = self.clock()
            db.executemany("INSERT INTO health_breaches VALUES (?, ?, ?, ?, ?)",
                           [(endpoint, kind, s, deployment_id, now) for s in entered])
            db.executemany("DELETE FROM health_breaches WHERE endpoint=? AND kind=? AND subject=?",
                           [(endpoint, kind, s) for s in (*left, *gone)])
        return entered, left

    def active(self) -> dict[tuple[str, str], int]:
        """(endpoint, kind) -> the number of its subjects in a breach now."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT endpoint, kind, COUNT(*) FROM health_breaches GROUP BY endpoint, kind").fetchall()
        return {(endpoint, kind): count for endpoint, kind, count in rows}

    def forget_gone(self) -> None:
        """Drop the breaches of endpoints and deployments that no longer exist."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM health_breaches WHERE endpoint NOT IN (SELECT name FROM endpoints) OR "
                       "(deployment_id != '' AND deployment_id NOT IN (SELECT deployment_id FROM deployments))")

    def drift(self, endpoint: str, deployment: DeploymentRecord, agent_id: str, seq: int, rows: int,
              changed: Sequence[pb.FeatureHealth], webhook_url: str, *, resolved: bool = False) -> str:
        """A window in which the statistics of ``changed`` features (or the prediction) entered a
        breach (``changed``: only those statistics), or left it (``resolved``); the alert's message."""
        parts = []
        for f in changed:
            statistics = ", ".join(f"{s.name} {s.value:.3g} (threshold {s.threshold:g})" for s in f.statistics)
            parts.append(f"{f.name}: {statistics}")
        message = (f"drift {'ended ' if resolved else ''}in {deployment.model}:{deployment.number or deployment.version[:12]} "
                   f"(deployment {deployment.deployment_id}, window {seq} on {agent_id}, {rows} rows): " + "; ".join(parts))
        payload = {
            "kind": "drift", "endpoint": endpoint, "deployment": deployment.deployment_id, "model": deployment.model,
            "version": deployment.version, "agent": agent_id, "window": seq, "rows": rows,
            "features": {f.name: {s.name: s.value for s in f.statistics} for f in changed},
        }
        self.raise_alert(endpoint, message, payload, webhook_url, resolved=resolved)
        return message

    def raise_alert(self, endpoint: str, message: str, payload: dict[str, Any], webhook_url: str, *,
                    resolved: bool = False) -> None:
        """An ``alert`` event of the endpoint now (``resolved``: something left its breach); ``payload``
        (its ``kind``: drift, performance, fairness), with the message and status, to the webhook beside it."""
        self.store.add_event(endpoint, "resolved" if resolved else "alert", message, self.clock())
        if webhook_url:
            self._post_later(webhook_url, {**payload, "status": "resolved" if resolved else "firing",
                                           "message": message, "at": self.clock()})

    def _post_later(self, url: str, body: dict[str, Any]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="health-webhook", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((url, body))
        except queue.Full:
            log.warning("health webhook queue full: alert %r not posted to %s (it is in the audit trail)",
                        body.get("message"), url)

    def _deliver(self) -> None:
        while not self._closed.is_set():
            url, body = self._queue.get()
            try:
                if self._closed.is_set():
                    return
                error = post(url, body, backoff_s=self.backoff_s, stop=self._closed)
                if error is not None and not self._closed.is_set():
                    self.store.add_event(body.get("endpoint", ""), "webhook_failed",
                                         f"alert not delivered to {url} after {ATTEMPTS} attempts: {error}", self.clock())
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Stop delivering (before the store closes): POSTs not yet made are dropped, their alerts
        are in the audit trail."""
        self._closed.set()
        try:
            self._queue.put_nowait(("", {}))  # wakes the thread
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout=POST_TIMEOUT_S + 1)


def post(url: str, body: dict[str, Any], *, attempts: int = ATTEMPTS, backoff_s: float = FIRST_BACKOFF_S,
         stop: threading.Event | None = None) -> str | None:
    """POST ``body`` as JSON until a 2xx answer; None when delivered, else the last error (or
    "stopped": ``stop`` was set while it waited to try again)."""
    pause = stop or threading.Event()
    data = json.dumps(body, sort_keys=True).encode()
    error = ""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "milepost-coordinator"})
        try:
            with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as answer:  # noqa: S310 - http(s) checked when set
                if 200 <= answer.status < 300:
                    return None
                error = f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:
            error = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            error = str(getattr(err, "reason", err))
        if attempt + 1 < attempts and pause.wait(backoff_s * 2**attempt):
            return "stopped"
    return error
