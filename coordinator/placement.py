"""Where replicas run: filter agents by what a deployment needs, then score them.

Filters, in order: the engine, the label selector, free CPU, free memory, free
GPUs. When nothing passes, the error says how many agents each filter turned
away, so the operator knows what to add or relax. Scoring spreads replicas
over the emptiest agents (or packs them onto the fullest), and keeps agents
with GPUs free for deployments that ask for GPUs. Replicas of one deployment
always land on distinct agents.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.requirements import Requirements

STRATEGIES = ("spread", "pack")


@dataclass(frozen=True)
class Candidate:
    """A live agent with its capacity and what its current replicas already reserve."""

    agent_id: str
    engines: frozenset[str]
    labels: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0
    used_cpu: float = 0.0
    used_memory_bytes: int = 0
    used_gpus: int = 0

    @property
    def free_cpu(self) -> float:
        return self.cpu - self.used_cpu

    @property
    def free_memory_bytes(self) -> int:
        return self.memory_bytes - self.used_memory_bytes

    @property
    def free_gpus(self) -> int:
        return self.gpus - self.used_gpus


def _rejection(c: Candidate, req: Requirements) -> str | None:
    """Why this agent cannot host a replica, or None when it can."""
    if req.engine not in c.engines:
        return f"lack the {req.engine!r} engine"
    for key, value in req.selector.items():
        if c.labels.get(key) != value:
            return f"lack label {key}={value}"
    if req.cpu > c.free_cpu + 1e-9:
        return f"have less than {req.cpu:g} free CPU"
    if req.memory_bytes > c.free_memory_bytes:
        return f"have less than {req.memory_bytes / 2**30:.2f} GiB free memory"
    if req.gpus > c.free_gpus:
        return f"have fewer than {req.gpus} free GPU(s)"
    return None


def place(
    candidates: list[Candidate], req: Requirements, replicas: int, *,
    exclude: frozenset[str] = frozenset(), strategy: str = "spread",
) -> list[str]:
    """Up to `replicas` distinct agents for a deployment, best first; never one in `exclude`.

    Returns fewer than asked when fewer fit. Raises FailedPrecondition, naming
    every unmet requirement, when none fits.
    """
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"placement strategy {strategy!r} is unknown; use one of {STRATEGIES}")
    pool = [c for c in candidates if c.agent_id not in exclude]
    if not pool:
        raise FailedPrecondition(
            "no live agent is available" + (f" besides {sorted(exclude)}" if exclude else "")
            + "; start one with `milepost agent --coordinator HOST:PORT`"
        )
    reasons: Counter[str] = Counter()
    fitting = []
    for c in pool:
        why = _rejection(c, req)
        if why is None:
            fitting.append(c)
        else:
            reasons[why] += 1
    if not fitting:
        detail = "; ".join(f"{n} agent(s) {why}" for why, n in reasons.most_common())
        raise FailedPrecondition(f"no live agent can host this deployment: {detail}")

    def score(c: Candidate) -> tuple:
        # GPU nodes are kept for GPU work: a CPU-only deployment prefers agents without GPUs.
        wastes_gpu = req.gpus == 0 and c.gpus > 0
        free = c.free_cpu / c.cpu if c.cpu else 0.0
        fullness = free if strategy == "pack" else -free
        return (wastes_gpu, fullness, c.agent_id)

    fitting.sort(key=score)
    return [c.agent_id for c in fitting[:replicas]]
