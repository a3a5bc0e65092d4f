"""numba.cuda, imported on first use, and the few things every CUDA stage needs from it.

Importing ``scoring_core.cuda`` must not import ``numba.cuda``: which implementation
``numba.cuda`` becomes (a real GPU, or the CUDA simulator under
``NUMBA_ENABLE_CUDASIM=1``) is decided once, when it is first imported, and a process that
scores on the CPU should never pay for it or be changed by it. So the kernels are built
by ``kernel()`` the first time a model is moved to a device, and cached by their
specialisation (closure constants such as the number of groups or tree lanes, which CUDA
needs at compile time for local and shared arrays).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from milepost.core.errors import FailedPrecondition, InvalidArgument

_DEVICE = re.compile(r"^cuda(?::(\d+))?$")
_kernels: dict[Hashable, Any] = {}
_lock = threading.Lock()

# Threads a block for the row kernels (transforms, linear): a multiple of the warp size,
# and small enough that the simulator (one Python thread per CUDA thread) stays quick.
ROW_BLOCK = 128


def cuda() -> Any:
    """The ``numba.cuda`` module (real or simulated, as the process chose); FailedPrecondition
    when numba-cuda is not installed."""
    try:
        from numba import cuda as numba_cuda
    except ImportError as err:  # numba-cuda missing, or its CUDA bindings
        raise FailedPrecondition(
            f"the CUDA backend needs numba-cuda (pip install 'milepost[gpu]'): {err}") from err
    return numba_cuda


def simulated() -> bool:
    """Whether numba.cuda is the CUDA simulator (NUMBA_ENABLE_CUDASIM=1 before its import)."""
    return str(cuda().jit.__module__).startswith("numba.cuda.simulator")


def device_index(device: str) -> int:
    """``"cuda"`` is GPU 0, ``"cuda:N"`` GPU N; anything else is InvalidArgument."""
    match = _DEVICE.match(device or "")
    if not match:
        raise InvalidArgument(f"device: expected 'cuda' or 'cuda:N', got {device!r}")
    return int(match.group(1) or 0)


def check_device(index: int) -> None:
    """FailedPrecondition unless numba.cuda sees GPU ``index`` (the simulator has one)."""
    cu = cuda()
    if not cu.is_available():
        raise FailedPrecondition(f"device: no CUDA GPU is usable here ({cu.cuda_error() or 'none found'})")
    count = len(cu.gpus)
    if index >= count:
        raise FailedPrecondition(f"device: cuda:{index} asked for, but this node has {count} GPU(s)")


def kernel(key: Hashable, build: Callable[[], Any]) -> Any:
    """The kernel ``build()`` makes for ``key``, built once per process."""
    with _lock:
        found = _kernels.get(key)
        if found is None:
            found = _kernels[key] = build()
        return found


def blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


def is_device_array(data: Any) -> bool:
    """A numba device array, or any object with ``__cuda_array_interface__`` (CuPy, torch)."""
    return bool(getattr(data, "__cuda_ndarray__", False)) or hasattr(data, "__cuda_array_interface__")


def as_device_array(data: Any) -> Any:
    """A numba view of a device array, without a copy. The simulator has no
    ``__cuda_array_interface__`` import: there only its own device arrays are taken."""
    if getattr(data, "__cuda_ndarray__", False):
        return data
    cu = cuda()
    if not hasattr(cu, "as_cuda_array"):
        raise InvalidArgument("the CUDA simulator takes its own device arrays only, not __cuda_array_interface__ objects")
    return cu.as_cuda_array(data)


def device_empty(shape: tuple[int, ...], dtype: Any, order: str = "C") -> Any:
    return cuda().device_array(shape, dtype=np.dtype(dtype), order=order)
