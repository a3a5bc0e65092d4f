"""torch ``nn.Sequential`` of Linear layers and element-wise activations -> an ``mlp`` stage.

Weights are read from each Linear's ``state_dict()`` as numpy arrays; nothing of torch is
kept, and torch is never imported by scoring_core itself (only an object that already
comes from torch reaches this converter). The compiled model answers what the module
returns in eval mode: an (n, out) array, Dropout being the identity.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument, Unimplemented
from scoring_core.convert.converted import Converted
from scoring_core.mlp import mlp_from_layers

_SUPPORTED = (
    "Linear, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Identity, Dropout, "
    "nested Sequential, and Softmax(dim=-1) as the last module"
)
_DTYPES = {"float32": "float32", "float64": "float64"}


def _torch_class(obj: Any) -> str | None:
    """``torch.nn.<Name>`` for torch's own module classes, else None (subclasses included)."""
    cls = type(obj)
    if not cls.__module__.startswith("torch.nn.modules."):
        return None
    return cls.__name__


def _flatten(module: Any, path: str) -> Iterator[tuple[str, Any]]:
    for name, child in module.named_children():
        where = f"{path}.{name}" if path else name
        if _torch_class(child) == "Sequential":
            yield from _flatten(child, where)
        else:
            yield where, child


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _activation(where: str, module: Any, cls: str | None) -> tuple[str, float] | None:
    """The (name, parameter) of an element-wise module, None for an identity."""
    if cls in ("Identity", "Dropout", "Dropout1d", "AlphaDropout"):
        return None
    if cls == "ReLU":
        return ("relu", 0.0)
    if cls == "LeakyReLU":
        return ("leaky_relu", float(module.negative_slope))
    if cls == "Sigmoid":
        return ("logistic", 0.0)
    if cls == "Tanh":
        return ("tanh", 0.0)
    if cls == "SiLU":
        return ("silu", 0.0)
    if cls == "GELU":
        if module.approximate == "none":
            return ("gelu", 0.0)
        if module.approximate == "tanh":
            return ("gelu_tanh", 0.0)
        raise Unimplemented(f"module {where}: GELU(approximate={module.approximate!r}) is not supported")
    if cls == "Softmax":
        if module.dim not in (-1, 1):
            raise Unimplemented(f"module {where}: Softmax(dim={module.dim!r}) is not supported; use dim=-1")
        return ("softmax", 0.0)
    name = type(module).__qualname__
    raise Unimplemented(f"module {where} ({name}) is not supported in a compiled Sequential; supported: {_SUPPORTED}")


def convert(model: Any) -> Converted:
    layers: list[tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]] = []
    modules = list(_flatten(model, ""))
    dtype = None
    for position, (where, module) in enumerate(modules):
        cls = _torch_class(module)
        if cls == "Linear":
            state = module.state_dict()
            weight = _numpy(state["weight"])
            bias = _numpy(state["bias"]) if "bias" in state else np.zeros(weight.shape[0], weight.dtype)
            kind = _DTYPES.get(str(weight.dtype))
            if kind is None:
                raise Unimplemented(f"module {where}: Linear weights of dtype {weight.dtype} are not supported")
            if dtype is not None and kind != dtype:
                raise InvalidArgument(f"module {where}: Linear weights are {kind}, earlier layers are {dtype}")
            dtype = kind
            layers.append((weight.T, bias, []))
            continue
        activation = _activation(where, module, cls)
        if activation is None:
            continue
        if not layers:
            raise Unimplemented(f"module {where} ({cls}) comes before the first Linear; this is not supported")
        if activation[0] == "softmax" and position != len(modules) - 1:
            raise Unimplemented(f"module {where}: Softmax is supported only as the last module")
        layers[-1][2].append(activation)
    if not layers:
        raise Unimplemented("a Sequential without Linear layers is not supported")
    torch = sys.modules.get("torch")
    lineage = {
        "library": "torch",
        "library_version": getattr(torch, "__version__", "unknown"),
        "modules": [f"{where}: {type(m).__name__}" for where, m in modules],
    }
    return Converted(
        mlp_from_layers(layers, dtype=dtype or "float32"),
        "regression",
        None,
        source="torch.nn.Sequential",
        lineage=lineage,
        predict_ndim=2,
        predict_dtype=dtype or "float32",  # what the module itself returns
    )
