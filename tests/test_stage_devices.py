"""A pipeline stage's process sees only the GPUs its stage holds, as Ray and Kubernetes do.

A real coordinator and real agents on loopback port 0: "duo" with two fake GPUs (24 and
80 GiB; the fake ``nvidia-smi`` of tests/test_gpu_placement.py, probed at start-up) and
"cpu" with none. The stage functions below run in the stages' child processes and
report what they saw there: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and the device the
agent told them (``inputs["device"]`` for a custom stage).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.stage_process import visible_devices
from milepost.core.errors import FailedPrecondition
from milepost.core.settings import reset_settings
from milepost.pipeline_spec import spec_from_dict
from tests.chaos.nodes import Agents, client, coordinator, wait_for
from tests.test_gpu_placement import _fake_smi

GiB = 2**30


def seen(inputs: dict[str, Any], **params: Any) -> dict[str, Any]:
    """A custom stage: what its process was given."""
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), "device": inputs["device"],
            "order": os.environ.get("CUDA_DEVICE_ORDER", "<unset>")}


def train_and_record(table: Any, record: str = "", **params: Any) -> Any:
    """A training stage: writes what its process sees to ``record``, returns a fitted model."""
    from sklearn.linear_model import LogisticRegression

    Path(record).write_text(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")}))
    X = np.column_stack([table.column("x").to_numpy()])
    return LogisticRegression().fit(X, table.column("y").to_numpy())


@pytest.fixture()
def duo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")  # the python engine runs the functions above
    monkeypatch.setenv("MILEPOST_STAGE_ENTRIES", "tests.test_stage_devices:train_and_record")
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("MILEPOST_DATA_ROOTS", str(root))
    reset_settings()
    coord = coordinator(tmp_path / "coordinator")
    agents = Agents(coord.address, tmp_path, lambda agent_id: coord.tokens.create(agent_id, "agent")[1])
    c = client(coord)
    try:
        for agent_id, gpus in (("duo", [("Fake A10", 24), ("Fake H100", 80)]), ("cpu", [])):
            fake = _fake_smi(tmp_path / f"smi-{agent_id}", gpus)
            with monkeypatch.context() as m:
                m.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
                agents.start(agent_id)
        wait_for(lambda: len([a for a in c.status().agents if a.state == "ALIVE"]) == 2, 10, "two agents alive")
        yield agents, c, root
    finally:
        c.close()
        agents.stop_all()
        coord.stop()
        reset_settings()


def _custom(name: str, resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "custom", "engine": "python", "resources": resources,
            "params": {"entry": "tests.test_stage_devices:seen"}, **extra}


def _finished(c: Any, spec: dict[str, Any], root: Path) -> dict[str, Any]:
    run = c.submit_pipeline(spec_from_dict(spec, base=root))
    wait_for(lambda: c.run(run.run_id).state in ("SUCCEEDED", "FAILED"), 120, "the run finished")
    return {s.name: s for s in c.run(run.run_id).stages}


def test_a_stage_sees_only_the_gpus_it_holds_and_a_cpu_stage_sees_none(duo) -> None:
    agents, c, root = duo
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": np.arange(40.0), "y": (np.arange(40) % 2).astype(np.int64)}), root / "train.parquet")
    stages = _finished(c, {"name": "devices", "stages": [
        _custom("pair", {"gpus": 2}),
        _custom("big", {"gpus": 1, "gpu_memory_bytes": 40 * GiB}, depends_on=["pair"]),  # only GPU 1 has 40 GiB
        _custom("plain", {}, depends_on=["big"]),
        {"name": "train", "kind": "training", "engine": "native", "depends_on": ["plain"],
         "resources": {"gpus": 1, "gpu_memory_bytes": 40 * GiB},
         "params": {"entry": "tests.test_stage_devices:train_and_record", "data": str(root / "train.parquet"),
                    "model_name": "recorded", "params": {"record": str(root / "train.json")}}},
    ]}, root)
    assert {n: s.state for n, s in stages.items()} == dict.fromkeys(("pair", "big", "plain", "train"), "SUCCEEDED"), \
        {n: s.message for n, s in stages.items()}
    # Both GPUs, the agent's first choice (the most free memory: GPU 1) first, so that it is cuda:0 there.
    assert (stages["pair"].agent_id, dict(stages["pair"].outputs)) == (
        "duo", {"visible": "1,0", "device": "cuda:0", "order": "PCI_BUS_ID"})
    # The agent's GPU 1 is cuda:0 inside the stage's process, the only GPU it sees.
    assert (stages["big"].agent_id, dict(stages["big"].outputs)) == (
        "duo", {"visible": "1", "device": "cuda:0", "order": "PCI_BUS_ID"})
    # A stage asking for no GPU sees none, wherever it runs (a GPU agent included): no GPU 0 by accident.
    assert (stages["plain"].outputs["visible"], stages["plain"].outputs["device"]) == ("", "cpu")
    assert (stages["train"].agent_id, json.loads((root / "train.json").read_text())) == ("duo", {"visible": "1"})
    assert agents.running["duo"].gpus.held() == {}


def test_a_stage_is_refused_a_gpu_the_agents_own_cuda_visible_devices_hides(duo, monkeypatch) -> None:
    agents, c, root = duo
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the operator gave this agent GPU 0 only
    stages = _finished(c, {"name": "hidden", "stages": [_custom("big", {"gpus": 1, "gpu_memory_bytes": 40 * GiB})]},
                       root)
    assert stages["big"].state == "FAILED"
    assert "GPU(s) [1] are not in this agent's CUDA_VISIBLE_DEVICES ('0')" in stages["big"].message, stages["big"].message
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # now GPU 1 only: the same stage runs, seeing it
    stages = _finished(c, {"name": "shown", "stages": [_custom("big", {"gpus": 1, "gpu_memory_bytes": 40 * GiB})]},
                       root)
    assert dict(stages["big"].outputs).get("visible") == "1", (stages["big"].state, stages["big"].message)
    assert agents.running["duo"].gpus.held() == {}


def test_custom_stage_may_not_name_its_own_device(duo) -> None:
    _, c, root = duo
    stage = _custom("mine", {})
    stage["params"]["inputs"] = {"device": "cuda:3"}
    stages = _finished(c, {"name": "own", "stages": [stage]}, root)
    assert stages["mine"].state == "FAILED"
    assert "inputs.device is the agent's to set" in stages["mine"].message, stages["mine"].message


@pytest.mark.parametrize("gpus, inherited, expected", [
    ((), None, ""), ((), "0,1", ""), ((2,), None, "2"), ((1, 3), None, "1,3"), ((3,), "2, 3", "3"), ((3,), "03", "3"),
])
def test_visible_devices(gpus, inherited, expected) -> None:
    assert visible_devices(gpus, inherited) == expected


@pytest.mark.parametrize("gpus, inherited, message", [
    ((0,), "", r"GPU\(s\) \[0\] are not in this agent's CUDA_VISIBLE_DEVICES \(''\)"),
    ((0,), "GPU-5f1c", "names GPUs by UUID"),
])
def test_visible_devices_refuses_what_the_agent_was_not_given(gpus, inherited, message) -> None:
    with pytest.raises(FailedPrecondition, match=message):
        visible_devices(gpus, inherited)
