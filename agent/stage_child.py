"""The process one pipeline stage runs in (started by agent.stage_process; see it for why).

    python -m agent.stage_child FD   < {"call": ..., "settings": ..., "cpu_seconds": ...}

It takes the agent's settings as its own, limits its CPU time, and runs the call through
the engine: ``score`` (Engine.score_dataset of a bundle into a sink) or a ``training`` or
``custom`` stage (Engine.run_stage of an entry the agent allowed, checked again here as it
is resolved). It answers on FD, one JSON line at a time, and stops its whole session if the
agent goes away, so no stage outlives the agent that ran it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from agent.stage_entries import check_entry
from engines import registry
from engines.base import DatasetJob, StageSpec
from milepost.core.errors import MilepostError
from milepost.core.settings import load_settings

log = logging.getLogger("milepost.stage")


def main(argv: list[str]) -> int:
    out = os.fdopen(int(argv[1]), "w", buffering=1)
    os.set_inheritable(out.fileno(), False)  # the processes the stage starts do not hold the agent's pipe open
    request = json.load(sys.stdin)
    seconds = max(1, int(request["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))  # SIGXCPU, then SIGKILL
    threading.Thread(target=_follow_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    call = request["call"]
    try:
        load_settings(**request["settings"])
        _send(out, {"done": _run(call, lambda rows: _send(out, {"rows": int(rows)}))})
    except MilepostError as err:
        _send(out, {"error": {"code": err.code.name, "message": err.message}})
    except Exception as err:  # noqa: BLE001 - the stage's own failure; its traceback goes to the agent's log
        log.exception("stage %s failed", call.get("name"))
        _send(out, {"error": {"code": "INTERNAL", "message": f"stage {call.get('name')!r} failed: {type(err).__name__} "
                                                             "raised in the stage (its traceback is in the agent's log)"}})
    return 0


def _run(call: dict[str, Any], progress: Any) -> dict[str, Any]:
    engine = registry.get(call["engine"])
    if call["kind"] == "score":
        result = engine.score_dataset(Path(call["bundle"]), DatasetJob(**call["job"]), progress)
        return {"sink": result.sink, "rows": result.rows, "seconds": round(result.seconds, 3)}
    spec = StageSpec(name=call["name"], kind=call["kind"], entry=check_entry(call["entry"]), params=call["params"])
    return engine.run_stage(spec, call["inputs"])


def _send(out: IO[str], event: dict[str, Any]) -> None:
    out.write(json.dumps(event, default=str) + "\n")


def _follow_parent(parent: int) -> None:
    """Stop this session (the stage and all it started) once the agent is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
