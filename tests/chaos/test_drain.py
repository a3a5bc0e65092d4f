"""What a drain does, seen from the coordinator and the other agents (in-process servers).

An agent draining is shown DRAINING, gets nothing new placed on it, and leaves the
routes other agents hold while another replica serves; a replica alone on it stays
routed (it still answers). An agent that comes back is routed to only for what it has
loaded again. With the coordinator down a drain does not wait for it.
"""

from __future__ import annotations

import threading
import time

from coordinator import agent_reports
from tests.chaos.nodes import Agents, client, coordinator, hosted, wait_for


def _cluster(tmp_path, bundle_dir, ids=("a1", "a2", "a3"), **kw):
    coord = coordinator(tmp_path / "coordinator", **kw)
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    for agent_id in ids:
        agents.start(agent_id)
    c = client(coord)
    wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == len(ids), 10, "agents alive")
    c.push_model(bundle_dir, "lr")
    return coord, agents, c


def _routed(agent, endpoint: str) -> set[str]:
    """The addresses of other agents this agent's routes list for the endpoint's deployments."""
    route = agent.router.table.get(endpoint)
    return {a for remote in (route.remotes.values() if route else ()) for a in remote.addresses}


def test_a_draining_agent_leaves_routes_and_placement_and_calls_under_way_finish(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    coord, agents, c = _cluster(tmp_path, bundle_dir)
    try:
        c.deploy("two", "lr", replicas=2)
        c.deploy("one", "lr")
        (two,) = [d for e in c.endpoints() if e.name == "two" for d in e.deployments]
        (one,) = [d for e in c.endpoints() if e.name == "one" for d in e.deployments]
        drained_id = one.agent_ids[0] if one.agent_ids[0] in two.agent_ids else two.agent_ids[0]
        drained = agents.running[drained_id]
        watcher_id = next(a for a in agents.running if a != drained_id)
        watcher = agents.running[watcher_id]
        wait_for(lambda: drained.address in _routed(watcher, "two") or watcher_id in two.agent_ids, 5, "routes pushed")

        done = threading.Thread(target=drained.drain, kwargs={"timeout_s": 3.0, "quiet_s": 1.5})
        done.start()
        wait_for(lambda: {a.info.agent_id: a.state for a in c.status().agents}[drained_id] == "DRAINING", 3, "DRAINING shown")
        assert drained.address not in _routed(watcher, "two") or wait_for(
            lambda: drained.address not in _routed(watcher, "two"), 2, "routes without the draining agent")
        # Still answers while it drains, even the replica it alone serves.
        assert c.infer("one", rows, agent=drained.address).num_rows == len(rows)
        # New replicas go elsewhere.
        c.deploy("new", "lr", replicas=2)
        (new,) = [d for e in c.endpoints() if e.name == "new" for d in e.deployments]
        assert drained_id not in new.agent_ids and len(new.agent_ids) == 2
        done.join(10)
        assert not done.is_alive()
        agents.running.pop(drained_id)
        # Its deployments are on another agent once it is lost, and served there.
        wait_for(lambda: all(drained_id not in d.agent_ids and d.state == "READY"
                             for e in c.endpoints() for d in e.deployments), 10, "replicas moved off the drained agent")
        assert c.infer("one", rows).num_rows == len(rows)
    finally:
        agents.stop_all()
        c.close()
        coord.stop()


def test_a_restarted_agent_is_routed_to_only_once_it_serves(tmp_path, logistic_model, monkeypatch) -> None:
    _, bundle_dir, _, _ = logistic_model
    coord, agents, c = _cluster(tmp_path, bundle_dir, ids=("a1", "a2"), ttl_s=60.0)
    try:
        c.deploy("two", "lr", replicas=2)
        (d,) = [d for e in c.endpoints() for d in e.deployments]
        reports = coord.reconciler.reports
        # Known to serve: listed. Reported without it (as after a restart): not listed until it loads again.
        # a1's own heartbeats are stopped so that this test says what it reports (the TTL is long).
        assert reports.serves("a1", d.deployment_id)
        agents.running["a1"].registration.stop()
        monkeypatch.setattr(agent_reports, "RECENT_LOAD_S", 0.2)
        time.sleep(0.3)  # past RECENT_LOAD_S: the load the coordinator saw no longer counts on its own
        reports.record("a1", [], draining=False, load=reports.load("a1"))
        table = coord.routes.current()
        (route,) = [r for r in table.routes if r.endpoint == "two"]
        assert agents.running["a1"].address not in route.replicas[d.deployment_id].addresses
        assert agents.running["a2"].address in route.replicas[d.deployment_id].addresses
        status = {a.info.agent_id: a for a in c.status().agents}
        assert list(status["a1"].serving_deployment_ids) == [] and list(status["a1"].deployment_ids) == [d.deployment_id]
        # Its report says it serves it again.
        assert d.deployment_id in hosted(agents.running["a1"])
        reports.record("a1", [d.deployment_id], draining=False, load=reports.load("a1"))
        assert [d.deployment_id] == [x for a in c.status().agents if a.info.agent_id == "a1" for x in a.serving_deployment_ids]
        (route,) = [r for r in coord.routes.current().routes if r.endpoint == "two"]
        assert agents.running["a1"].address in route.replicas[d.deployment_id].addresses
        # Load is reported: requests answered and CPU are numbers the placement can use.
        load = status["a2"].load
        assert load.inflight_requests >= 0 and 0.0 <= load.cpu_utilization <= 1.0 and load.requests_per_s >= 0
    finally:
        agents.stop_all()
        c.close()
        coord.stop()


def test_a_drain_does_not_wait_for_a_coordinator_that_is_down(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, _ = logistic_model
    coord, agents, c = _cluster(tmp_path, bundle_dir, ids=("a1",))
    c.close()
    coord.stop()
    agent = agents.running.pop("a1")
    started = time.monotonic()
    agent.drain(timeout_s=20.0, quiet_s=0.2)
    took = time.monotonic() - started
    assert took < 3.0, f"a drain with the coordinator down took {took:.2f} s"
    assert agent.draining.is_set() and not agent.dataplane.ready
