"""Training functions that misbehave on purpose, for tests/security/test_stage_limits.py; the
tests list them in MILEPOST_STAGE_ENTRIES, as an operator would list their own. Each takes
the training table (unused but by ``set_environment``) and the stage's params."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def spin(table: Any, **params: Any) -> Any:
    """Burns CPU until it is stopped."""
    n = 0
    while True:
        n += 1


def hog(table: Any, mib: int = 4096, **params: Any) -> Any:
    """Holds ``mib`` MiB of touched memory, 16 MiB at a time, then waits."""
    held = []
    for _ in range(mib // 16):
        held.append(bytearray(16 << 20))  # zero-filled: every page is written
    time.sleep(600)
    return {"held": len(held)}


def sleep_with_child(table: Any, pids: str = "", **params: Any) -> Any:
    """Starts a grandchild process, writes both pids to the file ``pids``, and waits."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(pids).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(600)
    return {}


def set_environment(table: Any, pids: str = "", variables: dict[str, str] | None = None, **params: Any) -> Any:
    """Changes its own process's environment, as the issue's attack did to the agent's, writes
    its pid to the file ``pids``, and trains a real model on columns x -> y."""
    from sklearn.linear_model import LogisticRegression

    os.environ.update(variables or {})
    Path(pids).write_text(str(os.getpid()))
    frame = table.to_pandas()
    return LogisticRegression().fit(frame[["x"]].to_numpy("float32"), frame["y"])
