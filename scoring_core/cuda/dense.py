"""Linear models and the feature transforms on the GPU, one row a thread.

Each kernel is the CPU kernel's arithmetic, written for one row: ``scoring_core.linear``'s
eight float64 lanes (lane ``k`` sums features ``k, k + 8, ...``, combined
``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + intercept``), and ``column_map``'s
chain stored after every step in the input's dtype, so that a float32 batch rounds where
scikit-learn's in-place steps round. The transforms therefore give the CPU's values bit
for bit; a linear score may differ in the last ulp, because CUDA's compiler contracts a
multiply and an add into one fused multiply-add (one rounding instead of two), and the
links use CUDA's ``exp``. Rows are column-major on the device, so a warp's 32 rows read
each feature with one coalesced load.

``encode`` looks a category up with the CPU encoder's own function
(``scoring_core.transforms._category_index``, compiled as a device function), and reports
an unknown category as the CPU stage does, naming the same row and
column (the first block of ``scoring_core.transforms.BLOCK`` rows with one, its first such
column, that column's first such row).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument
from scoring_core import linear as cpu_linear
from scoring_core import transforms as cpu_transforms
from scoring_core.cuda import _runtime as rt
from scoring_core.linear import LinearModel
from scoring_core.row_norm import RowNorm
from scoring_core.transforms import ColumnMap, Encode

# ---------------------------------------------------------------------------------------
# linear


class DeviceLinear:
    """``LinearModel`` on a GPU: (n, f) device matrix in, (n, n_outputs) float64 out."""

    def __init__(self, stage: LinearModel) -> None:
        self.cu = cu = rt.cuda()
        self.n_features, self.n_outputs = stage.n_features, stage.n_outputs
        self.k = stage.coef.shape[0]
        self.link = cpu_linear.LINKS.index(stage.link)
        self._coef = cu.to_device(stage.coef)
        self._intercept = cu.to_device(stage.intercept)

    def predict(self, X: Any) -> Any:
        n = X.shape[0]
        out = rt.device_empty((n, self.n_outputs), np.float64)
        if n:
            kernel = rt.kernel(("linear", self.k), lambda: _kernels().linear_kernel(self.k))
            kernel[rt.blocks(n, rt.ROW_BLOCK), rt.ROW_BLOCK](X, self._coef, self._intercept, self.link, out)
        return out


# ---------------------------------------------------------------------------------------
# column_map


class DeviceColumnMap:
    def __init__(self, stage: ColumnMap) -> None:
        self.cu = cu = rt.cuda()
        self.n_features, self.n_outputs = stage.n_features, stage.n_outputs
        self._args = tuple(cu.to_device(np.ascontiguousarray(a)) for a in (
            stage.source, stage._plain, stage.indicator, stage.fill, stage.center, stage.divisor, stage.factor,
            stage.offset, stage.low, stage.high))

    def predict(self, X: Any) -> Any:
        X = _float(X)
        n = X.shape[0]
        out = rt.device_empty((n, self.n_outputs), X.dtype, order="F")
        if n:
            kernel = rt.kernel(("column_map",), _kernels().map_kernel)
            kernel[rt.blocks(n, rt.ROW_BLOCK), rt.ROW_BLOCK](X, out, *self._args)
        return out


# ---------------------------------------------------------------------------------------
# encode


class DeviceEncode:
    def __init__(self, stage: Encode) -> None:
        self.cu = cu = rt.cuda()
        self.names = stage.names
        self.n_features, self.n_outputs = stage.n_features, stage.n_outputs
        self._args = tuple(cu.to_device(np.ascontiguousarray(a)) for a in (
            stage.mode, stage.cat_start, stage.categories, stage.has_nan, stage.drop, stage.on_unknown,
            stage.unknown_value, stage.missing_value, stage._out_start))

    def predict(self, X: Any) -> Any:
        X = _float(X)
        n = X.shape[0]
        out = rt.device_empty((n, self.n_outputs), X.dtype, order="F")
        if not n:
            return out
        errors = rt.device_empty((n,), np.int64)
        kernel = rt.kernel(("encode",), _kernels().encode_kernel)
        kernel[rt.blocks(n, rt.ROW_BLOCK), rt.ROW_BLOCK](X, out, *self._args, errors)
        self._raise_first_unknown(errors.copy_to_host(), X)
        return out

    def _raise_first_unknown(self, errors: np.ndarray, X: Any) -> None:
        bad = np.flatnonzero(errors >= 0)
        if not bad.size:
            return
        block = bad[bad // cpu_transforms.BLOCK == bad[0] // cpu_transforms.BLOCK]
        column = int(errors[block].min())
        row = int(block[errors[block] == column][0])
        value = X[row:row + 1].copy_to_host()[0, column]
        raise InvalidArgument(
            f"column {self.names[column]!r} has unknown category {cpu_transforms._number(value)} (row {row}); "
            "the encoder was fitted with handle_unknown='error'"
        )


# ---------------------------------------------------------------------------------------
# row_norm


class DeviceRowNorm:
    def __init__(self, stage: RowNorm) -> None:
        self.cu = rt.cuda()
        self.n_features = self.n_outputs = stage.n
        self.l1 = stage.norm == "l1"

    def predict(self, X: Any) -> Any:
        X = _float(X)
        n = X.shape[0]
        out = rt.device_empty((n, self.n_outputs), X.dtype, order="F")
        if n:
            name = str(X.dtype)
            kernel = rt.kernel(("row_norm", name), lambda: _kernels().row_norm_kernel(name))
            kernel[rt.blocks(n, rt.ROW_BLOCK), rt.ROW_BLOCK](X, out, self.l1)
        return out


def column_major(X: Any) -> Any:
    """``X``, or a column-major copy of it on the device when it is not: the row kernels
    read one feature of 32 consecutive rows a warp step, one coalesced load in this order
    and 32 in row-major order (a network tensor arrives so), which costs more than the copy."""
    if X.shape[0] < 2 or X.shape[1] < 2 or X.strides[0] == X.dtype.itemsize:
        return X
    out = rt.device_empty(tuple(X.shape), X.dtype, order="F")
    kernel = rt.kernel(("column_major",), _kernels().column_major_kernel)
    kernel[rt.blocks(X.shape[0], rt.ROW_BLOCK), rt.ROW_BLOCK](X, out)
    return out


def _kernels() -> Any:
    from scoring_core.cuda import _dense_kernels  # imports numba.cuda: only once a model is on a device

    return _dense_kernels


def _float(X: Any) -> Any:
    """Transforms compute in their input's dtype, float32 or float64 (as on the CPU)."""
    if X.dtype not in (np.float32, np.float64):
        raise InvalidArgument(f"a device matrix must be float32 or float64, got {X.dtype}")
    return X
