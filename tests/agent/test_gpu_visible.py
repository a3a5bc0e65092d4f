"""The GPUs an agent reports and hands out follow its own CUDA_VISIBLE_DEVICES, as CUDA does.

nvidia-smi lists every GPU of a node whatever CUDA_VISIBLE_DEVICES says, while CUDA in the
agent's process numbers only the visible ones, from 0, in the order listed. A fake
``nvidia-smi`` (tests/test_gpu_placement.py; no GPU here) lists four GPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import resources
from agent.resources import GpuAssigner
from tests.test_gpu_placement import _fake_smi


@pytest.fixture()
def four_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_smi(tmp_path / "smi", [("Fake A", 16), ("Fake B", 24), ("Fake C", 40), ("Fake D", 80)])
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("visible", "indexes"), [
    (None, [0, 1, 2, 3]),
    ("2,0", [2, 0]),  # in the order listed: cuda:0 is GPU 2
    (" 3 , 1 ", [3, 1]),
    ("GPU-1a2b", [1]),  # a UUID prefix
    ("GPU-2a2b3c4d-0002,0", [2, 0]),
    ("1,7,2", [1]),  # CUDA stops at the first entry that names no GPU
    ("1,GPU-ffff,2", [1]),
    ("3,3", [3]),
    ("", []),
    ("-1", []),
])
def test_the_agent_lists_the_gpus_its_cuda_visible_devices_names(four_gpus, visible: str | None, indexes: list[int]) -> None:
    listed = resources.gpus(visible)
    assert [g.index for g in listed] == indexes
    assert [g.memory_bytes >> 30 for g in listed] == [[16, 24, 40, 80][i] for i in indexes]


def test_probe_reads_cuda_visible_devices_and_numbers_gpus_in_pci_order(four_gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    probed = resources.probe()
    assert [g.index for g in probed.gpus] == [2, 3] and [g.name for g in probed.gpus] == ["Fake C", "Fake D"]
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # nvidia-smi's numbering, before any engine starts CUDA


def test_a_replica_gets_cudas_number_for_its_gpu_in_the_agents_process(four_gpus) -> None:
    """GPUs 2 and 3 visible: in the agent's process they are cuda:0 and cuda:1; what is held
    (heartbeats, a stage's CUDA_VISIBLE_DEVICES) stays in nvidia-smi's numbering."""
    assigner = GpuAssigner(lambda: resources.gpus("2,3"))
    assert assigner.assign("a", 1, 45 << 30) == "cuda:1"  # only GPU 3 (80 GiB) has 45 GiB
    assert assigner.assign("b", 1, 10 << 30) == "cuda:0"  # GPU 2 (40 GiB) hosts fewer replicas
    assert assigner.held() == {"a": (3,), "b": (2,)}
    assert [r.index for r in assigner.rooms()] == [2, 3]
    reordered = GpuAssigner(lambda: resources.gpus("3,2"))
    assert reordered.assign("c", 1, 50 << 30) == "cuda:0"  # GPU 3 is listed first: cuda:0
    assert reordered.held() == {"c": (3,)}
