"""The torch engine: bundles of flavor "torch" holding a TorchScript or torch.export model.

A torch bundle is a content-addressed bundle (scoring_core.bundle) with::

    milepost.json   flavor "torch", the file and its format, inputs and outputs
    model.ts        a TorchScript archive (torch.jit.save)      -- or --
    model.pt2       a torch.export archive (torch.export.save)

Neither format runs Python pickles on load: TorchScript is read by torch.jit.load and
torch.export programs by torch.export.load; this module never calls torch.load with
weights_only=False. ``save_bundle`` makes such a bundle from an nn.Module.

The model takes one float32 tensor (rows, features), the features named in the
manifest, and returns (rows,), (rows, 1) or (rows, k). It runs on the deployment's
device: "cpu", "cuda", "cuda:N", or "auto" (the first GPU when torch sees one); half
precision only on a GPU. Micro-batching is the agent's MicroBatcher, as for every engine.

torch is imported when a model is loaded or saved, never when engines is imported.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel
from milepost.core.deadlines import Deadline, check
from milepost.core.errors import DataLoss, FailedPrecondition, InvalidArgument, MilepostError, Unavailable, Unimplemented

FLAVOR = "torch"
FORMATS = {"torchscript": "model.ts", "torch.export": "model.pt2"}
_EXPORT_ALIASES = {"torchscript": "torchscript", "export": "torch.export", "torch.export": "torch.export"}
_DEVICE = re.compile(r"^(cpu|auto|cuda(?::(\d+))?)$")


def _nvidia_driver_present() -> bool:
    """Whether this node has an NVIDIA driver, checked without importing torch."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def cuda_devices() -> list[str]:
    """"cuda:N" for every GPU torch can use. torch is only imported when an NVIDIA
    driver is present, so discovery stays cheap on CPU nodes."""
    if not _nvidia_driver_present():
        return []
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def save_bundle(
    module: Any,
    path: str | Path,
    *,
    example_input: Any,
    feature_names: Sequence[str],
    output_name: str = "prediction",
    export: str = "torchscript",
) -> str:
    """Write ``module`` (an nn.Module in eval mode, or a ScriptModule) as a torch bundle
    at ``path`` and return its version.

    ``example_input`` is a float32 (rows, features) tensor or array used to trace or
    export the module and to learn its output width; ``export`` is "torchscript"
    (torch.jit.trace, or the ScriptModule as is) or "export" (torch.export with a
    dynamic batch dimension, so any row count is accepted).
    """
    import torch

    from scoring_core import bundle

    fmt = _EXPORT_ALIASES.get(export)
    if fmt is None:
        raise InvalidArgument(f"export must be 'torchscript' or 'export', got {export!r}")
    names = [str(n) for n in feature_names]
    if not names or len(set(names)) != len(names):
        raise InvalidArgument(f"feature_names must be distinct and non-empty, got {names[:10]}")
    if not output_name:
        raise InvalidArgument("output_name must be a non-empty column name")
    example = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    if example.ndim != 2 or example.shape[1] != len(names):
        raise InvalidArgument(
            f"example_input has shape {tuple(example.shape)}; expected (rows, {len(names)}) for the feature_names"
        )
    if example.shape[0] < 2:
        raise InvalidArgument("example_input needs at least 2 rows so that the batch dimension stays dynamic")
    module.eval()
    with torch.inference_mode():
        width = _output_width(tuple(module(example).shape), example.shape[0])
    buffer = io.BytesIO()
    if fmt == "torchscript":
        with _torchscript_deprecation_quiet():
            scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.trace(module, example)
            torch.jit.save(scripted, buffer)
    else:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, buffer)
    manifest = {
        "format_version": bundle.FORMAT_VERSION,
        "flavor": FLAVOR,
        "torch": {"format": fmt, "file": FORMATS[fmt], "torch_version": torch.__version__},
        "inputs": [{"name": n, "type": "float32"} for n in names],
        "outputs": [{"name": output_name, "type": "float32", "shape": [width] if width > 1 else []}],
        "metadata": {"source": f"{type(module).__module__}.{type(module).__qualname__}"},
    }
    return bundle.write_bundle(path, {bundle.MANIFEST: bundle.manifest_bytes(manifest), FORMATS[fmt]: buffer.getvalue()})


@contextlib.contextmanager
def _torchscript_deprecation_quiet() -> Iterator[None]:
    """torch 2.10+ marks torch.jit deprecated; TorchScript bundles exist and are read on
    purpose, so the warning would only be noise on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def _output_width(shape: tuple[int, ...], rows: int) -> int:
    if len(shape) == 1 and shape[0] == rows:
        return 1
    if len(shape) == 2 and shape[0] == rows:
        return int(shape[1])
    raise InvalidArgument(f"the module returns shape {shape} for {rows} rows; expected (rows,), (rows, 1) or (rows, k)")


def _output_field(entry: dict[str, Any]) -> pa.Field:
    shape = entry.get("shape") or []
    if not isinstance(entry.get("name"), str) or entry.get("type") != "float32" or len(shape) > 1:
        raise InvalidArgument(f"milepost.json: torch output {entry!r} must be a named float32 scalar or vector")
    if shape:
        return pa.field(entry["name"], pa.list_(pa.float32(), int(shape[0])))
    return pa.field(entry["name"], pa.float32())


class TorchModel(LoadedModel):
    def __init__(self, module: Any, device: Any, half: bool, manifest: dict[str, Any], version: str) -> None:
        self._module = module
        self._device = device
        self._half = half
        self._features = [i["name"] for i in manifest["inputs"]]
        self.input_schema = pa.schema([pa.field(n, pa.float32()) for n in self._features])
        self.output_schema = pa.schema([_output_field(manifest["outputs"][0])])
        self.version = version
        self.platform = "pytorch_torchscript" if manifest["torch"]["format"] == "torchscript" else "pytorch_export"
        self.device = str(device)
        self._lock = threading.Lock()

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        import torch

        from scoring_core.arrow_input import as_batch, matrix_from_batch

        module = self._module  # one read: a close() racing this call lets it finish
        if module is None:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        if not isinstance(batch, (pa.RecordBatch, pa.Table)):
            raise InvalidArgument(f"predict takes a pyarrow RecordBatch, got {type(batch).__name__}")
        X = matrix_from_batch(as_batch(batch), self._features)
        if X.shape[0] == 0:
            return self._to_batch(np.empty((0, self._width()), dtype=np.float32))
        if X.dtype != np.float32 or not X.flags.writeable:  # a read-only view of a request's tensor: torch wants its own
            X = X.astype(np.float32)
        x = torch.from_numpy(X)
        check(deadline, "scoring")
        with torch.inference_mode():
            x = x.to(self._device, non_blocking=True)
            if self._half:
                x = x.half()
            out = module(x)
            out = out.float().cpu().numpy()
        return self._to_batch(out)

    def _width(self) -> int:
        t = self.output_schema.field(0).type
        return t.list_size if pa.types.is_fixed_size_list(t) else 1

    def _to_batch(self, out: np.ndarray) -> pa.RecordBatch:
        width = self._width()
        if out.ndim == 1:
            out = out[:, None]
        if out.shape[1] != width:
            raise MilepostError(  # INTERNAL: the model disagrees with its own manifest, not the caller's fault
                f"model {self.version[:12]} returned {out.shape[1]} values a row; its manifest says {width}"
            )
        if width == 1:
            column = pa.array(np.ascontiguousarray(out[:, 0], dtype=np.float32))
        else:
            values = pa.array(np.ascontiguousarray(out, dtype=np.float32).reshape(-1))
            column = pa.FixedSizeListArray.from_arrays(values, type=self.output_schema.field(0).type)
        return pa.RecordBatch.from_arrays([column], schema=self.output_schema)

    def close(self) -> None:
        """Drop the module; on a GPU, return its memory to the driver."""
        with self._lock:
            module, self._module = self._module, None
        if module is not None and self.device.startswith("cuda"):
            import torch

            del module
            torch.cuda.empty_cache()


class TorchEngine(Engine):
    name = "torch"
    flavors = (FLAVOR,)

    def info(self) -> EngineInfo:
        try:
            torch_version = package_version("torch")
        except PackageNotFoundError:
            return EngineInfo(self.name, "", False, "torch is not installed (pip install 'milepost[torch]')",
                              flavors=self.flavors)
        devices = ("cpu", *cuda_devices())
        return EngineInfo(self.name, torch_version, True, devices=devices, flavors=self.flavors)

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        try:
            import torch
        except ImportError as err:
            raise FailedPrecondition("the torch engine needs torch (pip install 'milepost[torch]')") from err

        from scoring_core import bundle

        version, files = bundle.read_bundle(bundle_dir)
        if deployment.version and deployment.version != version:
            raise DataLoss(f"bundle {bundle_dir} has version {version}, expected {deployment.version}")
        manifest = _checked_manifest(bundle.parse_manifest(files[bundle.MANIFEST]), bundle_dir)
        device = resolve_device(deployment.device, deployment.half)
        data = files.get(manifest["torch"]["file"])
        if data is None:
            raise InvalidArgument(f"bundle {bundle_dir}: milepost.json names {manifest['torch']['file']!r}, which is absent")
        if manifest["torch"]["format"] == "torchscript":
            with _torchscript_deprecation_quiet():
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        else:
            module = torch.export.load(io.BytesIO(data)).module().to(device)
        if deployment.half:
            module = module.half()
        return TorchModel(module, device, deployment.half, manifest, version)


def _checked_manifest(manifest: dict[str, Any], where: Path) -> dict[str, Any]:
    if manifest.get("flavor") != FLAVOR:
        raise Unimplemented(f"bundle {where} has flavor {manifest.get('flavor')!r}; the torch engine runs {FLAVOR!r}")
    spec = manifest.get("torch")
    if not isinstance(spec, dict) or spec.get("format") not in FORMATS or spec.get("file") != FORMATS[spec["format"]]:
        raise InvalidArgument(f"bundle {where}: milepost.json 'torch' must name a format in {list(FORMATS)} and its file")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) and i.get("type") == "float32" for i in inputs):
        raise InvalidArgument(f"bundle {where}: milepost.json 'inputs' must list float32 features")
    outputs = manifest.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != 1:
        raise InvalidArgument(f"bundle {where}: milepost.json 'outputs' must hold one output")
    _output_field(outputs[0])
    return manifest


def resolve_device(device: str, half: bool) -> Any:
    """The torch.device a deployment asks for, or an error saying why it cannot have it."""
    import torch

    match = _DEVICE.match(device or "cpu")
    if match is None:
        raise InvalidArgument(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    name = match.group(1)
    if name == "auto":
        name = "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        if half:
            raise InvalidArgument("half: half precision runs only on a CUDA device; this deployment's device is cpu")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FailedPrecondition(
            f"device: the deployment asks for {device!r} but torch {torch.__version__} sees no CUDA device on this node"
        )
    index = int(match.group(2) or 0)
    if index >= torch.cuda.device_count():
        raise FailedPrecondition(
            f"device: the deployment asks for {device!r} but this node has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)
