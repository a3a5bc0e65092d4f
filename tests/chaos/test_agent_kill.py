"""SIGKILL of a real agent process serving fifty deployments.

The goal: every deployment serving again on live agents within 10 s of the loss
being detected. One `milepost agent` process serves fifty endpoints (it was the
only agent when they were deployed); two more join; the first gets SIGKILL and
all fifty move at once. The figures are printed.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from tests.chaos.nodes import client, coordinator, ready, wait_for
from tests.test_coordinator import start, stop

ENDPOINTS = 50


def test_sigkill_of_an_agent_with_many_deployments(tmp_path, logistic_model) -> None:
    _, bundle_dir, _, rows = logistic_model
    coord = coordinator(tmp_path / "coordinator")
    os.environ["MILEPOST_TOKEN"] = coord.admin_token_file.read_text().strip()  # for start()'s agent tokens
    processes: dict[str, tuple] = {}
    try:
        def agent(agent_id: str) -> tuple:
            return start("agent", tmp_path / agent_id, "--coordinator", coord.address, "--agent-id", agent_id)

        processes["a1"] = agent("a1")
        with client(coord) as c:
            wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 1, 15, "a1 alive")
            c.push_model(bundle_dir, "lr")
            with ThreadPoolExecutor(10) as burst:
                list(burst.map(lambda i: c.deploy(f"ep-{i:02d}", "lr"), range(ENDPOINTS)))
            assert ready(c.endpoints())
            with ThreadPoolExecutor(2) as starting:
                processes.update(zip(("a2", "a3"), starting.map(agent, ("a2", "a3"))))
            wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 3, 15, "three agents alive")
            victim = "a1"
            process, _ = processes.pop(victim)
            process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            process.wait(10)
            wait_for(lambda: {a.info.agent_id: a.state for a in c.status().agents}[victim] == "LOST", 10, "loss detected")
            detected = time.monotonic() - killed_at
            serving = wait_for(lambda: ready(c.endpoints()) and not any(
                victim in d.agent_ids for e in c.endpoints() for d in e.deployments), 10,
                "every deployment on a live agent, READY")
            address = {a: state["agent"] for a, (_, state) in processes.items()}
            for e in c.endpoints():
                (d,) = e.deployments
                assert c.infer(e.name, rows, agent=address[d.agent_ids[0]]).num_rows == len(rows)
            counts = {a: sum(a in d.agent_ids for e in c.endpoints() for d in e.deployments) for a in processes}
            assert counts == {"a2": ENDPOINTS // 2, "a3": ENDPOINTS // 2}, counts
            print(f"SIGKILL of {victim} with all {ENDPOINTS} deployments: detected after {detected:.2f} s (TTL 1.5 s), "
                  f"all {ENDPOINTS} READY on live agents {serving:.2f} s after detection, spread {counts}")
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                stop(process)
        coord.stop()
