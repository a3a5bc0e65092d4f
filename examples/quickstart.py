"""Milepost in one minute: start it, train a model, push, deploy, score with tritonclient, stop.

Run from the repository root after installing (see README.md):
    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tritonclient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import scoring_core

MILEPOST = [sys.executable, "-m", "milepost.cli"]


def run(*args: str) -> str:
    print("$ milepost " + " ".join(args))
    done = subprocess.run([*MILEPOST, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"milepost {args[0]} failed:\n{done.stderr}")
    print(done.stdout.rstrip())
    return done.stdout


def wait_ready(state: Path, process: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            return json.loads(state.read_text())
        if process.poll() is not None:
            raise SystemExit(f"milepost up exited early:\n{process.stdout.read()}")
        time.sleep(0.1)
    raise SystemExit("milepost up did not become ready in time")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="milepost-quickstart-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        print("$ milepost up --port 0 --agent-port 0 --http-port 0   (free ports, so nothing clashes)")
        up = subprocess.Popen(
            [*MILEPOST, "up", "--data-dir", str(data_dir), "--port", "0", "--agent-port", "0", "--http-port", "0",
             "--metrics-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            ports = wait_ready(data_dir / "up.json", up)
            coordinator, agent = ports["coordinator"], ports["agent"]
            print(f"coordinator on {coordinator}, agent (Open Inference Protocol) on {agent}\n")
            # `up` made an admin token on its first start; the CLI commands below present it.
            os.environ["MILEPOST_TOKEN"] = (data_dir / "admin.token").read_text().strip()

            # Train on the fly and compile into a Milepost bundle (no pickle; versioned by content hash).
            X, y = load_breast_cancer(return_X_y=True)
            X = X.astype(np.float32)
            X_train, X_test, y_train, _ = train_test_split(X, y, random_state=0)
            model = LogisticRegression(max_iter=5000).fit(X_train, y_train)
            bundle = Path(tmp) / "cancer-bundle"
            scoring_core.compile(model).save(bundle)

            run("models", "push", str(bundle), "--name", "cancer", "--coordinator", coordinator)
            run("deploy", "cancer-api", "--model", "cancer", "--coordinator", coordinator)

            # Score through gRPC with a client people already have: Triton's.
            client = tritonclient.InferenceServerClient(url=agent)
            rows = X_test[:5]
            tensor = tritonclient.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            got = client.infer("cancer-api", [tensor]).as_numpy("probabilities")
            expected = model.predict_proba(rows)
            print("\nrow  milepost P(benign)  scikit-learn P(benign)")
            for i, (a, b) in enumerate(zip(got[:, 1], expected[:, 1])):
                print(f"{i:>3}  {a:>18.6f}  {b:>22.6f}")
            diff = float(np.abs(got - expected).max())
            print(f"max abs difference: {diff:.2e}")
            if diff > 1e-5:
                raise SystemExit("predictions disagree with scikit-learn")
        finally:
            up.send_signal(signal.SIGTERM)
            code = up.wait(timeout=30)
        print(f"\nmilepost up stopped cleanly (exit {code})" if code == 0 else f"\nmilepost up exited {code}")
        if code != 0:
            raise SystemExit(code)


if __name__ == "__main__":
    main()
