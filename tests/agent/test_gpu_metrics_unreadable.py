"""A node whose nvidia-smi lists GPUs but whose NVML cannot be read says so, once (agent.gpu_metrics)."""

from __future__ import annotations

import logging
import os
import sys

from agent.gpu_metrics import GpuCollector, _Nvml
from agent.resources import gpus
from milepost.core.exposition import exposition

# nvidia-smi on a node with one GPU, answering `--query-gpu=FIELD,... --format=csv,noheader,nounits`
FAKE_SMI = f"""#!{sys.executable}
import sys
gpu = {{"index": "0", "uuid": "GPU-4f1c2d3e", "name": "NVIDIA H100 80GB HBM3", "memory.total": "81559"}}
fields = next(a for a in sys.argv if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
print(", ".join(gpu[f] for f in fields))
"""


def test_gpus_listed_but_nvml_unreadable_logs_one_warning(tmp_path, monkeypatch, caplog) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert [g.name for g in gpus()] == ["NVIDIA H100 80GB HBM3"]  # what the agent reports it has
    nvml = _Nvml()
    with caplog.at_level(logging.DEBUG, logger="milepost.agent"):
        first, second = nvml.readings(), nvml.readings()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    if first:  # a real NVIDIA driver answers here: NVML is read, nothing to warn about
        assert second and not warnings
        return
    assert second == []
    (warning,) = warnings  # once, not at every scrape
    text = warning.getMessage()
    assert "nvidia-smi lists 1 GPU(s) but NVML cannot be read" in text
    assert "nvidia-ml-py is not installed" in text or "NVML did not start" in text


def test_no_gpus_listed_and_no_nvml_is_quiet(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all: a CPU node
    with caplog.at_level(logging.DEBUG, logger="milepost.agent"):
        exposition(GpuCollector())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
