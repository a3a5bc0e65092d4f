"""The standard (ai.onnx) operators of the graphs the core converts: the plumbing around a
model (Identity, Cast, Constant, Reshape/Flatten, ArgMax for a label), the column selection
and joining of a ColumnTransformer (Gather, Concat), and the dense layers of an MLP
(MatMul or Gemm, then Add, then Relu, Sigmoid, Tanh, LeakyRelu or a final Softmax), as
torch.onnx, tf2onnx and skl2onnx export them. Each handler takes the node's attributes and
its inputs' values (``onnx_values``) and gives its outputs' values, or refuses naming the
operator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scoring_core.convert.onnx_ml import Attrs, const_arg, rows_arg, select
from scoring_core.convert.onnx_values import ArgMaxOf, Const, Label, Layer, Rows, Scores, Value, refuse
from scoring_core.kinds import Stage
from scoring_core.mlp import mlp_from_layers

FLOAT, DOUBLE = 1, 11  # onnx.TensorProto element types
_INTEGERS = (2, 3, 4, 5, 6, 7, 12, 13)
ACTIVATIONS = {"Relu": "relu", "Sigmoid": "logistic", "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Softmax": "softmax"}


def network(layers: tuple[Layer, ...]) -> Stage:
    """The ``mlp`` stage of the gathered layers: float32 weights compute in float32, as
    onnxruntime does for a float graph; softmax only as the very last operation."""
    dtype = "float32" if all(layer.weight.dtype == np.float32 for layer in layers) else "float64"
    built = []
    for i, layer in enumerate(layers):
        for j, (name, _) in enumerate(layer.activations):
            if name == "softmax" and (i != len(layers) - 1 or j != len(layer.activations) - 1):
                raise refuse("Softmax", "it is not the network's last operation")
        bias = layer.bias if layer.bias is not None else np.zeros(layer.weight.shape[1], layer.weight.dtype)
        built.append((layer.weight, bias, list(layer.activations)))
    return mlp_from_layers(built, dtype=dtype)


def identity(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    return [args[0]]


def cast(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    value, to = args[0], int(attrs.get("to", 0))
    if isinstance(value, Label):
        return [value]
    if isinstance(value, Const):
        return [value]
    if isinstance(value, Rows) and to in _INTEGERS and not value.layers:
        return [replace(value, as_int=True)]
    if isinstance(value, (Rows, Scores)) and to in (FLOAT, DOUBLE):
        return [value]
    raise refuse(op, f"a cast to element type {to} of {type(value).__name__.lower()}")


def constant(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    from onnx import numpy_helper

    if "value" in attrs:
        return [Const(numpy_helper.to_array(attrs["value"]))]
    for key in ("value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            return [Const(np.asarray(attrs[key]))]
    raise refuse(op, "a constant of a kind other than a tensor or numbers")


def gather(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    if int(attrs.get("axis", 0)) not in (1, -1):
        raise refuse(op, "a gather along the rows")
    indices = const_arg(op, args, 1)
    if indices.ndim != 1:
        raise refuse(op, "scalar indices (the result has one dimension less)")
    return [select(op, rows_arg(op, args), indices)]


def concat(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    parts = [rows_arg(op, args, i) for i in range(len(args))]
    nested = parts[0].nested
    axis = int(attrs.get("axis", 1))
    if any(p.layers or p.as_int or p.nested != nested or p.prefix is not parts[0].prefix for p in parts) or \
            axis not in ((-1, 2) if nested else (-1, 1)):
        raise refuse(op, "it joins anything but feature columns side by side")
    return [replace(parts[0], cols=tuple(col for p in parts for col in p.cols))]


def reshape(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    value = args[0]
    if isinstance(value, Label):
        return [value]
    rows = rows_arg(op, args)
    shape = [int(v) for v in const_arg(op, args, 1).reshape(-1)] if op == "Reshape" else [-1, rows.width]
    if op == "Flatten" and int(attrs.get("axis", 1)) != 1:
        raise refuse(op, "a flatten that is not to (rows, features)")
    if len(shape) != 2 or shape[0] not in (-1, 0) or shape[1] not in (-1, rows.width):
        raise refuse(op, f"shape {shape} (only (rows, {rows.width}) is followed)")
    return [replace(rows, nested=False)]


def dense(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    rows = rows_arg(op, args)
    if rows.nested or rows.as_int:
        raise refuse(op, "its input is an encoder's 3-D output or an integer cast")
    weight = const_arg(op, args, 1)
    bias = None
    if op == "Gemm":
        if int(attrs.get("transA", 0)):
            raise refuse(op, "transA=1")
        if int(attrs.get("transB", 0)):
            weight = weight.T
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        weight = weight * weight.dtype.type(alpha) if alpha != 1.0 else weight
        if len(args) > 2 and args[2] is not None:
            bias = bias_of(op, const_arg(op, args, 2), weight.shape[1] if weight.ndim == 2 else 0) * beta
    if weight.ndim != 2 or weight.shape[0] != rows.width or weight.dtype not in (np.float32, np.float64):
        raise refuse(op, f"a weight of shape {weight.shape} ({weight.dtype}) for {rows.width} inputs")
    return [replace(rows, layers=(*rows.layers, Layer(weight, None if bias is None else bias.astype(weight.dtype))))]


def bias_of(op: str, value: np.ndarray, width: int) -> np.ndarray:
    if value.size not in (1, width) or (value.ndim == 2 and value.shape[0] != 1) or value.ndim > 2:
        raise refuse(op, f"a bias of shape {value.shape} for {width} units")
    return np.broadcast_to(value.reshape(-1), (width,)).copy()


def add(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    pair = args if isinstance(args[0], Rows) else args[::-1]
    rows = rows_arg(op, pair)
    bias = const_arg(op, pair, 1)
    if not rows.layers or rows.layers[-1].bias is not None or rows.layers[-1].activations:
        raise refuse(op, "an addition other than a dense layer's bias")
    last = rows.layers[-1]
    layer = Layer(last.weight, bias_of(op, bias, last.weight.shape[1]).astype(last.weight.dtype))
    return [replace(rows, layers=(*rows.layers[:-1], layer))]


def activation(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    rows = rows_arg(op, args)
    if not rows.layers:
        raise refuse(op, "an activation of the input features (the core applies them after dense layers)")
    if op == "Softmax" and int(attrs.get("axis", -1)) not in (1, -1):
        raise refuse(op, "a softmax along the rows")
    param = float(attrs.get("alpha", 0.01)) if op == "LeakyRelu" else 0.0
    last = rows.layers[-1]
    layer = Layer(last.weight, last.bias, (*last.activations, (ACTIVATIONS[op], param)))
    return [replace(rows, layers=(*rows.layers[:-1], layer))]


def argmax(op: str, attrs: Attrs, args: list[Value | None]) -> list[Value | None]:
    if int(attrs.get("axis", 0)) not in (1, -1):
        raise refuse(op, "an argmax along the rows")
    return [ArgMaxOf(rows_arg(op, args))]
