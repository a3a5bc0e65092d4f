"""The onnx engine: bundles of flavor "onnx", run by onnxruntime as the graph says.

It serves the ONNX graphs the scoring core cannot compile (``scoring_core.compile``
refuses them naming the operator; ``milepost push model.onnx`` then makes one of these
bundles). An onnx bundle is a content-addressed bundle (scoring_core.bundle) with::

    milepost.json   flavor "onnx", the file, inputs and outputs as Arrow fields
    model.onnx      the model as given: one self-contained file (no external data)

An ONNX file is data, not code: onnxruntime reads the graph and runs its own kernels,
so no opt-in is needed; it is bounded by the bundle limits like every artifact. Custom
operator libraries are never registered, so a graph naming one fails to load.

Inputs: one (rows, k) float tensor gives features ``f0 .. f{k-1}`` (or the names given
to ``save_bundle``), sent as named columns or as one fixed-size-list tensor column
(a request's matrix named "input" or as the graph's input);
several inputs of one column each (skl2onnx's per-column inputs: float, double, int64,
string, bool) give one field each, named as the inputs. Outputs: one field per graph
output, in the graph's order and element type: (rows,) and (rows, 1) a scalar, (rows, k)
a fixed-size list, a ZipMap's maps a list of the probabilities in its label order.
Devices: "cpu"; "cuda", "cuda:N" or "auto" run on onnxruntime's CUDA execution
provider where onnxruntime-gpu sees a GPU (the agent asks for "cuda" when a deployment
has gpus).

onnxruntime is imported when a model is loaded or saved, never when engines is imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel, arrow_batch, still_loaded, verified_bundle
from milepost.core.deadlines import Deadline, check
from milepost.core.errors import FailedPrecondition, InvalidArgument, MilepostError, Unimplemented, shown
from milepost.core.tensor_codec.datatypes import with_matrix_name

FLAVOR = "onnx"
FILE = "model.onnx"
_DEVICE = re.compile(r"^(cpu|auto|cuda(?::(\d+))?)$")
_CUDA = "CUDAExecutionProvider"
# onnx element type -> (manifest type, Arrow type, numpy dtype)
_TYPES: dict[int, tuple[str, pa.DataType, Any]] = {
    1: ("float32", pa.float32(), np.float32), 11: ("float64", pa.float64(), np.float64),
    7: ("int64", pa.int64(), np.int64), 6: ("int32", pa.int32(), np.int32),
    8: ("string", pa.string(), object), 9: ("bool", pa.bool_(), np.bool_),
}  # fmt: skip
_BY_NAME = {name: (arrow, dtype) for name, arrow, dtype in _TYPES.values()}


def gpu_count() -> int:
    """GPUs the NVIDIA driver lists, read without importing a GPU library."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def save_bundle(model: Any, path: str | Path, *, feature_names: Sequence[str] | None = None) -> str:
    """Write ``model`` (a ``.onnx`` path, its bytes, or an ``onnx.ModelProto``) as an onnx
    bundle at ``path`` and return its version. ``feature_names`` renames the features of
    a one-input model (``f0 ..`` by default)."""
    import onnx

    from scoring_core import bundle
    from scoring_core.convert.onnx_graph import parse_model, read_model

    if isinstance(model, (str, os.PathLike)):
        data = Path(model).read_bytes()
        parsed = read_model(Path(model))
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
        parsed = parse_model(data, "ONNX model", onnx)
    elif isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        parsed = parse_model(data, "ONNX model", onnx)
    else:
        raise InvalidArgument(f"save_bundle takes a .onnx path, its bytes or an onnx.ModelProto, got {type(model).__name__}")
    inputs = _input_fields(parsed.graph, feature_names)
    outputs = _output_fields(_with_shapes(parsed, onnx).graph)
    manifest = {
        "format_version": bundle.FORMAT_VERSION,
        "flavor": FLAVOR,
        "onnx": {
            "file": FILE, "ir_version": int(parsed.ir_version),
            "producer": f"{parsed.producer_name} {parsed.producer_version}".strip(),
            "opsets": {imp.domain or "ai.onnx": int(imp.version) for imp in parsed.opset_import},
        },  # fmt: skip
        "inputs": inputs,
        "outputs": outputs,
        "metadata": {"source": "onnx"},
    }
    return bundle.write_bundle(path, {bundle.MANIFEST: bundle.manifest_bytes(manifest), FILE: data})


def _with_shapes(model: Any, onnx: Any) -> Any:
    """The model with inferred shapes, where onnx can infer them (widths of outputs)."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        return model


def _input_fields(graph: Any, names: Sequence[str] | None) -> list[dict[str, Any]]:
    initialized = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialized]
    if not inputs:
        raise InvalidArgument("ONNX model: the graph has no inputs")
    fields: list[dict[str, Any]] = []
    for inp in inputs:
        kind, width = _tensor_form(inp, "input")
        if width != 1 and (len(inputs) > 1 or kind not in ("float32", "float64")):
            raise Unimplemented(f"ONNX input {inp.name!r}: a {kind} tensor of {width} columns; the onnx engine takes "
                                "one (rows, k) float input or one-column inputs")
        if len(inputs) == 1:
            fields.extend({"name": f"f{j}", "type": kind, "tensor": inp.name, "column": j} for j in range(width))
        else:
            fields.append({"name": inp.name, "type": kind, "tensor": inp.name, "column": 0})
    if names is not None:
        names = [str(n) for n in names]
        if len(inputs) > 1 or len(names) != len(fields) or len(set(names)) != len(names) or not all(names):
            raise InvalidArgument(f"feature_names: {len(fields)} distinct names are needed for a one-input model, "
                                  f"got {names[:10]}")
        for entry, name in zip(fields, names):
            entry["name"] = name
    return fields


def _tensor_form(value: Any, what: str) -> tuple[str, int]:
    """(manifest type, width) of a (rows,), (rows, 1) or (rows, k) tensor; width -1 when unknown."""
    tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if tensor is None or tensor.elem_type not in _TYPES:
        raise Unimplemented(f"ONNX {what} {value.name!r} is not a tensor of {', '.join(t[0] for t in _TYPES.values())}")
    dims = list(tensor.shape.dim) if tensor.HasField("shape") else []
    if len(dims) == 1:
        return _TYPES[tensor.elem_type][0], 1
    if len(dims) != 2:
        raise Unimplemented(f"ONNX {what} {value.name!r} has {len(dims)} dimensions; the onnx engine takes (rows,) or (rows, k)")
    return _TYPES[tensor.elem_type][0], int(dims[1].dim_value) if dims[1].HasField("dim_value") else -1


def _output_fields(graph: Any) -> list[dict[str, Any]]:
    zipmaps = {node.output[0]: node for node in graph.node if node.op_type == "ZipMap"}
    fields: list[dict[str, Any]] = []
    for out in graph.output:
        if out.type.HasField("sequence_type"):
            node = zipmaps.get(out.name)
            if node is None:
                raise Unimplemented(f"ONNX output {out.name!r} is a sequence other than a ZipMap's; "
                                    "the onnx engine answers tensors")
            attrs = {a.name: a for a in node.attribute}
            if "classlabels_int64s" in attrs:
                labels: list[Any] = list(attrs["classlabels_int64s"].ints)
            else:
                labels = [s.decode() for s in attrs["classlabels_strings"].strings]
            fields.append({"name": out.name, "type": "float32", "shape": [len(labels)], "labels": labels})
            continue
        kind, width = _tensor_form(out, "output")
        fields.append({"name": out.name, "type": kind, "shape": [] if width == 1 else [width]})
    return fields


def _arrow_field(entry: dict[str, Any]) -> pa.Field:
    arrow, _ = _BY_NAME[entry["type"]]
    shape = entry.get("shape") or []
    if not shape:
        return pa.field(entry["name"], arrow)
    return pa.field(entry["name"], pa.list_(arrow, shape[0]) if shape[0] > 0 else pa.list_(arrow))


class OnnxModel(LoadedModel):
    def __init__(self, session: Any, manifest: dict[str, Any], version: str, device: str) -> None:
        self._session: Any = session
        self._inputs = manifest["inputs"]
        self._outputs = manifest["outputs"]
        self._tensors = list(dict.fromkeys(i["tensor"] for i in self._inputs))
        self._one_matrix = len(self._tensors) == 1 and all(i["type"] in ("float32", "float64") for i in self._inputs)
        schema = pa.schema([pa.field(i["name"], _BY_NAME[i["type"]][0]) for i in self._inputs])
        # A request's matrix may go by the graph's own input name as well as "input".
        self.input_schema = with_matrix_name(schema, self._tensors[0] if self._one_matrix else None)
        self.output_schema = pa.schema([_arrow_field(o) for o in self._outputs])
        self.version = version
        self.platform = "onnxruntime_onnx"
        self.device = device
        self._rank = {i.name: len(i.shape) for i in session.get_inputs()}

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        session = still_loaded(self._session, self.version)
        batch = arrow_batch(batch)
        feed = self._feed(batch)
        check(deadline, "scoring")
        if batch.num_rows == 0:
            return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in self.output_schema], schema=self.output_schema)
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

        try:
            results = session.run([o["name"] for o in self._outputs], feed)
        except (OrtInvalidArgument, Fail) as err:
            # The feed's names, types and widths were checked above and the graph loaded, so what
            # a node refuses now is in the values (an unknown category with zeros=0, say).
            text = str(err).strip()
            if isinstance(err, Fail) and "while running" not in text:
                raise
            raise InvalidArgument(f"onnxruntime refused the input: {shown(text, 300)}") from err
        columns = [self._column(entry, result, batch.num_rows) for entry, result in zip(self._outputs, results)]
        return pa.RecordBatch.from_arrays(columns, schema=self.output_schema)

    def _feed(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        from scoring_core.arrow_input import matrix_from_batch

        names = [i["name"] for i in self._inputs]
        if self._one_matrix:
            X = matrix_from_batch(batch, names)
            tensor = self._tensors[0]
            X = np.ascontiguousarray(X, dtype=_BY_NAME[self._inputs[0]["type"]][1])
            return {tensor: X if self._rank[tensor] == 2 else X[:, 0]}
        _check_columns(batch, names)
        feed = {}
        for entry in self._inputs:
            values = _input_column(batch.column(batch.schema.get_field_index(entry["name"])), entry)
            feed[entry["tensor"]] = values.reshape(-1, 1) if self._rank[entry["tensor"]] == 2 else values
        return feed

    def _column(self, entry: dict[str, Any], result: Any, n: int) -> pa.Array:
        field = self.output_schema.field(entry["name"])
        if "labels" in entry:
            labels = entry["labels"]
            values = np.fromiter((row[label] for row in result for label in labels), np.float32, count=n * len(labels))
            return pa.FixedSizeListArray.from_arrays(pa.array(values), type=field.type)
        result = np.asarray(result)
        if result.shape[:1] != (n,):
            raise MilepostError(  # INTERNAL: the model disagrees with its own rows, not the caller's fault
                f"model {self.version[:12]} answered output {entry['name']!r} of shape {result.shape} for {n} rows")
        if not entry.get("shape"):
            flat = result.reshape(n)
            return pa.array(flat.tolist() if flat.dtype == object else flat, type=field.type)
        width = int(np.prod(result.shape[1:]))
        values = pa.array(np.ascontiguousarray(result).reshape(-1), type=field.type.value_type)
        if pa.types.is_fixed_size_list(field.type):
            return pa.FixedSizeListArray.from_arrays(values, type=field.type)
        return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), values)

    def close(self) -> None:
        """Drop the session; calls already running finish with it."""
        self._session = None


def _check_columns(batch: pa.RecordBatch, names: list[str]) -> None:
    """A batch of one column per feature, named as the model's inputs, or InvalidArgument naming the columns."""
    present = batch.schema.names
    extra = [n for n in present if n not in names]
    if extra or len(set(present)) != len(present):
        raise InvalidArgument(f"unexpected or duplicate column(s) {shown(extra or present, 200)}; the model's inputs are "
                              f"{shown(names, 200)}")
    missing = [n for n in names if n not in present]
    if missing:
        raise InvalidArgument(f"missing feature column(s) {shown(missing, 200)}")


def _input_column(column: pa.Array, entry: dict[str, Any]) -> np.ndarray:
    """One feature column as the numpy array its one-column input takes."""
    arrow, dtype = _BY_NAME[entry["type"]]
    name = entry["name"]
    try:
        cast = column.cast(arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise InvalidArgument(f"column {name!r} has type {column.type}; the model's input takes {entry['type']}") from err
    if cast.null_count and not pa.types.is_floating(arrow):
        raise InvalidArgument(f"column {name!r} has nulls; the model's {entry['type']} input takes no missing values")
    if dtype is object:
        return np.array(cast.to_pylist(), dtype=object)
    return np.asarray(cast.fill_null(np.nan) if cast.null_count else cast, dtype=dtype)


class OnnxEngine(Engine):
    name = "onnx"
    flavors = (FLAVOR,)

    def info(self) -> EngineInfo:
        try:
            ort_version = package_version("onnxruntime")
        except PackageNotFoundError:
            try:
                ort_version = package_version("onnxruntime-gpu")
            except PackageNotFoundError:
                return EngineInfo(self.name, "", False, "onnxruntime is not installed (pip install 'milepost[onnx]')",
                                  flavors=self.flavors)
        devices = ["cpu"]
        if gpu_count():
            import onnxruntime

            if _CUDA in onnxruntime.get_available_providers():
                devices.extend(f"cuda:{i}" for i in range(gpu_count()))
        return EngineInfo(self.name, f"onnxruntime {ort_version}", True, devices=tuple(devices), flavors=self.flavors)

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        try:
            import onnxruntime
        except ImportError as err:
            raise FailedPrecondition("the onnx engine needs onnxruntime (pip install 'milepost[onnx]')") from err
        version, files, manifest = verified_bundle(bundle_dir, deployment)
        manifest = _checked_manifest(manifest)
        if FILE not in files:
            raise InvalidArgument(f"milepost.json names {FILE!r}, which the bundle does not hold")
        _check_self_contained(files[FILE])
        if deployment.half:
            raise InvalidArgument("half: an ONNX graph computes in the element types it declares; export it in float16 instead")
        providers, device = _providers(onnxruntime, deployment.device)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # shape warnings of skl2onnx graphs would log on every call
        try:
            session = onnxruntime.InferenceSession(files[FILE], options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime's loader fails in many classes (InvalidGraph, Fail...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidArgument(f"{FILE}: onnxruntime cannot load this model: {shown(first, 200)}") from err
        if device != "cpu" and session.get_providers()[0] != _CUDA:
            raise FailedPrecondition(f"device: onnxruntime could not start its CUDA provider on {device}")
        graph_inputs = {i.name for i in session.get_inputs()}
        graph_outputs = [o.name for o in session.get_outputs()]
        if {i["tensor"] for i in manifest["inputs"]} != graph_inputs or [o["name"] for o in manifest["outputs"]] != graph_outputs:
            raise InvalidArgument(f"milepost.json: inputs and outputs disagree with {FILE}'s graph "
                                  f"({sorted(graph_inputs)} -> {graph_outputs})")
        return OnnxModel(session, manifest, version, device)


def _check_self_contained(data: bytes) -> None:
    """Refuse a graph whose tensors live in other files (external data): onnxruntime would
    open paths the artifact names on this node. save_bundle refuses them; a bundle built by
    hand is checked here, before onnxruntime reads it."""
    try:
        import onnx
    except ImportError as err:
        raise FailedPrecondition("the onnx engine needs the onnx package to check models (pip install 'milepost[onnx]')") from err
    from scoring_core.convert.onnx_graph import parse_model

    parse_model(data, FILE, onnx)


def _checked_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest.get("flavor") != FLAVOR:
        raise Unimplemented(f"the bundle has flavor {shown(manifest.get('flavor'))}; the onnx engine runs {FLAVOR!r}")
    if not isinstance(manifest.get("onnx"), dict) or manifest["onnx"].get("file") != FILE:
        raise InvalidArgument(f"the bundle: milepost.json 'onnx' must name its file {FILE!r}")
    for key in ("inputs", "outputs"):
        entries = manifest.get(key)
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("type") in _BY_NAME for e in entries):
            raise InvalidArgument(f"the bundle: milepost.json {key!r} must list named fields of {sorted(_BY_NAME)}")
    return manifest


def _providers(onnxruntime: Any, device: str) -> tuple[list[Any], str]:
    """onnxruntime's execution providers for a deployment's device, or why it cannot have it."""
    match = _DEVICE.match(device or "cpu")
    if match is None:
        raise InvalidArgument(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    cuda = _CUDA in onnxruntime.get_available_providers() and gpu_count() > 0
    name = match.group(1)
    if name == "cpu" or (name == "auto" and not cuda):
        return ["CPUExecutionProvider"], "cpu"
    if not cuda:
        raise FailedPrecondition(f"device: the deployment asks for {device!r} but onnxruntime {onnxruntime.__version__} "
                                 "has no CUDA execution provider with a GPU on this node (onnxruntime-gpu runs on GPUs)")
    index = int(match.group(2) or 0)
    if index >= gpu_count():
        raise FailedPrecondition(f"device: the deployment asks for {device!r} but this node has {gpu_count()} GPU(s)")
    return [(_CUDA, {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
