"""What this node has: cores, memory and GPUs, as the agent reports them."""

from __future__ import annotations

import os
import shutil
import subprocess

from milepost.core.settings import get_settings
from milepost.v1 import types_pb2


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def gpus() -> list[types_pb2.Gpu]:
    """NVIDIA GPUs as nvidia-smi lists them; none when it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=get_settings().gpu_probe_timeout_s, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            mib = int(parts[2]) if parts[2].isdigit() else 0
            found.append(types_pb2.Gpu(index=int(parts[0]), name=parts[1], memory_bytes=mib << 20))
    return found


def probe() -> types_pb2.Resources:
    return types_pb2.Resources(cpu_cores=cpu_cores(), memory_bytes=memory_bytes(), gpus=gpus())
