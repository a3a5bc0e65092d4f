"""Compiled torch nn.Sequential MLPs reproduce the module's output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import scoring_core
from milepost.core.errors import Unimplemented

TOL = 1e-5
N_FEATURES = 8  # as the data fixture

torch = pytest.importorskip("torch")
nn = torch.nn


def _trained(module, X: np.ndarray, y: np.ndarray, steps: int = 30):
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    inputs, target = torch.from_numpy(X), torch.from_numpy(y.astype(np.float32)).reshape(len(y), -1)
    for _ in range(steps):
        optimiser.zero_grad()
        out = module(inputs)
        loss = ((out[:, : target.shape[1]] - target) ** 2).mean()
        loss.backward()
        optimiser.step()
    return module.eval()


def _torch_out(module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(X)).numpy()


TORCH_MODELS = {
    "relu": lambda: nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)),
    "tanh": lambda: nn.Sequential(nn.Linear(N_FEATURES, 16), nn.Tanh(), nn.Linear(16, 1)),
    "sigmoid": lambda: nn.Sequential(nn.Linear(N_FEATURES, 16), nn.Sigmoid(), nn.Linear(16, 2), nn.Sigmoid()),
    "leaky_relu": lambda: nn.Sequential(
        nn.Linear(N_FEATURES, 16), nn.LeakyReLU(0.1), nn.Dropout(0.2), nn.Linear(16, 3, bias=False)
    ),
    "softmax_head": lambda: nn.Sequential(
        nn.Linear(N_FEATURES, 16), nn.GELU(), nn.Sequential(nn.Linear(16, 8), nn.SiLU()), nn.Linear(8, 3),
        nn.Softmax(dim=-1),
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_sequential_matches_the_module(name, data, tmp_path, assert_agrees, round_trip):
    torch.manual_seed(0)
    X = data["X"]
    module = _trained(TORCH_MODELS[name](), X, data["y_reg"] / 10)
    expected = _torch_out(module, X)  # float32, as the module answers
    model = scoring_core.compile(module)
    assert model.task == "regression" and model.predict_ndim == 2
    assert model.metadata["source"] == "torch.nn.Sequential"
    width = expected.shape[1]
    field = pa.field("prediction", pa.float64()) if width == 1 else pa.field("output", pa.list_(pa.float64(), width))
    assert model.output_schema == pa.schema([field])
    assert_agrees(model, X, expected)
    loaded = round_trip(model, tmp_path, X)
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=0, atol=TOL)


def test_torch_float64_module_is_computed_in_float64(data):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, 1)).double().eval()
    model = scoring_core.compile(module)
    assert model.model.dtype == "float64"
    X = data["X"].astype(np.float64)
    with torch.no_grad():
        expected = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(model.predict(X), expected, rtol=0, atol=1e-12)
    assert model.predict(X).dtype == expected.dtype == np.float64


@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.ELU(), nn.Linear(4, 1)), r"module 1 \(ELU\)"),
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=-1), nn.Linear(4, 1)), "Softmax is supported only"),
        (lambda: nn.Sequential(nn.ReLU(), nn.Linear(4, 1)), "before the first Linear"),
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=0)), r"Softmax\(dim=0\)"),
        (lambda: nn.Sequential(nn.Linear(4, 4).half()), "float16"),
    ],
)
def test_unsupported_torch_modules_are_unimplemented(build, needle):
    with pytest.raises(Unimplemented, match=needle):
        scoring_core.compile(build())


def test_torch_subclass_and_bare_linear_are_refused():
    class Custom(nn.Sequential):
        pass

    for module in (Custom(nn.Linear(2, 1)), nn.Linear(2, 1)):
        with pytest.raises(Unimplemented, match="cannot compile"):
            scoring_core.compile(module)


def test_scoring_core_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, scoring_core; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]

