"""MLPs on the GPU through torch: cuBLAS for the products, torch's element-wise kernels
for the activations.

Why torch and not a numba kernel: an MLP is dense matrix products, where a hand-written
numba GEMM stays far from cuBLAS (tensor-core tiling, split-K, autotuned shapes), and
torch is the well-kept way to reach cuBLAS from Python that this project already ships
(the torch engine). CuPy would do as well but would be one more CUDA stack to install.
Device arrays pass between numba and torch without copies, through
``__cuda_array_interface__``.

Precision follows the CPU stage: float32 weights compute in float32 (TF32 stays off, torch's
default for matmul), float64 in float64; outputs are float64. cuBLAS sums a product in
another order than OpenBLAS, so float32 outputs agree to float32 rounding (well within
1e-5), not bit for bit. The stage also runs on torch's CPU device, which is how the tests
check the translation where no GPU is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import FailedPrecondition
from scoring_core import mlp as cpu_mlp
from scoring_core.mlp import MLP


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise FailedPrecondition(f"an MLP on the GPU runs through torch, which is not installed: {err}") from err
    return torch


class TorchMLP:
    """An ``MLP`` stage on a torch device ("cuda:N", or "cpu" for the tests): a (n, f) matrix
    in (a numba device array on CUDA, numpy on the CPU), (n, n_outputs) float64 out, the
    same kind of array."""

    def __init__(self, stage: MLP, device: str) -> None:
        torch = self.torch = _torch()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FailedPrecondition(
                f"device: an MLP on {device} runs through torch, and this torch ({torch.__version__}) has no CUDA GPU")
        self.device = torch.device(device)
        self.n_features, self.n_outputs = stage.n_features, stage.n_outputs
        self.dtype = getattr(torch, stage.dtype)
        self.binary = stage.head == "binary"
        self.layers = [
            (torch.tensor(w, device=self.device), torch.tensor(b, device=self.device), acts)
            for w, b, acts in zip(stage.weights, stage.biases, stage.activations)
        ]

    def _activate(self, h: Any, name: str, param: float) -> Any:
        F = self.torch.nn.functional
        if name == "identity":
            return h
        if name == "relu":
            return F.relu(h)
        if name == "leaky_relu":
            return F.leaky_relu(h, param)
        if name == "logistic":
            return self.torch.sigmoid(h)
        if name == "tanh":
            return self.torch.tanh(h)
        if name == "gelu":
            return F.gelu(h)
        if name == "gelu_tanh":
            return F.gelu(h, approximate="tanh")
        if name == "silu":
            return F.silu(h)
        assert name == "softmax", name  # the CPU stage validated the names (mlp.ACTIVATIONS)
        return self.torch.softmax(h, dim=1)

    def predict(self, X: Any) -> Any:
        torch = self.torch
        on_cuda = self.device.type == "cuda"
        with torch.inference_mode():
            h = torch.as_tensor(X, device=self.device).to(self.dtype)
            for w, b, acts in self.layers:
                h = torch.matmul(h, w) + b  # product, then bias, as the CPU stage
                for name, param in acts:
                    h = self._activate(h, name, param)
            h = h.to(torch.float64)
            if self.binary:
                h = torch.cat([1.0 - h, h], dim=1)
            h = h.contiguous()
        if on_cuda:
            from scoring_core.cuda import _runtime as rt

            return rt.as_device_array(h)
        return np.asarray(h.numpy())


assert set(cpu_mlp.ACTIVATIONS) == {"identity", "relu", "leaky_relu", "logistic", "tanh", "gelu", "gelu_tanh",
                                    "silu", "softmax"}, "a new MLP activation needs its torch twin here"
