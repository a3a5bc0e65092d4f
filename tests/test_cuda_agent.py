"""GPU placement inside an agent: each GPU replica gets the GPU the agent assigned
("cuda:N"), and the native engine runs it on the scoring core's CUDA backend.

This machine has no GPU, so the node's GPU list is the one thing made up here (an agent
probes it with nvidia-smi); the kernels run on numba's CUDA simulator, which has one GPU.
Everything else is real: a bundle in a model cache, the deployment table, the native
engine, the control servicer's Load and Unload.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from agent.control import AgentControlServicer
from agent.deployments import DeploymentTable
from agent.model_cache import ModelCache
from agent.resources import GpuAssigner
from milepost.core.errors import FailedPrecondition
from milepost.v1 import agent_pb2
from tests.test_cuda_core import cuda  # noqa: F401 - numba.cuda as the simulator, for this module too

xgb = pytest.importorskip("xgboost")


def test_replicas_spread_over_the_gpus_and_keep_theirs():
    gpus = GpuAssigner(lambda: [0, 1])
    assert [gpus.assign(d, 1) for d in ("a", "b", "c")] == ["cuda:0", "cuda:1", "cuda:0"]
    assert gpus.assign("b", 1) == "cuda:1"  # loaded again: the same GPU
    gpus.release("a")
    gpus.release("c")
    assert gpus.assign("d", 1) == "cuda:0"  # GPU 0 hosts nothing now
    assert gpus.assign("e", 2) == "cuda:0"  # both, the less loaded first (tie: lower index)
    assert gpus.held() == {"b": (1,), "d": (0,), "e": (0, 1)}
    with pytest.raises(FailedPrecondition, match="asks for 3 GPU"):
        gpus.assign("f", 3)
    assert "f" not in gpus.held()


@pytest.fixture()
def bundle(tmp_path: Path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(X, X[:, 0] > X[:, 1])
    model = scoring_core.compile(clf)
    version = model.save(tmp_path / "bundle")
    return model, version, scoring_core.bundle.pack(tmp_path / "bundle"), X[:16]


def _servicer(tmp_path: Path, packed: bytes, gpus: GpuAssigner) -> AgentControlServicer:
    table = DeploymentTable(ModelCache(tmp_path / "cache", lambda model, version: [packed]))
    # Load and Unload use only the table and the GPUs: the routing and stage parts are not needed here.
    return AgentControlServicer(table, info=lambda: None, router=None, metrics=None, stages=None,  # type: ignore[arg-type]
                                gpus=gpus)


def _load(servicer, deployment_id, version, gpus):
    request = agent_pb2.LoadRequest(deployment_id=deployment_id, endpoint="e", model="m", version=version,
                                    flavor="scoring_core", gpus=gpus)
    servicer.Load(request, None)
    return servicer.table.get(deployment_id)


def test_a_gpu_deployment_runs_the_native_core_on_its_assigned_gpu(tmp_path, bundle):
    model, version, packed, X = bundle
    servicer = _servicer(tmp_path, packed, GpuAssigner(lambda: [0]))
    hosted = _load(servicer, "gpu-1", version, gpus=1)
    assert hosted.engine == "native" and hosted.spec.device == "cuda:0"
    batch = pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(4)], names=model.feature_names)
    got = hosted.model.predict(batch).column(0).to_numpy(zero_copy_only=False)
    want = model.predict_arrow(batch).column(0).to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-5)
    cpu = _load(servicer, "cpu-1", version, gpus=0)
    assert cpu.spec.device == "cpu"
    servicer.Unload(agent_pb2.UnloadRequest(deployment_id="gpu-1"), None)
    assert servicer.gpus.held() == {}


def test_the_engine_gets_the_assigned_gpu_and_a_failed_load_gives_it_back(tmp_path, bundle):
    """Two GPUs listed, the simulator has one: the second replica is handed "cuda:1",
    which the backend refuses, and the agent no longer counts it on GPU 1."""
    _, version, packed, _ = bundle
    servicer = _servicer(tmp_path, packed, GpuAssigner(lambda: [0, 1]))
    assert _load(servicer, "r1", version, gpus=1).spec.device == "cuda:0"
    with pytest.raises(FailedPrecondition, match="cuda:1"):
        _load(servicer, "r2", version, gpus=1)
    assert servicer.gpus.held() == {"r1": (0,)}
