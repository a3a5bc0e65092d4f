"""Where replicas run: filter agents by what a deployment needs, then rank them.

Filters, in order: the engine, the label selector, free CPU, free memory, free
GPUs, or, for a deployment that names GPU memory per replica, GPUs with that much
unreserved. When nothing passes, the error says how many agents each filter turned
away (and, for GPU memory, what each GPU has free), so the operator knows what to
add or relax.

GPU memory: each heartbeat reports every GPU with what the agent's replicas and
stages reserve on it, as the agent assigned them (``Candidate.gpu_rooms``: the
reconciler starts from that report). Replicas placed on the agent that the report
does not hold yet are added here (``gpu_rooms``) with the agent's own assignment rule
(milepost.core.requirements.pick_gpus), oldest first, so a burst of Deploys between
two heartbeats sees each other. A report, unlike a replay of the deployments, is right
after replicas left a multi-GPU agent or a restart loaded them in another order. A GPU
replica that names no memory holds its GPU whole. The agent checks again when it
loads, and refuses with each GPU's free memory.

A running pipeline stage holds its CPU, memory and GPUs on its agent as a replica does
(the reconciler lists it among what the agent hosts), until it ends.

Ranking looks at what each agent already carries: the replicas it hosts, the
share of its CPU, memory, GPUs and GPU memory those replicas reserve, and the CPU it was
measured to use (its heartbeats report it). "spread" puts a replica on the agent
with the fewest replicas, then the smallest reserved share, then the least measured
CPU; "pack" on the one with the largest reserved share, then the most replicas.
Counting replicas matters because most deployments reserve nothing: ranked by
reserved CPU alone, every agent ties and every replica lands on the same one.
Measured CPU, bucketed to tenths so that noise does not reorder agents, only breaks
ties: it is a reading of the last second, and a burst of Deploys placed by it would
all go to whichever agent was quietest then. Agents with GPUs
are kept for deployments that ask for GPUs, and the last tie-break is the agent
id, so the same state always gives the same answer. Replicas of one deployment
always land on distinct agents. Each choice comes with a sentence saying why,
for the deployment's message and the audit trail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from milepost.core.errors import FailedPrecondition, InvalidArgument
from milepost.core.requirements import GpuRoom, Requirements, gib, pick_gpus, reserve

STRATEGIES = ("spread", "pack")


@dataclass(frozen=True)
class Candidate:
    """A live agent with its capacity and what its current replicas already carry."""

    agent_id: str
    engines: frozenset[str]
    labels: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0
    used_cpu: float = 0.0
    used_memory_bytes: int = 0
    used_gpus: int = 0
    replicas: int = 0  # replicas it hosts, whatever they reserve
    cpu_utilization: float = 0.0  # measured over its last heartbeat interval, 0 to 1 of its cores
    gpu_rooms: tuple[GpuRoom, ...] = ()  # each GPU's memory and what is reserved on it (gpu_rooms())

    @property
    def measured_tenths(self) -> int:
        return int(self.cpu_utilization * 10)

    @property
    def free_cpu(self) -> float:
        return self.cpu - self.used_cpu

    @property
    def free_memory_bytes(self) -> int:
        return self.memory_bytes - self.used_memory_bytes

    @property
    def free_gpus(self) -> int:
        return self.gpus - self.used_gpus

    @property
    def reserved_share(self) -> float:
        """The largest share of one resource (CPU, memory, GPUs) its replicas reserve, 0 to 1.
        GPUs count by memory where it is known (a replica naming none reserves its GPU
        whole), so a GPU shared by small reservations is not taken for a full one."""
        gpu_total = sum(r.total_bytes for r in self.gpu_rooms)
        gpu = (sum(min(r.reserved_bytes, r.total_bytes) for r in self.gpu_rooms), gpu_total) if gpu_total else (
            self.used_gpus, self.gpus)
        shares = [used / total for used, total in (
            (self.used_cpu, self.cpu), (self.used_memory_bytes, self.memory_bytes), gpu,
        ) if total > 0]
        return max(shares, default=0.0)


@dataclass(frozen=True)
class Choice:
    """An agent chosen for one replica, and why (a sentence for people)."""

    agent_id: str
    reason: str


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
    if req.gpu_memory_bytes:
        if req.gpus > len(c.gpu_rooms):
            return f"have fewer than {req.gpus} GPU(s)"
        if pick_gpus(c.gpu_rooms, req.gpus, req.gpu_memory_bytes) is None:
            rooms = "; ".join(r.describe() for r in c.gpu_rooms)
            which = "no GPU" if req.gpus == 1 else f"fewer than {req.gpus} GPUs"
            return f"have {which} with {gib(req.gpu_memory_bytes)} unreserved ({rooms})"
    elif req.gpus > c.free_gpus:
        return f"have fewer than {req.gpus} free GPU(s)"
    return None


def gpu_rooms(rooms: Iterable[GpuRoom], placed: Iterable[tuple[str, Requirements]]) -> tuple[GpuRoom, ...]:
    """An agent's GPUs as it last reported them (or bare, before any report) with what
    the ``placed`` replicas (deployment id, requirements; oldest first) that the report
    does not hold reserve, assigned as the agent will assign them. A replica that no
    longer fits (the agent reports other GPUs now) counts on the least loaded ones, so
    it is never forgotten."""
    rooms = list(rooms)
    for deployment_id, r in placed:
        if r.gpus:
            picked = pick_gpus(rooms, r.gpus, r.gpu_memory_bytes) or pick_gpus(rooms, min(r.gpus, len(rooms)), 0)
            rooms = reserve(rooms, picked or (), r.gpu_memory_bytes, deployment_id)
    return tuple(rooms)


def place(
    candidates: list[Candidate], req: Requirements, replicas: int, *,
    exclude: frozenset[str] = frozenset(), strategy: str = "spread",
) -> list[str]:
    """Up to `replicas` distinct agents for a deployment, best first; never one in `exclude`.

    Returns fewer than asked when fewer fit. Raises FailedPrecondition, naming
    every unmet requirement, when none fits.
    """
    return [c.agent_id for c in choose(candidates, req, replicas, exclude=exclude, strategy=strategy)]


def choose(
    candidates: list[Candidate], req: Requirements, replicas: int, *,
    exclude: frozenset[str] = frozenset(), strategy: str = "spread",
) -> list[Choice]:
    """What ``place`` chooses, each agent with the reason it was chosen."""
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

    fitting.sort(key=lambda c: _rank(c, req, strategy))
    turned_away = sum(reasons.values())
    return [Choice(c.agent_id, _reason(i, fitting, req, strategy, turned_away)) for i, c in enumerate(fitting[:replicas])]


def _wastes_gpu(c: Candidate, req: Requirements) -> bool:
    # GPU nodes are kept for GPU work: a CPU-only deployment prefers agents without GPUs.
    return req.gpus == 0 and c.gpus > 0


def _rank(c: Candidate, req: Requirements, strategy: str) -> tuple:
    if strategy == "pack":
        return (_wastes_gpu(c, req), -round(c.reserved_share, 9), -c.replicas, c.measured_tenths, c.agent_id)
    return (_wastes_gpu(c, req), c.replicas, round(c.reserved_share, 9), c.measured_tenths, c.agent_id)


def _reason(rank: int, ranked: list[Candidate], req: Requirements, strategy: str, turned_away: int) -> str:
    """E.g. "placed on a2: 3 replica(s), the fewest of 3 agent(s) (tied with a3; first by agent id)"."""
    c = ranked[rank]
    which = ("the " if rank == 0 else "the next ") + ("most" if strategy == "pack" else "fewest")
    if strategy == "pack":
        primary = f"{c.reserved_share:.0%} reserved, {which} of {len(ranked)} agent(s)"
    else:
        primary = f"{c.replicas} replica(s), {which} of {len(ranked)} agent(s)"
    key = _rank(c, req, strategy)
    tied = [_rank(o, req, strategy) for o in ranked[rank + 1:]]
    tied_names = [o.agent_id for o, k in zip(ranked[rank + 1:], tied) if k[:2] == key[:2]]  # the ones it beat, barely
    notes = []
    if c.cpu and (c.used_cpu or req.cpu):
        notes.append(f"{c.used_cpu:g} of {c.cpu:g} CPU reserved")
    if c.cpu_utilization:
        notes.append(f"{c.cpu_utilization:.0%} CPU measured")
    picked = pick_gpus(c.gpu_rooms, req.gpus, req.gpu_memory_bytes) if req.gpus else None
    if picked:
        notes.extend(r.describe() for r in c.gpu_rooms if r.index in picked)
    if tied_names:
        decided = max(next(i for i in range(len(key)) if k[i] != key[i]) for k in tied if k[:2] == key[:2])
        names = ", ".join(tied_names[:3]) + (" ..." if len(tied_names) > 3 else "")
        notes.append(f"tied with {names}; first by {_TIE_BREAKS[strategy][decided]}")
    if not _wastes_gpu(c, req) and any(_wastes_gpu(o, req) for o in ranked):
        notes.append("agents with GPUs kept for GPU work")
    if turned_away:
        notes.append(f"{turned_away} agent(s) did not fit")
    return f"placed on {c.agent_id}: {primary}" + (f" ({'; '.join(notes)})" if notes else "")


# What decides between agents tied on the primary key, by the index in _rank's tuple.
_TIE_BREAKS = {
    "spread": {2: "least reserved", 3: "least CPU measured", 4: "agent id"},
    "pack": {2: "most replicas", 3: "least CPU measured", 4: "agent id"},
}
