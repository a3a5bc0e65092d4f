"""The torch engine: bundles of flavor "torch" holding a TorchScript or torch.export model.

A torch bundle is a content-addressed bundle (scoring_core.bundle) with::

    milepost.json   flavor "torch", the file and its format, inputs and outputs
    model.ts        a TorchScript archive (torch.jit.save)      -- or --
    model.pt2       a torch.export archive (torch.export.save)

Nothing in a pushed bundle executes on load. Both formats are zip archives that may carry
pickles (TorchScript's data.pkl and constants.pkl; a .pt2's pickled weights, constants and
sample inputs, which torch.export.load reads with torch.load(weights_only=False)), and a .pt2's
graph JSON holds strings torch turns into code (sympy expressions it evaluates, names it writes
into generated Python, guard code it executes). Before a torch loader sees the bytes,
``check_archive`` reads every pickle with pickletools (never unpickling) and refuses one that
imports or calls anything beyond the exact (module, name) pairs torch's weight format needs,
and refuses graph strings outside a strict grammar; an operator who trusts the bundles' authors
turns this off with ``allow_code_bundles`` (MILEPOST_ALLOW_CODE_BUNDLES=1).
``save_bundle`` makes a bundle from an nn.Module that passes those checks.

The model takes one float32 tensor (rows, features), the features named in the
manifest, and returns (rows,), (rows, 1) or (rows, k). It runs on the deployment's
device: "cpu", "cuda", "cuda:N", or "auto" (the first GPU when torch sees one); half
precision only on a GPU. Micro-batching is the agent's MicroBatcher, as for every engine.

torch is imported when a model is loaded or saved, never when engines is imported.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
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

from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel, arrow_batch, still_loaded, verified_bundle
from milepost.core.deadlines import Deadline, check
from milepost.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    MilepostError,
    ResourceExhausted,
    Unimplemented,
    shown,
)
from milepost.core.settings import get_settings

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
    check_archive(buffer.getvalue(), FORMATS[fmt], fmt)  # what the engine will check when it loads the bundle
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

        from scoring_core.arrow_input import matrix_from_batch

        module = still_loaded(self._module, self.version)
        X = matrix_from_batch(arrow_batch(batch), self._features)
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

        version, files, manifest = verified_bundle(bundle_dir, deployment)
        manifest = _checked_manifest(manifest)
        device = resolve_device(deployment.device, deployment.half)
        fmt, file = manifest["torch"]["format"], manifest["torch"]["file"]
        data = files.get(file)
        if data is None:
            raise InvalidArgument(f"milepost.json names {file!r}, which the bundle does not hold")
        if not get_settings().allow_code_bundles:
            check_archive(data, file, fmt)  # before torch reads a byte of it
        module = _load_module(torch, data, file, fmt, device)
        if deployment.half:
            module = module.half()
        return TorchModel(module, device, deployment.half, manifest, version)


def _load_module(torch: Any, data: bytes, file: str, fmt: str, device: Any) -> Any:
    """The module torch reads from ``data``; an archive torch cannot read is the caller's
    InvalidArgument (naming the file), not this node's INTERNAL."""
    try:
        if fmt == "torchscript":
            with _torchscript_deprecation_quiet():
                return torch.jit.load(io.BytesIO(data), map_location=device)
        program = torch.export.load(io.BytesIO(data))
        # Guard code from the archive would be exec'd by .module(); the shape checks stay (a forward pre-hook).
        takes_guards = "check_guards" in inspect.signature(program.module).parameters
        module = program.module(check_guards=False) if takes_guards else program.module()
        return module.to(device)
    except torch.cuda.OutOfMemoryError as err:
        raise ResourceExhausted(f"{file}: the model does not fit on {device}") from err
    except MilepostError:
        raise
    except Exception as err:  # noqa: BLE001 - torch's loaders fail on a bad archive in many ways (SpecViolationError...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidArgument(f"{file}: torch cannot load this {fmt} archive: {shown(first, 160)}") from err


def _checked_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    where = "the bundle"
    if manifest.get("flavor") != FLAVOR:
        raise Unimplemented(f"the bundle has flavor {shown(manifest.get('flavor'))}; the torch engine runs {FLAVOR!r}")
    spec = manifest.get("torch")
    if not isinstance(spec, dict) or spec.get("format") not in FORMATS or spec.get("file") != FORMATS[spec["format"]]:
        raise InvalidArgument(f"{where}: milepost.json 'torch' must name a format in {list(FORMATS)} and its file")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) and i.get("type") == "float32" for i in inputs):
        raise InvalidArgument(f"{where}: milepost.json 'inputs' must list float32 features")
    outputs = manifest.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != 1:
        raise InvalidArgument(f"{where}: milepost.json 'outputs' must hold one output")
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


# ---- what a torch archive may hold: nothing that runs Python on load ----
#
# The exact globals torch's own formats name in their pickles: tensors and parameters rebuilt
# from storages (the storage classes appear inside persistent ids), dtypes, devices, sizes, and
# OrderedDict for state dicts. Anything else (os.system, builtins.exec, subprocess.Popen, a
# tensor subclass's reducer) would import or call code the artifact chose.
_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
             "ComplexFloat", "ComplexDouble")
_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
           "complex64", "complex128")
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),  # its callable and type arguments are globals checked here too
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.storage", "UntypedStorage"),
    *(("torch", f"{kind}Storage") for kind in _STORAGES),
    *(("torch", dtype) for dtype in _DTYPES),
})
# TorchScript's own pickles (read by torch's C++ unpickler) also name these helpers, and the
# archive's TorchScript classes (``__torch__.*``), which are compiled from its TorchScript
# sources, never imported as Python.
TORCHSCRIPT_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    ("torch.jit._pickle", name) for name in (
        "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_tensor_from_id",
        "restore_type_tag",
    )
)
# BUILD with real state sets attributes or calls __setstate__: only on a state dict (its
# ``_metadata``) and on TorchScript objects.
_BUILD_TARGETS = frozenset({("collections", "OrderedDict")})
_PICKLE_HINT = "an operator who trusts the bundle's author allows it with MILEPOST_ALLOW_CODE_BUNDLES=1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUALIFIED = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")  # "0.weight", "linear_1", "torch.ops.aten.add.Tensor"
_ZIP_MAGIC = b"PK\x03\x04"
_NATIVE_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


class _Mark:
    """MARK on the simulated stack."""


class _Opaque:
    """A value whose contents the checks do not need."""


class _NoState:
    """None or an empty tuple: a BUILD with nothing to set."""


class _Text:
    def __init__(self, value: str) -> None:
        self.value = value


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Made:
    """What calling (REDUCE, NEWOBJ, OBJ, INST) an allowed global made."""

    def __init__(self, by: _Global) -> None:
        self.by = by


class _Dict:
    def __init__(self, items: int = 0) -> None:
        self.items = items


_PUSH_OPAQUE = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "BYTEARRAY8", "NEXT_BUFFER", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "EMPTY_LIST", "EMPTY_SET", "PERSID",
})
_PUSH_TEXT = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                        "BINUNICODE8"})
_FROM_MARK = {"TUPLE": _Opaque, "LIST": _Opaque, "FROZENSET": _Opaque, "DICT": _Dict}  # pop to MARK, push one


class PickleScan:
    """Reads one pickle's opcodes (pickletools.genops; nothing is unpickled) on a simulated
    stack, so that every global it names and every call it makes is known before anything
    could run it. ``where`` names the file in error messages."""

    def __init__(self, where: str, *, torchscript: bool) -> None:
        self.where = where
        self.torchscript = torchscript
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def refuse(self, what: str) -> FailedPrecondition:
        return FailedPrecondition(f"{self.where}: the pickle {what}; torch bundles may only hold tensors in torch's "
                                  f"weight format, since anything else would run code from the artifact on load "
                                  f"({_PICKLE_HINT})")

    def malformed(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where}: not a well-formed pickle ({what})")

    def allowed(self, module: str, name: str) -> bool:
        if (module, name) in ALLOWED_GLOBALS:
            return True
        if not self.torchscript:
            return False
        if (module, name) in TORCHSCRIPT_GLOBALS:
            return True
        parts = module.split(".")
        return parts[0] == "__torch__" and all(_IDENT.match(p) for p in parts) and bool(_IDENT.match(name))

    def global_(self, module: str, name: str) -> _Global:
        if not self.allowed(module, name):
            raise self.refuse(f"imports {shown(f'{module}.{name}')}")
        return _Global(module, name)

    def pop(self) -> Any:
        if not self.stack or isinstance(self.stack[-1], _Mark):
            raise self.malformed("an opcode needs a value the stack does not hold")
        return self.stack.pop()

    def pop_to_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if isinstance(self.stack[i], _Mark):
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise self.malformed("an opcode needs a MARK the stack does not hold")

    def call(self, target: Any, how: str) -> _Made:
        if not isinstance(target, _Global):
            raise self.refuse(f"calls something that is not a named global ({how})")
        return _Made(target)

    def top(self) -> Any:
        if not self.stack:
            raise self.malformed("an opcode needs a value the stack does not hold")
        return self.stack[-1]

    def step(self, name: str, arg: Any) -> None:  # noqa: C901 - one branch an opcode family, as the pickle VM has
        if name in _PUSH_OPAQUE:
            self.stack.append(_Opaque())
        elif name in _PUSH_TEXT:
            self.stack.append(_Text(arg if isinstance(arg, str) else str(arg)))
        elif name in ("NONE", "EMPTY_TUPLE"):
            self.stack.append(_NoState())
        elif name == "EMPTY_DICT":
            self.stack.append(_Dict())
        elif name == "MARK":
            self.stack.append(_Mark())
        elif name in ("PROTO", "FRAME", "STOP"):
            pass
        elif name in ("POP",):
            self.pop()
        elif name == "POP_MARK":
            self.pop_to_mark()
        elif name == "DUP":
            self.stack.append(self.top())
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise self.malformed(f"memo {arg} is read before it is written")
            self.stack.append(self.memo[arg])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            for _ in range(int(name[-1])):
                self.pop()
            self.stack.append(_Opaque())
        elif name in _FROM_MARK:
            items = self.pop_to_mark()
            self.stack.append(_Dict(len(items) // 2) if name == "DICT" else _Opaque())
        elif name == "APPEND":
            self.pop()
            self.top()
        elif name in ("APPENDS", "ADDITEMS"):
            self.pop_to_mark()
            self.top()
        elif name == "SETITEM":
            self.pop(), self.pop()
            self._grow(self.top(), 1)
        elif name == "SETITEMS":
            items = self.pop_to_mark()
            self._grow(self.top(), len(items) // 2)
        elif name == "READONLY_BUFFER":
            self.top()
        elif name == "BINPERSID":  # torch's persistent_load: a storage, named by a tuple checked above
            self.pop()
            self.stack.append(_Opaque())
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            self.stack.append(self.global_(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if not isinstance(module, _Text) or not isinstance(attr, _Text):
                raise self.refuse("imports a global whose name is not a plain string (STACK_GLOBAL)")
            self.stack.append(self.global_(module.value, attr.value))
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            target = self.global_(module, attr)
            self.pop_to_mark()
            self.stack.append(self.call(target, "INST"))
        elif name == "OBJ":
            items = self.pop_to_mark()
            if not items:
                raise self.malformed("OBJ without a class")
            self.stack.append(self.call(items[0], "OBJ"))
        elif name == "REDUCE":
            self.pop()
            self.stack.append(self.call(self.pop(), "REDUCE"))
        elif name == "NEWOBJ":
            self.pop()
            self.stack.append(self.call(self.pop(), "NEWOBJ"))
        elif name == "NEWOBJ_EX":
            self.pop(), self.pop()
            self.stack.append(self.call(self.pop(), "NEWOBJ_EX"))
        elif name == "BUILD":
            state = self.pop()
            self._build(self.top(), state)
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise self.refuse(f"imports a global from the copyreg extension registry ({name})")
        else:
            raise self.refuse(f"uses opcode {name}, which this check does not know")

    def _grow(self, target: Any, items: int) -> None:
        if isinstance(target, _Dict):
            target.items += items

    def _build(self, target: Any, state: Any) -> None:
        if isinstance(state, _NoState) or (isinstance(state, _Dict) and state.items == 0):
            return
        if isinstance(target, _Made):
            key = (target.by.module, target.by.name)
            if key in _BUILD_TARGETS or (self.torchscript and target.by.module.split(".")[0] == "__torch__"):
                return
            raise self.refuse(f"sets the state of a {shown(f'{key[0]}.{key[1]}')} (BUILD)")
        raise self.refuse("sets the state of an object it did not build from an allowed class (BUILD)")


def scan_pickles(data: bytes, where: str, *, torchscript: bool = False) -> int:
    """Check every pickle in ``data``, one after another (a legacy torch.save file is several),
    and return how many there were. Opcodes are checked as they are read, so a payload before
    a malformed byte is refused as surely as one in a well-formed pickle."""
    import pickletools

    stream = io.BytesIO(data)
    count = 0
    while stream.tell() < len(data):
        start = stream.tell()
        scan = PickleScan(where, torchscript=torchscript)
        try:
            for op, arg, _ in pickletools.genops(stream):
                scan.step(op.name, arg)
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError) as err:
            if count == 0:
                raise scan.malformed(shown(str(err), 80)) from err
            return count  # what follows the pickles is raw storage bytes, as in torch's legacy format
        except InvalidArgument:
            if count == 0:
                raise
            return count
        count += 1
        if stream.tell() == start:
            break
    if count == 0:
        raise InvalidArgument(f"{where}: empty where a pickle was expected")
    return count


class _Budget:
    """Bytes the checks may decompress in all, so that a zip bomb inside the archive is refused
    before it is inflated."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, info: Any, where: str) -> None:
        self.left -= int(info.file_size)
        if self.left < 0:
            raise InvalidArgument(f"{where}: the archive expands to more than this node accepts "
                                  f"(max_bundle_expanded_bytes)")


def _members(data: bytes, label: str) -> Any:
    import zipfile

    if not data.startswith(_ZIP_MAGIC):
        raise InvalidArgument(f"{label}: not a zip archive, as torch's formats are")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise InvalidArgument(f"{label}: not a readable zip archive ({shown(str(err), 80)})") from err


def _read(archive: Any, info: Any, where: str, budget: _Budget) -> bytes:
    import zipfile

    budget.take(info, where)
    try:
        return bytes(archive.read(info))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise InvalidArgument(f"{where}: cannot be read from the archive ({shown(str(err), 80)})") from err


def _relative(name: str) -> str:
    """A member's name below the archive's top folder, lower case: torch's reader ignores the
    top folder's name and finds records without regard to case."""
    return name.split("/", 1)[1].lower() if "/" in name else name.lower()


def _pickle_slot(data: bytes, where: str, budget: _Budget, *, torchscript: bool = False) -> int:
    """A file torch may unpickle: a torch.save zip (its pickles are checked) or raw pickles."""
    if data.startswith(_ZIP_MAGIC):
        archive = _members(data, where)
        count = 0
        for info in archive.infolist():
            if not info.is_dir() and _relative(info.filename).endswith("pkl"):
                inner = f"{where} > {shown(info.filename, 80)}"
                count += scan_pickles(_read(archive, info, inner, budget), inner, torchscript=torchscript)
        return count
    return scan_pickles(data, where, torchscript=torchscript)


def _json_object(data: bytes) -> Any:
    """The JSON object ``data`` holds, else None. A JSON object can never run as a pickle: its
    first byte is not an opcode."""
    if not data.lstrip()[:1] == b"{":
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def check_archive(data: bytes, file: str, fmt: str, *, budget_bytes: int | None = None) -> int:
    """Refuse a torch archive (``fmt`` "torchscript" or "torch.export") that would run code from
    the artifact when torch loads it; return the number of pickles checked.

    FailedPrecondition: a pickle names a global beyond torch's weight format, the archive
    carries native code (AOTInductor), or its graph holds strings torch would evaluate.
    InvalidArgument: not a zip archive, a malformed pickle or graph, or too large expanded."""
    budget = _Budget(budget_bytes if budget_bytes is not None else get_settings().max_bundle_expanded_bytes)
    archive = _members(data, file)
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if fmt == "torchscript":
        count = 0
        for info in infos:
            if _relative(info.filename).endswith("pkl"):  # data.pkl, constants.pkl, *.debug_pkl, traced_inputs.pkl
                where = f"{file} > {shown(info.filename, 80)}"
                count += scan_pickles(_read(archive, info, where, budget), where, torchscript=True)
        return count
    return _check_export_archive(archive, infos, file, budget)


_EXPORT_PLAIN = {"archive_format", "archive_version", "version", "byteorder", ".format_version", ".storage_alignment"}


def _check_export_archive(archive: Any, infos: list[Any], file: str, budget: _Budget) -> int:
    """A torch.export archive: its graph JSON and every file torch may unpickle (pickled weights
    and constants, sample inputs, legacy weight files, anything it does not recognise)."""
    raw: set[str] = set()
    pickled: set[str] = set()
    contents: dict[int, bytes] = {}
    for index, info in enumerate(infos):
        rel = _relative(info.filename)
        if rel.endswith(".json"):
            where = f"{file} > {shown(info.filename, 80)}"
            contents[index] = _read(archive, info, where, budget)
            doc = _json_object(contents[index])
            if doc is not None and rel.endswith("_config.json") and rel.startswith(("data/weights/", "data/constants/")):
                _payload_files(doc, rel.rsplit("/", 1)[0], raw, pickled, where)
    count = 0
    for index, info in enumerate(infos):
        rel = _relative(info.filename)
        where = f"{file} > {shown(info.filename, 80)}"
        if rel.startswith(("data/aotinductor/", "data/mtia/")) or rel.endswith((".so", ".dll", ".dylib", ".cubin")):
            raise FailedPrecondition(f"{where}: the archive carries compiled native code (AOTInductor), which "
                                     f"would run on load; {_PICKLE_HINT}")
        if rel in _EXPORT_PLAIN or rel.startswith((".data/", "extra/", "extra_files/")) or (rel in raw and rel not in pickled):
            continue
        data = contents[index] if index in contents else _read(archive, info, where, budget)
        if data.startswith(_NATIVE_MAGIC):
            raise FailedPrecondition(f"{where}: the archive carries native code, which this engine does not load; "
                                     f"{_PICKLE_HINT}")
        doc = _json_object(data) if rel not in pickled else None
        if doc is not None:
            if rel.startswith("models/") or rel == "serialized_exported_program.json":
                check_program(doc, where)
            continue
        count += _pickle_slot(data, where, budget)
    return count


def _payload_files(doc: dict[str, Any], folder: str, raw: set[str], pickled: set[str], where: str) -> None:
    """The files a weights or constants config names: raw tensor bytes, or pickles."""
    config = doc.get("config")
    if not isinstance(config, dict):
        raise InvalidArgument(f"{where}: expected {{'config': {{name: payload}}}}")
    for fqn, meta in config.items():
        if not isinstance(fqn, str) or not _QUALIFIED.match(fqn) or not isinstance(meta, dict):
            raise FailedPrecondition(f"{where}: payload name {shown(fqn)} is not a dotted name")
        path = meta.get("path_name")
        if not isinstance(path, str) or not re.match(r"^[A-Za-z0-9_.-]+$", path):
            raise FailedPrecondition(f"{where}: payload {shown(fqn)} names file {shown(path)}, not a plain file name")
        rel = f"{folder}/{path.lower()}"
        tensor = path.startswith("tensor_") if folder.endswith("constants") else True
        (raw if tensor and meta.get("use_pickle") is False else pickled).add(rel)


# ---- a torch.export graph: strings torch turns into code ----
_NAME_KEYS = frozenset({"name", "as_name", "parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name",
                        "user_input_name", "fqn", "class_fqn", "arg_name"})
_NAME_LIST_KEYS = frozenset({"forward_arg_names", "field_names"})
_OPERATOR_FUNCTIONS = frozenset({
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "invert",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "lshift", "rshift", "truth",
})
_TORCH_SYM_FUNCTIONS = frozenset({"sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_not", "sym_sqrt",
                                  "sym_sum"})
# The functions a serialized sympy expression (srepr form, as torch writes it) may call.
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "Piecewise", "ExprCondPair", "floor", "ceiling", "sqrt",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "True", "False", "pi", "E", "S"})
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def check_program(doc: Any, where: str) -> None:
    """Refuse a serialized ExportedProgram whose strings torch would turn into code: operator
    targets beyond torch's operators, names that are not dotted identifiers (torch writes them
    into generated Python), sympy expressions beyond a plain arithmetic grammar (torch passes
    them to sympy.sympify, which evaluates Python), and guard code (executed by .module())."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, key = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, str(k)) for k, v in value.items())
        elif isinstance(value, list):
            if key in _NAME_LIST_KEYS:
                for item in value:
                    _check_name(item, key, where)
            elif key == "guards_code":
                for item in value:
                    _check_guard(item, where)
            else:
                stack.extend((v, key) for v in value)
        elif key in ("target", "as_operator") and value is not None:
            _check_target(value, where)
        elif key in _NAME_KEYS and value is not None:
            _check_name(value, key, where)
        elif key == "expr_str":
            _check_sym_expr(value, where)


def _check_name(value: Any, key: str, where: str) -> None:
    if not isinstance(value, str) or (value and not _QUALIFIED.match(value)):
        raise FailedPrecondition(f"{where}: {key} {shown(value)} is not a dotted identifier; torch would write it "
                                 f"into generated Python code ({_PICKLE_HINT})")


def _check_guard(value: Any, where: str) -> None:
    if not isinstance(value, str) or any(c in value for c in "\n\r#;\\") or "__" in value or "lambda" in value:
        raise FailedPrecondition(f"{where}: guard {shown(value)} is not a plain comparison; torch would execute it "
                                 f"as Python code ({_PICKLE_HINT})")


def _check_target(value: Any, where: str) -> None:
    """An operator the graph calls: one of torch's registered operators (torch.ops.*), or a
    plain arithmetic function. A dotted path from ``torch`` reaches anything
    (torch.serialization.os.system), so only these shapes are resolved."""
    import math

    ok = False
    if isinstance(value, str) and _QUALIFIED.match(value):
        parts = value.split(".")
        if parts[:2] == ["torch", "ops"] and len(parts) in (4, 5) and all(_IDENT.match(p) for p in parts):
            ok = _is_operator(parts[2:])
        elif len(parts) == 2 and parts[0] == "_operator":
            ok = parts[1] in _OPERATOR_FUNCTIONS
        elif len(parts) == 2 and parts[0] == "math":
            ok = _IDENT.match(parts[1]) is not None and inspect.isbuiltin(getattr(math, parts[1], None))
        elif len(parts) == 2 and parts[0] == "torch":
            ok = parts[1] in _TORCH_SYM_FUNCTIONS
    if not ok:
        raise FailedPrecondition(f"{where}: the graph calls {shown(value)}, which is not a torch operator; "
                                 f"torch bundles call only registered operators ({_PICKLE_HINT})")


def _is_operator(parts: list[str]) -> bool:
    """torch.ops.NAMESPACE.OP[.OVERLOAD] names an operator (looked up in torch's registry)."""
    import torch

    namespace, op = parts[0], parts[1]
    try:
        target: Any = getattr(getattr(torch.ops, namespace), op)
        if len(parts) == 3:
            target = getattr(target, parts[2])
    except (AttributeError, RuntimeError):
        return False
    return isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator))


def _check_sym_expr(value: Any, where: str) -> None:
    import ast

    def refuse() -> FailedPrecondition:
        return FailedPrecondition(f"{where}: symbolic expression {shown(value)} is not plain arithmetic; torch "
                                  f"would evaluate it as Python code ({_PICKLE_HINT})")

    if not isinstance(value, str) or len(value) > 4096 or "__" in value:
        raise refuse()
    try:
        tree = ast.parse(value, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise refuse() from err
    texts: set[int] = set()  # the string constants a Call above allowed
    operators = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
                 ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Load)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            _small_exponent(node.right, refuse)
        if isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, *operators)):
            continue
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
                raise refuse()
            for position, arg in enumerate(node.args):  # strings only where sympy reads them as names or numbers
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if not ((node.func.id == "Symbol" and position == 0 and _IDENT.match(arg.value))
                            or (node.func.id == "Float" and _NUMBER.match(arg.value))):
                        raise refuse()
                    texts.add(id(arg))
            if node.func.id in ("Pow", "PowByNatural", "FloatPow") and len(node.args) == 2:
                _small_exponent(node.args[1], refuse)
            if any(k.arg is None for k in node.keywords):
                raise refuse()
        elif isinstance(node, ast.keyword):
            if not isinstance(node.value, ast.Constant) or isinstance(node.value.value, str):
                raise refuse()
        elif isinstance(node, ast.Name):
            if not (node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or re.match(r"^[a-z]+\d+$", node.id)):
                raise refuse()
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and id(node) not in texts:
                raise refuse()
            if not isinstance(node.value, (int, float, str)) or (isinstance(node.value, int) and abs(node.value) >= 1 << 64):
                raise refuse()
        else:
            raise refuse()


def _small_exponent(node: Any, refuse: Any) -> None:
    """sympy computes integer powers exactly: 2**2**200 in a graph would never finish loading."""
    import ast

    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Integer", "Rational", "Float"):
        values = [a for a in node.args if isinstance(a, ast.Constant)]
        if len(values) == len(node.args) and all(
            isinstance(v.value, str) or (isinstance(v.value, (int, float)) and abs(v.value) <= 64) for v in values
        ):
            return
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and abs(node.value) <= 64:
        return
    elif isinstance(node, ast.Name) or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                                        and node.func.id == "Symbol"):
        return
    raise refuse()
