"""MLServer 1.7 with its XGBoost runtime, the peer of benchmarks/serving_peers.py, in two settings.

- ``default``: only what serving one model on chosen ports needs (host, ports, the model);
  MLServer then runs inference in one worker process (parallel_workers=1) beside the front ends;
- ``best``: what users tune for throughput: inference in the server's own process
  (parallel_workers=0) and OMP_NUM_THREADS=1, so XGBoost's OpenMP threads do not fight the
  server's over the cores.
uvloop is pinned at 0.21: with 0.23 MLServer's workers crash at start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.peers import venvs

SETTINGS = ("default", "best")


def requirements(xgboost_version: str) -> list[str]:
    """MLServer and its runtime, with the XGBoost that trained the model (it reads the same JSON)."""
    return ["mlserver==1.7.1", "mlserver-xgboost==1.7.1", "uvloop==0.21.0", f"xgboost=={xgboost_version}"]


def version(env: Path) -> str:
    return next(venvs.site_packages(env).glob("mlserver-*.dist-info")).name.split("-")[1]


def repository(folder: Path, model_file: Path, model: str, setting: str, ports: dict[str, int]) -> None:
    """Write MLServer's settings.json and the model's folder under ``folder``; listen on 127.0.0.1 only."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, not {setting!r}")
    folder.mkdir(parents=True)
    server = {"host": "127.0.0.1", "http_port": ports["http"], "grpc_port": ports["grpc"],
              "metrics_port": ports["metrics"]}
    if setting == "best":
        server["parallel_workers"] = 0
    (folder / "settings.json").write_text(json.dumps(server))
    model_folder = folder / model
    model_folder.mkdir()
    (model_folder / "model.json").write_bytes(model_file.read_bytes())
    (model_folder / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "mlserver_xgboost.XGBoostModel", "parameters": {"uri": "./model.json"},
    }))


def command(env: Path, folder: Path, setting: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start MLServer on ``folder`` (run it with cwd=folder)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment["PATH"] = f"{env / 'bin'}:{environment.get('PATH', '')}"
    if setting == "best":
        environment["OMP_NUM_THREADS"] = "1"
    return [str(env / "bin" / "mlserver"), "start", str(folder)], environment
