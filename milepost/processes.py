"""Running the coordinator, an agent, or both (`milepost up`) in the foreground.

SIGINT and SIGTERM stop every server gracefully. An agent given SIGTERM drains
first (agent.server.Agent.drain: its traffic moves to other replicas, calls under
way finish); a second signal cuts the drain short. Once serving, the process
writes its addresses to DATA_DIR/<role>.json so scripts and tests that asked
for port 0 can find them. DATA_DIR's default is the ``home`` setting
(milepost.core.settings).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

STOP_LIMIT_S = 20.0


class _Server(Protocol):
    @property
    def address(self) -> str: ...

    def stop(self, grace: float = ...) -> None: ...


def serve_forever(servers: list[_Server], data_dir: Path, role: str, addresses: dict[str, str],
                  drain: Callable[[threading.Event], None] | None = None) -> None:
    """Serve until a signal; ``drain(abandon)`` runs first on SIGTERM."""
    stop = threading.Event()
    abandon = threading.Event()
    drain_wanted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal drain_wanted
        logging.getLogger("milepost").info("received %s, shutting down", signal.Signals(signum).name)
        if stop.is_set():
            abandon.set()
        drain_wanted = drain_wanted or (signum == signal.SIGTERM and drain is not None)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    state = data_dir / f"{role}.json"
    state.write_text(json.dumps({**addresses, "pid": os.getpid()}))
    for name, address in addresses.items():
        print(f"{name} listening on {address}", flush=True)
    print(f"ready (data in {data_dir}; Ctrl-C to stop)", flush=True)
    try:
        stop.wait()
        if drain is not None and drain_wanted:
            print("draining (a second signal stops at once)", flush=True)
            drain(abandon)
    finally:
        faulthandler.dump_traceback_later(STOP_LIMIT_S, exit=True)
        for server in reversed(servers):
            server.stop()
        state.unlink(missing_ok=True)
        print("stopped", flush=True)
