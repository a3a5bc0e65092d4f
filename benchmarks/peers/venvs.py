"""Virtual environments of the peers a benchmark runs, apart from the project's own: made once with
pip from the registry this machine reaches, kept under .bench-venvs/NAME (gitignored), and made
anew only when the requirements asked for change (they are written into the folder).

Why apart: MLServer pins its own FastAPI, uvicorn, protobuf and tritonclient, and perf_analyzer's
wheel is an older tritonclient; none of them belongs in the project's environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HOME = Path(__file__).resolve().parents[2] / ".bench-venvs"


def ensure(name: str, requirements: list[str]) -> Path:
    """The folder of environment ``name`` with ``requirements`` installed."""
    env = HOME / name
    marker = env / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return env
    if env.exists():
        shutil.rmtree(env)
    print(f"installing {' '.join(requirements)} into {env} (once; later runs reuse it)", flush=True)
    # venv run from the project's environment bases the new one on the same interpreter.
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True)
    marker.write_text(wanted)
    return env


def site_packages(env: Path) -> Path:
    """The environment's site-packages folder (one Python version per environment)."""
    found = sorted(env.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages under {env}")
    return found[0]
