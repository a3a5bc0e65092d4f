"""Triton's load generator, perf_analyzer, run unmodified against a server; its report parsed.

Where the binary comes from: the ``perf-analyzer`` wheels (2.58 and later) are tagged
manylinux_2_38 and pip refuses them on glibc 2.36 (Debian 12, this machine), so the binary is
taken from the last tritonclient wheels that still shipped it (2.41.0 here, bin/perf_analyzer).
It links libb64.so.0d (Debian's libb64-0d, installed with apt-get when run as root) and
libcudart.so.12, which it loads even with no GPU (from the nvidia-cuda-runtime-cu12 wheel, found
through LD_LIBRARY_PATH).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.peers import venvs

REQUIREMENTS = ["tritonclient==2.41.0", "nvidia-cuda-runtime-cu12==12.9.79"]
APT = "apt-get install -y libb64-0d"


def install() -> tuple[Path, dict[str, str]]:
    """The binary and the environment it runs in; installs what is missing."""
    env = venvs.ensure("perf_analyzer", REQUIREMENTS)
    binary = env / "bin" / "perf_analyzer"
    cudart = venvs.site_packages(env) / "nvidia" / "cuda_runtime" / "lib"
    environment = dict(os.environ)
    environment["LD_LIBRARY_PATH"] = ":".join(p for p in (str(cudart), os.environ.get("LD_LIBRARY_PATH")) if p)
    missing = _missing_libraries(binary, environment)
    if "libb64.so.0d" in missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit(f"perf_analyzer needs Debian's libb64-0d: run `sudo {APT}`")
        print(f"perf_analyzer needs libb64.so.0d: {APT}", flush=True)
        if subprocess.run(APT.split(), stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=True)
            subprocess.run(APT.split(), stdout=subprocess.DEVNULL, check=True)
        missing = _missing_libraries(binary, environment)
    if missing:
        raise SystemExit(f"perf_analyzer cannot load {', '.join(missing)} (LD_LIBRARY_PATH={environment['LD_LIBRARY_PATH']})")
    return binary, environment


def _missing_libraries(binary: Path, environment: dict[str, str]) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=environment).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def run(binary: Path, environment: dict[str, str], model: str, protocol: str, address: str, *, shape: str,
        concurrency: int, interval_ms: int, timeout_s: float = 180) -> dict:
    """One perf_analyzer run at one concurrency; its figures, or why it failed (rc and the end of its output)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        argv = [str(binary), "-m", model, "-i", protocol, "-u", address, "--shape", shape,
                "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", str(interval_ms),
                # Three windows within 25% of each other count as stable (perf_analyzer's default, 10%,
                # is rarely met on a shared 2-core machine, where it then reports no figure at all).
                "--max-trials", "8", "--stability-percentage", "25", "-f", str(report)]
        result: dict = {"command": " ".join(["perf_analyzer", *argv[1:-2]]), "protocol": protocol, "concurrency": concurrency}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            return {**result, "ok": False, "error": f"no result within {timeout_s:g} s", "output": _tail(err.stdout)}
        if done.returncode != 0 or not report.exists():
            return {**result, "ok": False, "rc": done.returncode, "output": _tail(done.stdout + done.stderr)}
        with report.open() as f:
            row = next(csv.DictReader(f))
    us = {key: float(row[key]) for key in row if key.endswith("latency")}  # 2.41's CSV has no "Avg latency"
    return {**result, "ok": True, "requests_per_s": float(row["Inferences/Second"]),
            "p50_ms": us["p50 latency"] / 1e3, "p99_ms": us["p99 latency"] / 1e3, "csv": row}


def _tail(text: str | bytes | None, lines: int = 12) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])
