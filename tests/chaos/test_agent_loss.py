"""Many loads at once: an agent restarts empty with ten deployments, another is lost.

The reconciler's old thread pool deadlocked here: a heartbeat from an agent that
came back empty queued one task per missing deployment, each task queued the loads
it then waited for on the same pool, and with eight or more at once every worker
waited on work queued behind it (0 to 4 of 21 deployments came back, later
Deploys timed out). Three agents, thirty endpoints deployed ten at a time; then
the busiest agent restarts empty and the busiest of the others is lost for good.
Every deployment must serve again; the figures are printed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.chaos.nodes import Agents, client, coordinator, hosted, ready, wait_for

ENDPOINTS = 30
IDS = ("a1", "a2", "a3")


def _start(tmp_path, bundle_dir):
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    for agent_id in IDS:
        agents.start(agent_id)
    c = client(coord)
    wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 3, 10, "three agents alive")
    c.push_model(bundle_dir, "lr")
    names = [f"ep-{i:02d}" for i in range(ENDPOINTS)]
    with ThreadPoolExecutor(10) as burst:  # ten Deploys under way at once
        list(burst.map(lambda name: c.deploy(name, "lr"), names))
    return coord, agents, c


def _replicas(c) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {a: set() for a in IDS}
    for e in c.endpoints():
        for d in e.deployments:
            for a in d.agent_ids:
                out[a].add(d.deployment_id)
    return out


def test_spread_counts_replicas_and_says_why(tmp_path, logistic_model) -> None:
    """No deployment reserves CPU: ranked by reserved CPU alone every agent tied and all
    thirty landed on one. Concurrent Deploys must also see each other's choices."""
    coord, agents, c = _start(tmp_path, logistic_model[1])
    try:
        endpoints = c.endpoints()
        assert ready(endpoints)
        assert {a: len(ids) for a, ids in _replicas(c).items()} == {"a1": 10, "a2": 10, "a3": 10}
        for e in endpoints:
            (d,) = e.deployments
            assert d.message.startswith(f"placed on {d.agent_ids[0]}: ") and "of 3 agent(s)" in d.message, d.message
        placements = [ev.message for ev in c.events("ep-00") if ev.kind == "placement"]
        assert len(placements) == 1 and "placed on" in placements[0]
        print("example reason:", endpoints[-1].deployments[0].message)
    finally:
        c.close()
        agents.stop_all()
        coord.stop()


def test_restarted_and_lost_agents_deployments_serve_again(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    coord, agents, c = _start(tmp_path, bundle_dir)
    try:
        assert ready(c.endpoints())
        # The busiest agent restarts empty: every one of its deployments loads again, at once.
        by_agent = _replicas(c)
        busiest = max(IDS, key=lambda a: len(by_agent[a]))
        assert len(by_agent[busiest]) >= 9
        agents.kill(busiest)
        restarted_at = time.monotonic()
        back_agent = agents.start(busiest)
        back = wait_for(lambda: hosted(back_agent) == by_agent[busiest], 10,
                        f"{busiest} serves its {len(by_agent[busiest])} deployments again")
        back_total = time.monotonic() - restarted_at
        wait_for(lambda: ready(c.endpoints()), 5, "every deployment READY")

        # The busiest of the others is lost for good: its deployments move to the two left.
        victim = max((a for a in IDS if a != busiest), key=lambda a: len(by_agent[a]))
        moved = len(_replicas(c)[victim])
        agents.kill(victim)
        killed_at = time.monotonic()
        wait_for(lambda: {a.info.agent_id: a.state for a in c.status().agents}[victim] == "LOST", 10, f"{victim} lost")
        detected = time.monotonic() - killed_at
        survivors = [a for a in IDS if a != victim]
        replaced = wait_for(lambda: ready(c.endpoints()) and not _replicas(c)[victim]
                            and sum(len(hosted(agents.running[a])) for a in survivors) == ENDPOINTS,
                            10, f"every deployment served by {survivors}")
        for e in c.endpoints():
            (d,) = e.deployments
            assert c.infer(e.name, rows, agent=agents.running[d.agent_ids[0]].address).num_rows == len(rows)
        # Later Deploys are not stuck behind anything, and no background work is left.
        started = time.monotonic()
        c.deploy("after", "lr")
        deploy_s = time.monotonic() - started
        wait_for(lambda: coord.reconciler.busy() == 0, 5, "the reconcile queue drains")
        print(f"{ENDPOINTS} deployments on 3 agents: restarted {busiest} served its {len(by_agent[busiest])} again "
              f"{back:.2f} s after it registered ({back_total:.2f} s after it was stopped); lost {victim} detected after "
              f"{detected:.2f} s, its {moved} served on {survivors} {replaced:.2f} s after detection; "
              f"a Deploy after that took {deploy_s:.2f} s")
    finally:
        c.close()
        agents.stop_all()
        coord.stop()
