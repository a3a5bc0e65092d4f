"""The scoring core on CUDA GPUs: ``to_device(model, "cuda:N")`` (or ``model.to("cuda:N")``)
gives a model with the CompiledModel interface whose stages run on that GPU.

    model = scoring_core.load("bundles/churn")
    gpu = model.to("cuda:0")            # a DeviceModel
    gpu.predict(X)                      # numpy / Arrow / pandas, or a device array
    gpu.predict_arrow(batch)            # pa.RecordBatch -> pa.RecordBatch

Tree ensembles (``trees``), linear models (``dense``) and the feature transforms
(``dense``) are numba-cuda kernels; MLPs run through torch on the same GPU (``mlp`` says
why). Outputs equal the CPU core's within 1e-5 (each module says where the last bits can
differ). Kernels are compiled on first use; importing this package imports neither
``numba.cuda`` nor torch, so a CPU-only process is unchanged by it. Without a GPU the
CUDA simulator runs every kernel (``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is
first imported): that is how the tests check the kernels on machines without one.
"""

from __future__ import annotations

from scoring_core.cuda.device_model import DeviceModel, to_device

__all__ = ["DeviceModel", "to_device"]
