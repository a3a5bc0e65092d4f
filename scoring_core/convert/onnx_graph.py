"""ONNX graphs (a ``.onnx`` file or an ``onnx.ModelProto``) -> core stages.

The file is parsed with the ``onnx`` package (protobuf, nothing in it runs) and the
graph walked node by node in its stored, topological order: each node's outputs get a
value (``onnx_values``) from its inputs' values. What converts: feature transforms
(Scaler, Imputer, OneHotEncoder, Normalizer, Gather / ArrayFeatureExtractor / Concat of
columns),
then one model (LinearClassifier/Regressor and TreeEnsembleClassifier/Regressor,
``onnx_ml`` and ``onnx_trees``; or Gemm/MatMul, Add and Relu/Sigmoid/Tanh/LeakyRelu/
Softmax layers, an MLP as torch.onnx and skl2onnx export it), with the Cast, Identity,
Reshape, ZipMap and label plumbing skl2onnx puts around them. Anything else
is refused with Unimplemented naming the operator: the onnx engine (onnxruntime) serves
such graphs as they are.

What the compiled model promises is onnxruntime's default call (``session.run(None,
feed)``): ``predict`` gives the prediction output (a classifier's probabilities, a
ZipMap's maps as an (n, n_classes) array, columns in the ZipMap's label order), in
the output's dtype (float32 for float graphs) and rank; a classifier's label output is
``classes[argmax]`` of it. The served output keeps the graph's name for the prediction
(``probabilities``, ``output_probability``, ``variable``, a torch export's own), as the
onnx engine, onnxruntime and Triton name it; the label output is not served by the core
(the onnx engine serves every graph output). Inputs are float tensors: one (n, k) input gives features
``f0 .. f{k-1}``, several one-column inputs one feature each, named as the inputs. The
one input's name is kept (lineage ``input``) so that a request's matrix may go by it as
well as by "input", as it may on the onnx engine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from milepost.core.errors import InvalidArgument, ResourceExhausted
from milepost.core.settings import get_settings
from scoring_core.convert import onnx_ml, onnx_standard, onnx_trees
from scoring_core.convert.converted import Converted
from scoring_core.convert.onnx_standard import DOUBLE, FLOAT
from scoring_core.convert.onnx_values import (
    Col,
    Const,
    Label,
    Rows,
    Scores,
    Value,
    Zipped,
    refuse,
)

PACKAGE = "onnx"
NAMES = ("ModelProto",)


def convert_file(path: str | os.PathLike[str]) -> Converted:
    """A ``.onnx`` file, read whole (within the bundle size limit) and parsed."""
    return convert(read_model(Path(path)))


def read_model(path: Path) -> Any:
    """The ModelProto in ``path``, refused past ``max_bundle_bytes`` before it is read."""
    import onnx

    limit = get_settings().max_bundle_bytes
    size = path.stat().st_size
    if size > limit:
        raise ResourceExhausted(f"{path.name} is {size} bytes, over the limit of {limit} (max_bundle_bytes)")
    return parse_model(path.read_bytes(), path.name, onnx)


def parse_model(data: bytes, what: str, onnx: Any) -> Any:
    """Parse ONNX bytes; external data (weights in other files) is refused, since a bundle
    and the engines read one self-contained file."""
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise InvalidArgument(f"{what}: not an ONNX model ({type(err).__name__}: {err})") from err
    if not model.HasField("graph"):
        raise InvalidArgument(f"{what}: not an ONNX model (it has no graph)")
    external = [t.name for t in _all_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise InvalidArgument(f"{what}: tensor {external[0]!r} is stored outside the file (external data); "
                              "save the model as one file (onnx.save(..., save_as_external_data=False))")
    return model


def _all_tensors(graph: Any) -> list[Any]:
    """Every stored tensor of ``graph`` and of the subgraphs its nodes hold (If, Loop, Scan
    bodies): initializers and constant attributes."""
    tensors: list[Any] = []
    stack = [graph]
    while stack:
        g = stack.pop()
        tensors.extend(g.initializer)
        for node in g.node:
            for a in node.attribute:
                tensors.extend([a.t] if a.HasField("t") else [])
                tensors.extend(a.tensors)
                stack.extend([a.g] if a.HasField("g") else [])
                stack.extend(a.graphs)
    return tensors


def convert(model: Any) -> Converted:
    """An ``onnx.ModelProto``: its graph's prediction as core stages (see the module doc)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if graph.sparse_initializer:
        raise refuse("graph", "sparse initializers")
    values: dict[str, Value | None] = {t.name: Const(numpy_helper.to_array(t)) for t in graph.initializer}
    names: list[str] = []
    inputs = [i for i in graph.input if i.name not in values]
    widths = [_input_width(inp) for inp in inputs]
    width = sum(widths)
    for inp, k in zip(inputs, widths):
        values[inp.name] = Rows(tuple(Col(len(names) + j) for j in range(k)), width)
        names.extend([inp.name] if k == 1 else [f"{inp.name}_{j}" for j in range(k)])
    if not inputs:
        raise InvalidArgument("ONNX graph: it has no inputs")
    for node in graph.node:
        op = node.op_type
        handler = _HANDLERS.get((node.domain or "ai.onnx", op))
        if handler is None:
            raise refuse(op if not node.domain else f"{node.domain}.{op}", "the core has no equivalent")
        args = []
        for name in node.input:
            if name and name not in values:
                raise InvalidArgument(f"ONNX graph: node {node.name or op} reads {name!r}, which no node computes before it")
            args.append(values[name] if name else None)
        attrs = {a.name: _attribute(helper.get_attribute_value(a)) for a in node.attribute}
        for name, value in zip(node.output, handler(op, attrs, args)):
            values[name] = value
    outputs = [(o, values.get(o.name)) for o in graph.output]
    return _assemble(model, outputs, None if len(inputs) == 1 else names, inputs[0].name if len(inputs) == 1 else None)


def _attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def _input_width(inp: Any) -> int:
    tensor = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
    if tensor is None or tensor.elem_type not in (FLOAT, DOUBLE):
        raise refuse("graph", f"input {inp.name!r} is not a float tensor (the core reads float features)")
    dims = list(tensor.shape.dim)
    if len(dims) == 1:
        return 1
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise refuse("graph", f"input {inp.name!r} is not a (rows, features) tensor with a fixed number of features")
    return int(dims[1].dim_value)


def _assemble(model: Any, outputs: list[tuple[Any, Value | None]], names: list[str] | None,
              matrix: str | None) -> Converted:
    labels = [v for _, v in outputs if isinstance(v, Label)]
    rest = [(o, v) for o, v in outputs if not isinstance(v, Label)]
    if len(rest) != 1 or len(labels) > 1:
        listed = ", ".join(o.name for o, _ in outputs)
        raise refuse("graph outputs", f"outputs {listed} are not one prediction (and a classifier's label)")
    out, value = rest[0]
    of = value.of if isinstance(value, Zipped) else value
    classes: list[Any] | None
    if isinstance(of, Scores):
        rows, stage, classes = of.rows, of.model, of.classes
    elif isinstance(of, Rows) and of.layers:
        rows, stage, classes = of, onnx_standard.network(of.layers), None
    else:
        raise refuse("graph outputs", f"output {out.name!r} is {'no model' if isinstance(of, Rows) else 'not a prediction'} "
                                      "(the core compiles graphs that end in a model)")
    if labels:
        if labels[0].of is not of:
            raise refuse("graph outputs", "the label is not the prediction's")
        classes = labels[0].classes or classes
    if isinstance(value, Zipped) and classes is not None and value.labels != classes:
        raise refuse("ZipMap", f"labels {value.labels} differ from the classes {classes}")
    if classes is None and isinstance(value, Zipped):
        classes = value.labels
    ndim, dtype = _output_form(out)
    if classes is not None and (ndim != 2 or len(classes) != stage.n_outputs):
        raise refuse("graph outputs", f"{stage.n_outputs} scores a row for {len(classes)} classes")
    if classes is None and ndim == 1 and stage.n_outputs != 1:
        raise refuse("graph outputs", f"a 1-D output of {stage.n_outputs} values a row")
    opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    onnx = sys.modules.get("onnx")
    return Converted(
        model=stage,
        task="classification" if classes is not None else "regression",
        classes=classes,
        source="onnx",
        feature_names=names,
        transforms=rows.stages(),
        lineage={
            "library": "onnx", "library_version": getattr(onnx, "__version__", "unknown"),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": int(model.ir_version), "opsets": opsets, "output": out.name,
            **({"input": matrix} if matrix else {}),
        },  # fmt: skip
        predict_ndim=ndim,
        predict_dtype="float64" if dtype == DOUBLE else "float32",
        output_name=out.name,
    )


def _output_form(out: Any) -> tuple[int, int]:
    """(rank, element type) of the prediction output; a ZipMap's maps count as (n, k) float."""
    if out.type.HasField("sequence_type"):
        return 2, FLOAT
    tensor = out.type.tensor_type
    rank = len(tensor.shape.dim) if tensor.HasField("shape") else 2
    if tensor.elem_type not in (FLOAT, DOUBLE):
        raise refuse("graph outputs", f"output {out.name!r} is not a float tensor")
    return (1 if rank == 1 else 2), tensor.elem_type


_ML = "ai.onnx.ml"
_HANDLERS: dict[tuple[str, str], Any] = {
    ("ai.onnx", "Identity"): onnx_standard.identity,
    ("ai.onnx", "Cast"): onnx_standard.cast,
    ("ai.onnx", "Constant"): onnx_standard.constant,
    ("ai.onnx", "Gather"): onnx_standard.gather,
    ("ai.onnx", "Concat"): onnx_standard.concat,
    ("ai.onnx", "Reshape"): onnx_standard.reshape,
    ("ai.onnx", "Flatten"): onnx_standard.reshape,
    ("ai.onnx", "MatMul"): onnx_standard.dense,
    ("ai.onnx", "Gemm"): onnx_standard.dense,
    ("ai.onnx", "Add"): onnx_standard.add,
    ("ai.onnx", "ArgMax"): onnx_standard.argmax,
    **{("ai.onnx", name): onnx_standard.activation for name in onnx_standard.ACTIVATIONS},
    (_ML, "Scaler"): onnx_ml.scaler,
    (_ML, "Imputer"): onnx_ml.imputer,
    (_ML, "OneHotEncoder"): onnx_ml.one_hot_encoder,
    (_ML, "Normalizer"): onnx_ml.normalizer,
    (_ML, "ZipMap"): onnx_ml.zipmap,
    (_ML, "ArrayFeatureExtractor"): onnx_ml.array_feature_extractor,
    (_ML, "LinearClassifier"): onnx_ml.linear_classifier,
    (_ML, "LinearRegressor"): onnx_ml.linear_regressor,
    (_ML, "TreeEnsembleClassifier"): onnx_trees.tree_ensemble,
    (_ML, "TreeEnsembleRegressor"): onnx_trees.tree_ensemble,
}
