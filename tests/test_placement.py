"""Placement decisions on described agents: filters, scoring, and the errors operators read."""

from __future__ import annotations

import pytest

from coordinator.placement import Candidate, place
from milepost.core.errors import FailedPrecondition
from milepost.core.requirements import Requirements

GiB = 2**30


def agent(name: str, **kw) -> Candidate:
    defaults = dict(engines=frozenset({"native"}), cpu=8.0, memory_bytes=32 * GiB)
    return Candidate(agent_id=name, **{**defaults, **kw})


def test_spread_prefers_the_emptiest_and_pack_the_fullest() -> None:
    agents = [agent("a", used_cpu=6.0), agent("b", used_cpu=1.0), agent("c", used_cpu=3.0)]
    assert place(agents, Requirements("native", cpu=1), 3) == ["b", "c", "a"]
    assert place(agents, Requirements("native", cpu=1), 3, strategy="pack") == ["a", "c", "b"]


def test_replicas_land_on_distinct_agents_and_fewer_when_fewer_fit() -> None:
    agents = [agent("a"), agent("b", engines=frozenset({"torch"}))]
    assert place(agents, Requirements("native"), 3) == ["a"]
    assert place(agents, Requirements("native"), 3, exclude=frozenset()) == ["a"]


def test_labels_resources_and_gpus_filter() -> None:
    agents = [
        agent("cpu-a", labels={"zone": "a"}),
        agent("cpu-b", labels={"zone": "b"}, used_memory_bytes=31 * GiB),
        agent("gpu-a", labels={"zone": "a"}, gpus=2, used_gpus=1),
    ]
    assert place(agents, Requirements("native", selector={"zone": "a"}), 5) == ["cpu-a", "gpu-a"]
    assert place(agents, Requirements("native", gpus=1), 5) == ["gpu-a"]
    assert place(agents, Requirements("native", memory_bytes=2 * GiB), 5) == ["cpu-a", "gpu-a"]
    # A CPU deployment keeps off the GPU node while a CPU node is free.
    assert place(agents, Requirements("native"), 1) == ["cpu-a"]


def test_nothing_fits_names_every_unmet_requirement() -> None:
    agents = [
        agent("a", engines=frozenset({"native"})),
        agent("b", engines=frozenset({"torch"}), labels={"zone": "b"}),
        agent("c", engines=frozenset({"torch"}), labels={"zone": "a"}, cpu=2.0),
    ]
    with pytest.raises(FailedPrecondition) as err:
        place(agents, Requirements("torch", cpu=4, selector={"zone": "a"}), 1)
    message = err.value.message
    assert "1 agent(s) lack the 'torch' engine" in message
    assert "1 agent(s) lack label zone=a" in message
    assert "1 agent(s) have less than 4 free CPU" in message
    with pytest.raises(FailedPrecondition, match="no live agent is available besides"):
        place([agent("a")], Requirements("native"), 1, exclude=frozenset({"a"}))


def test_spread_counts_replicas_when_nothing_is_reserved_and_says_why() -> None:
    from coordinator.placement import choose

    agents = [agent("a1", replicas=3), agent("a2", replicas=1), agent("a3", replicas=1)]
    first, second = choose(agents, Requirements("native"), 2)
    assert (first.agent_id, second.agent_id) == ("a2", "a3")
    assert first.reason == "placed on a2: 1 replica(s), the fewest of 3 agent(s) (tied with a3; first by agent id)"
    assert second.reason.startswith("placed on a3: 1 replica(s), the next fewest of 3 agent(s)")
    # Reserved shares break a tie in replicas; pack fills the agent with the most.
    agents = [agent("a1", replicas=2, used_cpu=4.0), agent("a2", replicas=2, used_cpu=1.0)]
    (choice,) = choose(agents, Requirements("native"), 1)
    assert choice.agent_id == "a2" and "tied with a1; first by least reserved" in choice.reason
    assert place(agents, Requirements("native"), 1, strategy="pack") == ["a1"]
    # The same state gives the same answer, whatever order the agents come in.
    assert {tuple(place(list(order), Requirements("native"), 3)) for order in (agents, agents[::-1])} == {("a2", "a1")}


def test_measured_cpu_breaks_ties_and_never_outweighs_replicas() -> None:
    from coordinator.placement import choose

    # Equal replicas and reservations: the agent measured less busy wins, and the reason says so.
    agents = [agent("a1", replicas=1, cpu_utilization=0.42), agent("a2", replicas=1, cpu_utilization=0.05)]
    (choice,) = choose(agents, Requirements("native"), 1)
    assert choice.agent_id == "a2"
    assert choice.reason == "placed on a2: 1 replica(s), the fewest of 2 agent(s) (5% CPU measured; tied with a1; first by least CPU measured)"
    # Noise within a tenth does not reorder agents: the id decides.
    agents = [agent("a1", replicas=1, cpu_utilization=0.31), agent("a2", replicas=1, cpu_utilization=0.38)]
    assert place(agents, Requirements("native"), 1) == ["a1"]
    # A reading of one second never outweighs what agents carry: a burst of Deploys placed
    # by it would all go to whichever agent was quietest then.
    agents = [agent("hot", replicas=2, cpu_utilization=0.9), agent("idle", replicas=5, cpu_utilization=0.02)]
    assert place(agents, Requirements("native"), 1) == ["hot"]
    assert place(agents, Requirements("native", cpu=1), 2, strategy="pack") == ["idle", "hot"]
    # Pack: equal reservations and replicas, the less busy first.
    agents = [agent("p1", replicas=1, used_cpu=2.0, cpu_utilization=0.8), agent("p2", replicas=1, used_cpu=2.0)]
    assert place(agents, Requirements("native"), 2, strategy="pack") == ["p2", "p1"]
