"""Batch scoring on the device a stage (or `milepost score-dataset`) asks for.

A real coordinator and real agents on loopback port 0 (the cluster of
tests/test_gpu_placement.py: "small" and "big" with one fake GPU each, "cpu" with none),
a real scikit-learn model, real pipeline runs. A stage's ``resources.device`` is
resolved by the deployments' rule (Requirements.on_device, its batch being
``batch_rows``); the agent holds the GPU while the stage runs and scores on it with
the CUDA scoring core. The stage runs in a child process: ``NUMBA_ENABLE_CUDASIM=1``
in its environment puts numba's CUDA simulator under that core there (without it a
machine with no GPU could not load the model on ``cuda:0`` at all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import scoring_core
from milepost.core.errors import InvalidArgument
from milepost.core.settings import reset_settings
from milepost.pipeline_spec import spec_from_dict
from tests.chaos.nodes import wait_for
from tests.test_gpu_placement import cluster  # noqa: F401 - the fixture

GiB = 2**30


@pytest.fixture()
def data(tmp_path: Path, logistic_model, monkeypatch: pytest.MonkeyPatch):
    """A Parquet file of held-out rows in a data root the agents' stages may use, and the simulator for their children."""
    estimator, bundle_dir, _, rows = logistic_model
    root = tmp_path / "data"
    root.mkdir()
    names = scoring_core.load(bundle_dir).feature_names
    pq.write_table(pa.table({n: rows[:, j] for j, n in enumerate(names)}), root / "rows.parquet")
    monkeypatch.setenv("MILEPOST_DATA_ROOTS", str(root))
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    reset_settings()  # an earlier CLI call in this process may have loaded settings without the root
    yield root, estimator.predict_proba(rows)
    reset_settings()


def _scored(path: Path) -> np.ndarray:
    return np.stack(pq.read_table(path).column("probabilities").to_numpy(zero_copy_only=False))


def _stage(name: str, root: Path, resources: dict, **params) -> dict:
    return {"name": name, "kind": "batch_scoring", "engine": "native", "resources": resources,
            "params": {"model": "lr", "source": str(root / "rows.parquet"), "sink": str(root / f"{name}.parquet"),
                       **params}}


def test_a_stage_that_asks_for_a_gpu_scores_on_the_cuda_core_and_auto_follows_its_batch_rows(cluster, data) -> None:  # noqa: F811
    _, agents, c = cluster
    root, expected = data
    spec = spec_from_dict({"name": "devices", "stages": [
        _stage("large", root, {"device": "auto", "gpu_memory_bytes": 2 * GiB}, batch_rows=8192),
        _stage("small", root, {"device": "auto"}, batch_rows=64),
        _stage("named", root, {"device": "gpu"}, options={"device": "cuda:0"}),
    ]}, base=root)
    run = c.submit_pipeline(spec)
    wait_for(lambda: c.run(run.run_id).state in ("SUCCEEDED", "FAILED"), 120, "the run finished")
    stages = {s.name: s for s in c.run(run.run_id).stages}
    # 8192 rows a call reach the crossover (4096): a GPU agent, the GPU it assigned, CUDA core output.
    assert (stages["large"].state, stages["large"].outputs["device"]) == ("SUCCEEDED", "cuda:0"), stages["large"]
    assert stages["large"].agent_id in ("small", "big")
    np.testing.assert_allclose(_scored(root / "large.parquet"), expected, atol=1e-5)
    # 64 rows a call stay on CPU, on the agent without GPUs (GPU agents are kept for GPU work).
    assert (stages["small"].state, stages["small"].outputs["device"], stages["small"].agent_id) == (
        "SUCCEEDED", "cpu", "cpu"), stages["small"]
    np.testing.assert_allclose(_scored(root / "small.parquet"), expected, atol=1e-5)
    # The agent chooses the GPU: a stage naming one in its options as well is refused, saying which to drop.
    assert stages["named"].state == "FAILED"
    assert "params.options.device 'cuda:0' and its resources (gpus or device) both choose a device; drop " \
           "options.device" in stages["named"].message, stages["named"].message
    # Every GPU a stage held is free again once it ended.
    assert {a: agents.running[a].gpus.held() for a in ("small", "big")} == {"small": {}, "big": {}}


def test_a_stage_with_an_unknown_or_contradictory_device_is_refused_at_submit(cluster, data) -> None:  # noqa: F811
    _, _, c = cluster
    root, _ = data
    with pytest.raises(InvalidArgument, match="stage 'x': resources.device 'tpu' is unknown"):
        c.submit_pipeline(spec_from_dict({"name": "bad", "stages": [_stage("x", root, {"device": "tpu"})]}, base=root))
    with pytest.raises(InvalidArgument, match="stage 'y': resources.device is cpu but resources.gpus=1"):
        c.submit_pipeline(spec_from_dict({"name": "bad", "stages": [_stage("y", root, {"device": "cpu", "gpus": 1})]},
                                         base=root))


def test_score_dataset_takes_the_device_as_deploy_does(cluster, data, capsys) -> None:  # noqa: F811
    """`milepost score-dataset` scores in this process, where numba.cuda is the simulator already."""
    from milepost.cli import main

    coord, _, _ = cluster
    root, expected = data
    token = coord.admin_token_file.read_text().strip()
    common = ["--coordinator", coord.address, "--token", token, "--input", str(root / "rows.parquet")]
    assert main(["score-dataset", "lr", *common, "--output", str(root / "gpu.parquet"), "--device", "gpu"]) == 0
    assert "with lr on native (cuda:0)" in capsys.readouterr().out
    np.testing.assert_allclose(_scored(root / "gpu.parquet"), expected, atol=1e-5)
    assert main(["score-dataset", "lr", *common, "--output", str(root / "auto.parquet"), "--device", "auto",
                 "--batch-rows", "64"]) == 0
    assert "with lr on native (cpu)" in capsys.readouterr().out
    assert main(["score-dataset", "lr", *common, "--output", str(root / "bad.parquet"), "--device", "tpu"]) == 1
    assert "--device 'tpu' is unknown; use cpu, gpu, auto, cuda or cuda:N" in capsys.readouterr().err
