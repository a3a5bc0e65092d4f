"""Decisions agents' decision logs dropped, turned into alerts in the audit trail.

An agent's heartbeat carries, per endpoint, how many decisions its log dropped
since it started (agent.decision_log: its writer's queue was full, the disk refused a
write, or a crash cut the file being written short). Each increase
over what that agent said before becomes an ``alert`` event of the endpoint, and
so an entry of the hash-chained audit trail: dropped decisions are never silent.
A count lower than the last one means the agent restarted: the whole count is new.
Kept in memory: after a coordinator restart an agent's first report is taken as
the baseline again only if it is no higher than before (at worst one repeat alert).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from coordinator.store import Store


class DecisionDrops:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}  # (agent id, endpoint) -> the count last reported

    def record(self, agent_id: str, dropped: Mapping[str, int]) -> None:
        """One heartbeat's counts; an alert per endpoint whose count rose."""
        new: list[tuple[str, int, int]] = []
        with self._lock:
            for endpoint, count in dropped.items():
                before = self._seen.get((agent_id, endpoint), 0)
                if count != before:
                    self._seen[(agent_id, endpoint)] = count
                    more = count - before if count > before else count
                    if more > 0:
                        new.append((endpoint, more, count))
        known = {e.name for e in self._store.list_endpoints()} if new else set()
        for endpoint, more, count in new:
            self._store.add_event(
                endpoint if endpoint in known else "", "alert",
                f"decision log on agent {agent_id} dropped {more} decision(s) of {endpoint} "
                f"({count} since it started): its writer's queue was full, the disk refused them, or a crash cut "
                "them off", self._clock(),
            )
