"""Multi-layer perceptrons: the IR (dense layers, each followed by element-wise activations)
and the code that scores it.

Rows go through the network a block at a time (``BLOCK`` rows): every layer's output for
the block stays in cache, where scoring a whole batch layer by layer, as scikit-learn does,
streams (n, width) intermediates through memory. Per block and layer, the product is one
BLAS GEMM (numpy's ``matmul`` into a reused buffer), then one numba pass adds the bias
(fused with relu or leaky_relu); tanh and logistic use numpy's vectorised ufuncs in place
(numba's scalar tanh was five times slower than the GEMM it follows).

Why BLAS and not a numba loop: measured on this machine (100-256-256-1, float32, one
thread), a register-tiled numba GEMM reached ~70 GFLOP/s, LLVM keeping to 256-bit vectors,
while OpenBLAS's AVX-512 kernel reached ~150 on the same blocks: about 0.33M against 0.65M
rows/s per thread. BLAS calls cannot run inside numba's ``prange``, so blocks are spread
over a small pool of Python threads (``threads.run_spans``): the GEMMs release the GIL.
Each GEMM is small (BLOCK rows) and meant to run on one thread: a process that scores
should pin BLAS to one thread (``threads.pin_blas_to_one_thread()``), else each block's
GEMM fans out to BLAS threads that contend with these (PERF_NOTES technique 8): measured
at 2 threads, 1.4M rows/s pinned against 0.78M with OpenBLAS's default two threads.

Precision follows the source: a network whose weights are float64 (scikit-learn fitted on
float64 data) is computed in float64, as scikit-learn computes it; float32 weights (torch,
or scikit-learn fitted on float32) in float32 with float32 accumulation, as those libraries
do. Outputs are always float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numba import njit

from milepost.core.errors import InvalidArgument
from scoring_core import threads
from scoring_core.kinds import register_kind
from scoring_core.links import sigmoid, sigmoid_in_place, softmax

# Rows per block: a 256-row block of 256 float32 units is 256 KiB, two of them (a layer's
# input and output) sit in L2.
BLOCK = 256

ACTIVATIONS = (
    "identity",
    "relu",
    "leaky_relu",  # parameter: the negative slope
    "logistic",
    "tanh",
    "gelu",  # exact, with erf
    "gelu_tanh",  # the tanh approximation
    "silu",
    "softmax",  # over a row; only as the network's last operation
)
_CODE = {name: code for code, name in enumerate(ACTIVATIONS)}
IDENTITY, RELU, LEAKY_RELU, LOGISTIC, TANH, GELU, GELU_TANH, SILU, SOFTMAX = range(len(ACTIVATIONS))
_FUSED = (IDENTITY, RELU, LEAKY_RELU)
HEADS = ("none", "binary")  # binary: one output p becomes [1 - p, p], as predict_proba
DTYPES = ("float32", "float64")
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@njit(nogil=True, cache=True)
def _load_block(X, r0, m, h, by_rows):
    """Copy rows ``r0 .. r0+m`` of X (either order, float32/64) into the C-ordered block
    ``h`` in its dtype, walking X along its contiguous axis."""
    f = X.shape[1]
    if by_rows:
        for r in range(m):
            for k in range(f):
                h[r, k] = X[r0 + r, k]
    else:
        for k in range(f):
            for r in range(m):
                h[r, k] = X[r0 + r, k]


@njit(nogil=True, cache=True, inline="always")
def _apply(v, code, alpha):
    """One element-wise activation (all but softmax) of one value. ``alpha`` is typed as
    the block (float32 or float64); NaN passes through, as in numpy and torch."""
    if code == RELU:
        return alpha - alpha if v < 0 else v
    if code == LEAKY_RELU:
        return v if v >= 0 else v * alpha
    if code == LOGISTIC:
        return sigmoid(v)
    if code == TANH:
        return np.tanh(v)
    if code == GELU:
        return v * (0.5 * (1.0 + math.erf(v * _SQRT_HALF)))
    if code == GELU_TANH:
        return 0.5 * v * (1 + np.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
    if code == SILU:
        return v / (1 + np.exp(-v))
    return v


@njit(nogil=True, cache=True)
def _bias_activate(h, m, bias, code, alpha):
    """``h[:m] = act(h[:m] + bias)``; one loop per activation so each vectorises."""
    width = h.shape[1]
    zero = alpha - alpha
    if code == IDENTITY:
        for r in range(m):
            for j in range(width):
                h[r, j] += bias[j]
    elif code == RELU:
        for r in range(m):
            for j in range(width):
                v = h[r, j] + bias[j]
                h[r, j] = zero if v < zero else v
    else:
        for r in range(m):
            for j in range(width):
                h[r, j] = _apply(h[r, j] + bias[j], code, alpha)


@njit(nogil=True, cache=True)
def _activate(h, m, code, alpha):
    """A further activation of a layer (after the first, already fused with the bias)."""
    width = h.shape[1]
    if code == SOFTMAX:
        for r in range(m):
            softmax(h[r], h[r], alpha - alpha)  # in the block's dtype, as scikit-learn and torch
    else:
        for r in range(m):
            for j in range(width):
                h[r, j] = _apply(h[r, j], code, alpha)


@njit(nogil=True, cache=True)
def _write_output(h, m, binary, out, r0):
    if binary:
        for r in range(m):
            p = np.float64(h[r, 0])
            out[r0 + r, 0] = 1.0 - p
            out[r0 + r, 1] = p
    else:
        for r in range(m):
            for j in range(h.shape[1]):
                out[r0 + r, j] = h[r, j]


def _activate_block(h: np.ndarray, m: int, code: int, alpha: Any) -> None:
    """One activation over the first m rows of a block, in place. tanh and logistic use
    numpy's vectorised ufuncs (tanh is numpy's own, as scikit-learn's); the rest numba."""
    v = h[:m]
    if code == TANH:
        np.tanh(v, out=v)
    elif code == LOGISTIC:
        sigmoid_in_place(v)
    else:
        _activate(h, m, code, alpha)


def _activation_list(entries: Any, where: str) -> tuple[tuple[str, float], ...]:
    """Validate one layer's activations: (name, parameter) pairs in order."""
    if not isinstance(entries, (list, tuple)):
        raise InvalidArgument(f"mlp: {where} activations must be a list")
    found = []
    for entry in entries:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise InvalidArgument(f"mlp: {where} activation {entry!r} is not a [name, parameter] pair")
        name, param = entry
        if name not in _CODE:
            raise InvalidArgument(f"mlp: {where} activation {name!r} is unknown; known: {', '.join(ACTIVATIONS)}")
        if isinstance(param, bool) or not isinstance(param, (int, float)) or not math.isfinite(param):
            raise InvalidArgument(f"mlp: {where} activation {name!r} has parameter {param!r}, not a finite number")
        found.append((name, float(param)))
    return tuple(found)


@register_kind
@dataclass(frozen=True, eq=False)
class MLP:
    """A stack of dense layers: ``h = act_k(...act_1(h @ weights[i] + biases[i]))``.

    ``weights[i]`` is (n_in, n_out), as scikit-learn's ``coefs_`` (torch's Linear weight
    transposed); ``activations[i]`` lists the layer's element-wise activations in order,
    each a (name, parameter) pair, the parameter used by leaky_relu only. ``softmax`` may
    only end the network. ``head="binary"`` turns a single output p into [1 - p, p].
    ``dtype`` is the precision weights are kept and computed in.
    """

    kind: ClassVar[str] = "mlp"
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activations: tuple[tuple[tuple[str, float], ...], ...]
    head: str = "none"
    dtype: str = "float64"
    # Derived in __post_init__: per layer, the activation fused with the bias add, then the
    # rest, each (code, parameter as the block's scalar type).
    _plan: tuple[tuple[tuple[int, Any], tuple[tuple[int, Any], ...]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InvalidArgument(f"mlp: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.head not in HEADS:
            raise InvalidArgument(f"mlp: head {self.head!r} is not one of {HEADS}")
        n_layers = len(self.weights)
        if n_layers < 1 or len(self.biases) != n_layers or len(self.activations) != n_layers:
            raise InvalidArgument(
                f"mlp: needs as many weights, biases and activation lists as layers (at least one); got "
                f"{len(self.weights)}, {len(self.biases)}, {len(self.activations)}"
            )
        weights, biases, activations = [], [], []
        width = None
        for i, (w, b, acts) in enumerate(zip(self.weights, self.biases, self.activations)):
            w = np.ascontiguousarray(w, dtype=self.dtype)
            b = np.ascontiguousarray(b, dtype=self.dtype)
            if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
                raise InvalidArgument(f"mlp: layer {i} weights have shape {w.shape}, expected (n_in, n_out)")
            if width is not None and w.shape[0] != width:
                raise InvalidArgument(f"mlp: layer {i} takes {w.shape[0]} inputs but layer {i - 1} gives {width}")
            if b.shape != (w.shape[1],):
                raise InvalidArgument(f"mlp: layer {i} bias has shape {b.shape}, expected ({w.shape[1]},)")
            acts = _activation_list(acts, f"layer {i}")
            last = i == n_layers - 1
            for position, (name, _) in enumerate(acts):
                if name == "softmax" and not (last and position == len(acts) - 1):
                    raise InvalidArgument(f"mlp: softmax may only end the network (found in layer {i})")
            w.setflags(write=False)
            b.setflags(write=False)
            weights.append(w)
            biases.append(b)
            activations.append(acts)
            width = w.shape[1]
        if self.head == "binary" and width != 1:
            raise InvalidArgument(f"mlp: the binary head needs one output, the network gives {width}")
        object.__setattr__(self, "weights", tuple(weights))
        object.__setattr__(self, "biases", tuple(biases))
        object.__setattr__(self, "activations", tuple(activations))
        # The kernels' view: the first activation fused with the bias add when numba does
        # it well (identity, relu, leaky_relu), then the rest one pass each.
        scalar = np.dtype(self.dtype).type
        plan = []
        for acts in activations:
            codes = [(_CODE[name], scalar(param)) for name, param in acts]
            if codes and codes[0][0] in _FUSED:
                plan.append((codes[0], tuple(codes[1:])))
            else:
                plan.append(((IDENTITY, scalar(0)), tuple(codes)))
        object.__setattr__(self, "_plan", tuple(plan))

    @property
    def n_features(self) -> int:
        return self.weights[0].shape[0]

    @property
    def n_outputs(self) -> int:
        return 2 if self.head == "binary" else self.weights[-1].shape[1]

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "dtype": self.dtype,
            "head": self.head,
            "layers": [{"activations": [[name, param] for name, param in acts]} for acts in self.activations],
        }
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"weight{i}"] = w
            arrays[f"bias{i}"] = b
        return params, arrays

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> MLP:
        layers = params.get("layers")
        if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
            raise InvalidArgument("mlp: 'layers' must be a list of objects")
        names = {f"{kind}{i}" for i in range(len(layers)) for kind in ("weight", "bias")}
        missing = sorted(names - set(arrays))
        if missing:
            raise InvalidArgument(f"mlp: missing arrays {missing}")
        dtype: Any = params.get("dtype")  # JSON, checked in __post_init__
        for name in names:
            if arrays[name].dtype != np.dtype(dtype if dtype in DTYPES else "float64"):
                raise InvalidArgument(f"mlp: array {name} is {arrays[name].dtype}, expected {dtype}")
        return cls(
            weights=tuple(arrays[f"weight{i}"] for i in range(len(layers))),
            biases=tuple(arrays[f"bias{i}"] for i in range(len(layers))),
            activations=tuple(layer.get("activations", []) for layer in layers),
            head=params.get("head", "none"),
            dtype=dtype,
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidArgument(f"mlp: input has shape {X.shape}, expected (n, {self.n_features})")
        n = X.shape[0]
        out = np.empty((n, self.n_outputs), dtype=np.float64)
        if n == 0:
            return out
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if not (X.flags.c_contiguous or X.flags.f_contiguous):
            X = np.ascontiguousarray(X)
        by_rows = bool(X.flags.c_contiguous)

        def score_span(lo: int, hi: int) -> None:
            self._score_span(X, by_rows, lo, hi, out)

        threads.run_spans(score_span, threads.row_spans(n, BLOCK))
        return out

    def _score_span(self, X: np.ndarray, by_rows: bool, lo: int, hi: int, out: np.ndarray) -> None:
        rows = min(BLOCK, hi - lo)
        dtype = self.weights[0].dtype
        block_in = np.empty((rows, self.n_features), dtype=dtype)
        blocks = [np.empty((rows, w.shape[1]), dtype=dtype) for w in self.weights]
        binary = self.head == "binary"
        for r0 in range(lo, hi, rows):
            m = min(rows, hi - r0)
            _load_block(X, r0, m, block_in, by_rows)
            h = block_in
            for w, b, block, ((code, alpha), rest) in zip(self.weights, self.biases, blocks, self._plan):
                np.matmul(h[:m], w, out=block[:m])
                _bias_activate(block, m, b, code, alpha)
                for code2, alpha2 in rest:
                    _activate_block(block, m, code2, alpha2)
                h = block
            _write_output(h, m, binary, out, r0)


def mlp_from_layers(
    layers: Sequence[tuple[np.ndarray, np.ndarray, Sequence[tuple[str, float]]]],
    *,
    head: str = "none",
    dtype: str = "float64",
) -> MLP:
    """Build an MLP stage from (weight (n_in, n_out), bias, activations) per layer."""
    return MLP(
        weights=tuple(w for w, _, _ in layers),
        biases=tuple(b for _, b, _ in layers),
        activations=tuple(tuple(acts) for _, _, acts in layers),
        head=head,
        dtype=dtype,
    )
