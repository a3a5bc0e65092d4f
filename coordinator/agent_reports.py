"""What each agent last said about itself: the deployments it serves, whether it is
draining, and its measured load. Kept in memory: every heartbeat says it all again.

The store says where replicas *should* run; this says where they *do*. Routes list a
replica only where its agent serves it, so a restarted agent gets traffic for a
deployment once it has loaded it again, not as soon as it is heard from (before, its
first seconds answered NOT_FOUND). A load the coordinator itself saw succeed counts
at once, before the next heartbeat says so: a heartbeat sent just before the load
finished must not take it back out for a second (``RECENT_LOAD_S``).

An agent not heard from since this coordinator started has no report: it is taken to
serve what the store says, so a coordinator restart never empties the route table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from milepost.v1 import types_pb2

# How long a load seen to succeed counts as served without a heartbeat saying so.
RECENT_LOAD_S = 5.0


@dataclass
class _Report:
    served: frozenset[str] = frozenset()
    draining: bool = False
    load: types_pb2.AgentLoad = field(default_factory=types_pb2.AgentLoad)
    loads_seen: dict[str, float] = field(default_factory=dict)  # deployment id -> when its load succeeded


class AgentReports:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, _Report] = {}

    def record(self, agent_id: str, served: Iterable[str], *, draining: bool,
               load: types_pb2.AgentLoad) -> bool:
        """A heartbeat's report; True when what routes depend on changed (served set or draining)."""
        served = frozenset(served)
        now = self._clock()
        with self._lock:
            report = self._reports.setdefault(agent_id, _Report())
            before = (self._serving(report, now), report.draining)
            report.loads_seen = {d: t for d, t in report.loads_seen.items() if now - t < RECENT_LOAD_S and d not in served}
            report.served, report.draining = served, draining
            report.load.CopyFrom(load)
            return before != (self._serving(report, now), draining)

    def loaded(self, agent_id: str, deployment_id: str) -> None:
        """The coordinator's Load call to the agent succeeded."""
        with self._lock:
            self._reports.setdefault(agent_id, _Report()).loads_seen[deployment_id] = self._clock()

    def serves(self, agent_id: str, deployment_id: str) -> bool:
        """Whether the agent serves the deployment; True for an agent with no report yet."""
        with self._lock:
            report = self._reports.get(agent_id)
            return report is None or deployment_id in self._serving(report, self._clock())

    def serving(self, agent_id: str, placed: Iterable[str]) -> list[str]:
        """Which of the ``placed`` deployments the agent serves."""
        return [d for d in placed if self.serves(agent_id, d)]

    def draining(self, agent_id: str) -> bool:
        with self._lock:
            report = self._reports.get(agent_id)
            return report is not None and report.draining

    def load(self, agent_id: str) -> types_pb2.AgentLoad:
        with self._lock:
            copy = types_pb2.AgentLoad()
            report = self._reports.get(agent_id)
            if report is not None:
                copy.CopyFrom(report.load)
            return copy

    @staticmethod
    def _serving(report: _Report, now: float) -> frozenset[str]:
        return report.served | {d for d, t in report.loads_seen.items() if now - t < RECENT_LOAD_S}
