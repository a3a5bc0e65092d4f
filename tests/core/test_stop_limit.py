"""A server process whose stop hangs still ends (milepost.processes.STOP_LIMIT_S), saying where it hung.

The hang is a real one: a server whose stop() never returns, in a real process given SIGTERM.
The limit is lowered to half a second so the test does not wait the default 20 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import ROOT, wait_for_file

HUNG_SERVER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from milepost import processes

    processes.STOP_LIMIT_S = 0.5

    class HungServer:
        address = "127.0.0.1:1"

        def stop(self, grace=2.0):
            threading.Event().wait()  # never returns: a stop that hangs

    processes.serve_forever([HungServer()], Path(sys.argv[1]), "hung", {"hung": "127.0.0.1:1"})
""")


def test_a_stop_that_hangs_ends_the_process_with_every_threads_stack(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", HUNG_SERVER, str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(tmp_path / "hung.json", process, timeout=30)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, (out, err)
    assert time.monotonic() - started < 15
    assert "ready" in out and "stopped" not in out
    assert "Timeout (0:00:00.500000)!" in err and "in stop" in err and "in serve_forever" in err, err
