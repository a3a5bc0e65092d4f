"""DeviceModel: a CompiledModel whose stages run on one GPU.

It *is* a CompiledModel (same feature names, schemas, ``predict``, ``predict_arrow``,
``explain``, ``save``), built from one and sharing its weights, with one difference: the
stage pipeline (``_score``) runs on the device. Host input (numpy, Arrow, pandas) is read
exactly as on the CPU, then copied to the GPU once; a device array
(``__cuda_array_interface__``: numba, CuPy, torch) of shape (n, n_features) is scored
where it is, with no copy in. Outputs come back to the host, as the CPU model's do;
``predict_device`` keeps them on the device. ``explain`` runs on the CPU (TreeSHAP).

Each stage kind has its device twin (``_TWINS``); a model with a stage that has none cannot
move, and ``to_device`` says which.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.cuda import _runtime as rt
from scoring_core.cuda.dense import DeviceColumnMap, DeviceEncode, DeviceLinear, DeviceRowNorm, column_major
from scoring_core.cuda.mlp import TorchMLP
from scoring_core.cuda.trees import DeviceTrees
from scoring_core.mlp import MLP
from scoring_core.model import CompiledModel

_TWINS: dict[str, Any] = {
    "trees": DeviceTrees,
    "linear": DeviceLinear,
    "column_map": DeviceColumnMap,
    "encode": DeviceEncode,
    "row_norm": DeviceRowNorm,
}


class DeviceModel(CompiledModel):
    """``model`` on GPU ``device`` ("cuda" or "cuda:N"); see the module docstring."""

    def __init__(self, model: CompiledModel, device: str = "cuda:0") -> None:  # no super().__init__: model is validated
        index = rt.device_index(device)
        rt.check_device(index)
        missing = [s.kind for s in [*model.transforms, model.model] if s.kind not in _TWINS and s.kind != "mlp"]
        if missing:
            raise Unimplemented(f"stage kind(s) {sorted(set(missing))} have no CUDA twin; supported: "
                                f"{', '.join(sorted([*_TWINS, 'mlp']))}")
        self.__dict__.update(model.__dict__)  # the validated CompiledModel state, weights shared
        self.cpu = model
        self.device = f"cuda:{index}"
        self.index = index
        with self._context():
            self.device_stages = [
                TorchMLP(cast(MLP, stage), self.device) if stage.kind == "mlp" else _TWINS[stage.kind](stage)
                for stage in [*model.transforms, model.model]
            ]

    def __repr__(self) -> str:
        return f"<DeviceModel {self.device} of {self.cpu!r}>"

    def to(self, device: str) -> CompiledModel:
        """The CPU model for "cpu", this model again for its own device, else the CPU model
        moved to ``device``."""
        if device == "cpu":
            return self.cpu
        if rt.device_index(device) == self.index:
            return self
        return to_device(self.cpu, device)

    def _context(self) -> Any:
        return rt.cuda().gpus[self.index]

    def predict_device(self, X: Any) -> Any:
        """The (n, n_outputs) float64 device array of the stage pipeline for a device (or
        host) matrix ``X`` of shape (n, n_features)."""
        cu = rt.cuda()
        with self._context():
            X = rt.as_device_array(X) if rt.is_device_array(X) else cu.to_device(np.asarray(X))
            if len(X.shape) != 2 or X.shape[1] != self.n_features:
                raise InvalidArgument(f"input has shape {tuple(X.shape)}; the model expects (n, {self.n_features})")
            if np.dtype(X.dtype) not in (np.float32, np.float64):
                raise InvalidArgument(f"a device matrix must be float32 or float64, got {X.dtype}")
            X = column_major(X)
            for stage in self.device_stages:
                X = stage.predict(X)
            return X

    def _score(self, X: np.ndarray) -> np.ndarray:
        """CompiledModel's pipeline on the device, for a host matrix as ``predict`` reads it."""
        if X.shape[0] == 0:
            return np.empty((0, self.n_outputs), np.float64)
        out = self.predict_device(X)
        with self._context():
            return np.ascontiguousarray(out.copy_to_host())

    def predict(self, data: Any) -> np.ndarray:
        """CompiledModel.predict, also for a device matrix (scored where it is)."""
        if not rt.is_device_array(data):
            return super().predict(data)
        if data.shape[0] == 0:
            out = np.empty((0, self.n_outputs), np.float64)
        else:
            with self._context():
                out = np.ascontiguousarray(self.predict_device(data).copy_to_host())
        out = out if self.predict_ndim == 2 else out[:, -1]  # as CompiledModel.predict shapes it
        return out.astype(self.predict_dtype, copy=False)


def to_device(model: CompiledModel, device: str = "cuda:0") -> DeviceModel:
    """``model`` on GPU ``device`` ("cuda" is GPU 0, "cuda:N" GPU N). InvalidArgument for
    another device string, FailedPrecondition where no such GPU (or numba-cuda) is,
    Unimplemented for a stage kind without a device twin."""
    if isinstance(model, DeviceModel):
        model = model.cpu
    return DeviceModel(model, device)
