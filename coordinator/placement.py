"""Where replicas run: filter agents by what a deployment needs, then score them.

The first cut needs only an engine and a count of replicas. Agents are scored by
how few replicas they already host (spread), ties broken by name for
repeatability. The coordinator issue adds resources, labels and GPUs here.
"""

from __future__ import annotations

from dataclasses import dataclass

from milepost.errors import FailedPrecondition


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    engines: frozenset[str]
    hosted_replicas: int


def place(candidates: list[Candidate], *, engine: str, replicas: int) -> list[str]:
    """Pick `replicas` distinct agents that run `engine`; fewer only if fewer exist.

    Raises FailedPrecondition naming what is missing when no agent fits at all.
    """
    if not candidates:
        raise FailedPrecondition("no live agent is registered; start one with `milepost agent`")
    fitting = [c for c in candidates if engine in c.engines]
    if not fitting:
        raise FailedPrecondition(
            f"no live agent offers the {engine!r} engine "
            f"({len(candidates)} live agent(s) checked)"
        )
    fitting.sort(key=lambda c: (c.hosted_replicas, c.agent_id))
    return [c.agent_id for c in fitting[:replicas]]
