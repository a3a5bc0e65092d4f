"""The python engine: user components, shipped as code bundles.

THIS ENGINE EXECUTES USER CODE. A bundle of flavor "python" carries Python source
files and names a class in them; loading the bundle imports those files and runs
them in the agent's process with the agent's permissions. It is therefore refused
unless the operator allows code bundles on the node: the ``allow_code_bundles``
setting (``MILEPOST_ALLOW_CODE_BUNDLES=1``), or ``PythonEngine(allow_code=True)``.

A component is a class with::

    def load(self, bundle_dir: Path) -> None            # read weights, data files
    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch
    def close(self) -> None                             # optional
    thread_safe = True                                  # optional: else calls are serialised

and optional stage functions ``fn(inputs: dict, **params) -> dict`` for pipelines
(training, custom), listed in the manifest's ``stages``. Inputs are checked against
the declared input schema before the component sees them, so a wrong column is the
caller's InvalidArgument, not the component's exception; outputs are checked against
the declared output schema. ``save_bundle`` writes such a bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from engines import entry_points
from engines.base import DeploymentSpec, Engine, EngineInfo, LoadedModel, StageSpec
from engines.user_code import CODE_DIR, UserCode
from milepost.core.deadlines import Deadline, check
from milepost.core.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    MilepostError,
    Unavailable,
    Unimplemented,
    shown,
)
from milepost.core.settings import env_var, get_settings

FLAVOR = "python"
ALLOW_ENV = env_var("allow_code_bundles")
DATA_DIR = "data"


def _type_entry(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_fixed_size_list(t):
        return {"type": str(t.value_type), "shape": [t.list_size]}
    return {"type": str(t), "shape": []}


def _field_from_entry(entry: Any, where: str) -> pa.Field:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("type"), str):
        raise InvalidArgument(f"milepost.json: {where} entries must be {{name, type, shape}}, got {entry!r}")
    try:
        value_type = pa.type_for_alias(entry["type"])
    except (ValueError, KeyError) as err:
        raise InvalidArgument(f"milepost.json: {where} {entry['name']!r} has unknown type {entry['type']!r}") from err
    shape = entry.get("shape") or []
    if len(shape) > 1:
        raise InvalidArgument(f"milepost.json: {where} {entry['name']!r}: only scalars and 1-D vectors are supported")
    return pa.field(entry["name"], pa.list_(value_type, int(shape[0])) if shape else value_type)


def _schema_from_entries(entries: Any, where: str) -> pa.Schema:
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"milepost.json: '{where}' must be a non-empty list")
    return pa.schema([_field_from_entry(e, where) for e in entries])


def _as_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=table.schema)


def save_bundle(
    path: str | Path,
    *,
    entry_point: str,
    sources: Sequence[str | Path],
    input_schema: pa.Schema,
    output_schema: pa.Schema,
    data: Mapping[str, bytes] | None = None,
    stages: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write a python code bundle at ``path`` and return its version.

    ``sources`` are .py files (stored under code/ by file name) or directories (their
    .py files, keeping relative paths). ``entry_point`` is "module:Class"; ``stages``
    maps stage names to "module:function"; ``data`` files go under data/, where the
    component's ``load(bundle_dir)`` finds them.
    """
    from scoring_core import bundle

    files: dict[str, bytes] = {}
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for file in sorted(source.rglob("*.py")):
                if "__pycache__" not in file.parts:
                    files[f"{CODE_DIR}/{file.relative_to(source).as_posix()}"] = file.read_bytes()
        elif source.suffix == ".py" and source.is_file():
            files[f"{CODE_DIR}/{source.name}"] = source.read_bytes()
        else:
            raise InvalidArgument(f"sources: {source} is neither a .py file nor a directory")
    for name, blob in (data or {}).items():
        files[f"{DATA_DIR}/{name}"] = bytes(blob)
    module = entry_point.partition(":")[0]
    if f"{CODE_DIR}/{module.replace('.', '/')}.py" not in files:
        raise InvalidArgument(f"entry_point {entry_point!r}: no module {module!r} among the sources")
    manifest = {
        "format_version": bundle.FORMAT_VERSION,
        "flavor": FLAVOR,
        "python": {"entry_point": entry_point, "stages": dict(stages or {})},
        "inputs": [{"name": f.name, **_type_entry(f.type)} for f in input_schema],
        "outputs": [{"name": f.name, **_type_entry(f.type)} for f in output_schema],
        "metadata": dict(metadata or {}),
    }
    files[bundle.MANIFEST] = bundle.manifest_bytes(manifest)
    return bundle.write_bundle(path, files)


class ComponentModel(LoadedModel):
    platform = "python_component"

    def __init__(self, code: UserCode, component: Any, manifest: dict[str, Any], version: str) -> None:
        self._code = code
        self._component = component
        self.entry_point = manifest["python"]["entry_point"]
        self.input_schema = _schema_from_entries(manifest.get("inputs"), "inputs")
        self.output_schema = _schema_from_entries(manifest.get("outputs"), "outputs")
        self.version = version
        self._serial = None if getattr(component, "thread_safe", False) else threading.Lock()
        self._close_lock = threading.Lock()

    @property
    def package(self) -> str:
        """The unique package the bundle's modules were imported under."""
        return self._code.package

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        component = self._component  # one read: a close() racing this call lets it finish
        if component is None:
            raise Unavailable(f"model {self.version[:12]} was unloaded; retry on another replica")
        inputs = self._checked_inputs(batch)
        if inputs.num_rows == 0:
            return pa.RecordBatch.from_pylist([], schema=self.output_schema)
        if self._serial is None:
            check(deadline, "scoring")
            result = component.predict(inputs)
        else:
            with self._serial:
                check(deadline, "scoring")  # the wait for the lock may have used it up
                result = component.predict(inputs)
        return self._checked_outputs(result, inputs.num_rows)

    def _checked_inputs(self, batch: Any) -> pa.RecordBatch:
        if isinstance(batch, pa.Table):
            batch = _as_batch(batch)
        if not isinstance(batch, pa.RecordBatch):
            raise InvalidArgument(f"predict takes a pyarrow RecordBatch, got {type(batch).__name__}")
        batch = self._split_tensor_column(batch)
        expected = self.input_schema.names
        missing = [n for n in expected if n not in batch.schema.names]
        if missing:
            raise InvalidArgument(f"missing input column(s) {missing}; the component's inputs are {expected}")
        extra = [n for n in batch.schema.names if n not in expected]
        if extra:
            raise InvalidArgument(f"unexpected column(s) {extra}; the component's inputs are {expected}")
        arrays = []
        for field in self.input_schema:
            column = batch.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise InvalidArgument(
                        f"column {field.name!r} has type {column.type}; the component takes {field.type}"
                    ) from err
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=self.input_schema)

    def _split_tensor_column(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """A single (rows, k) tensor column, as the data plane decodes a 2-D request, becomes
        one column per declared input when the component takes k floating-point inputs."""
        if batch.num_columns != 1 or not pa.types.is_fixed_size_list(batch.schema.field(0).type):
            return batch
        if batch.schema.names[0] in self.input_schema.names or not all(pa.types.is_floating(t) for t in self.input_schema.types):
            return batch
        from scoring_core.arrow_input import matrix_from_batch

        X = matrix_from_batch(batch, self.input_schema.names)  # InvalidArgument names the column if its width is off
        return pa.RecordBatch.from_arrays([pa.array(X[:, j]) for j in range(X.shape[1])], names=self.input_schema.names)

    def _checked_outputs(self, result: Any, rows: int) -> pa.RecordBatch:
        where = f"component {self.entry_point!r}"
        if isinstance(result, pa.Table):
            result = _as_batch(result)
        if not isinstance(result, pa.RecordBatch):
            raise MilepostError(f"{where} returned {type(result).__name__}; predict must return a pyarrow RecordBatch")
        if result.num_rows != rows:
            raise MilepostError(f"{where} returned {result.num_rows} rows for {rows}")
        if result.schema.names != self.output_schema.names:
            raise MilepostError(
                f"{where} returned columns {result.schema.names}; its manifest declares {self.output_schema.names}"
            )
        try:
            return pa.RecordBatch.from_arrays(
                [c.cast(f.type) for c, f in zip(result.columns, self.output_schema)], schema=self.output_schema
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise MilepostError(f"{where} returned columns of types {result.schema.types}: {err}") from err

    def close(self) -> None:
        """Call the component's close(), then forget its modules."""
        with self._close_lock:
            component, self._component = self._component, None
        if component is None:
            return
        try:
            if callable(getattr(component, "close", None)):
                component.close()
        finally:
            self._code.unload()


class PythonEngine(Engine):
    """Runs code bundles; refused unless allowed (see the module docstring)."""

    name = "python"
    flavors = (FLAVOR,)

    def __init__(self, allow_code: bool | None = None) -> None:
        self._allow_code = allow_code

    def allowed(self) -> bool:
        return self._allow_code if self._allow_code is not None else get_settings().allow_code_bundles

    def _refusal(self) -> str:
        return (
            "code bundles are not allowed on this node: the python engine would execute the bundle's code. "
            f"An operator allows it with {ALLOW_ENV}=1 (or PythonEngine(allow_code=True))"
        )

    def info(self) -> EngineInfo:
        import platform

        version = f"python {platform.python_version()}"
        if not self.allowed():
            return EngineInfo(self.name, version, False, self._refusal(), flavors=self.flavors)
        return EngineInfo(self.name, version, True, devices=("cpu",), flavors=self.flavors)

    def _open(self, bundle_dir: Path, expected_version: str = "") -> tuple[UserCode, dict[str, Any], str]:
        if not self.allowed():
            raise FailedPrecondition(self._refusal())
        from scoring_core import bundle

        version, files = bundle.read_bundle(bundle_dir)
        if expected_version and expected_version != version:
            raise DataLoss(f"the bundle has version {version[:12]}, expected {expected_version[:12]}")
        manifest = bundle.parse_manifest(files[bundle.MANIFEST])
        if manifest.get("flavor") != FLAVOR:
            raise Unimplemented(f"the bundle has flavor {shown(manifest.get('flavor'))}; the python engine runs {FLAVOR!r}")
        spec = manifest.get("python")
        if not isinstance(spec, dict) or not isinstance(spec.get("entry_point", ""), str):
            raise InvalidArgument("milepost.json: 'python' must name an entry_point")
        return UserCode(Path(bundle_dir), files, version), manifest, version

    def load(self, bundle_dir: Path, deployment: DeploymentSpec) -> LoadedModel:
        if deployment.device not in ("cpu", "auto") or deployment.half:
            raise InvalidArgument(f"device: the python engine runs on 'cpu', got {deployment.device!r} (half={deployment.half})")
        code, manifest, version = self._open(Path(bundle_dir), deployment.version)
        try:
            entry = manifest["python"].get("entry_point")
            if not entry:
                raise InvalidArgument("milepost.json names no entry_point to serve")
            cls = entry_points.resolve(entry, "entry_point", package=code.package)
            component = cls()
            component.load(Path(bundle_dir))
            return ComponentModel(code, component, manifest, version)
        except BaseException:
            code.unload()
            raise

    def run_stage(self, stage: StageSpec, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run a stage function ``fn(inputs, **params) -> dict``: from the code bundle at
        ``stage.bundle_dir`` (``entry`` a stage name listed in its manifest, or
        "module:function"), or, without a bundle, an installed "module:function" or a
        callable; either way only where code bundles are allowed."""
        from engines import stages

        if stage.bundle_dir is None:
            if not self.allowed():  # user code all the same: this engine runs none unless allowed
                raise FailedPrecondition(self._refusal())
            return stages.run_custom(stage, inputs)
        code, manifest, _ = self._open(Path(stage.bundle_dir))
        try:
            if not isinstance(stage.entry, str) or not stage.entry:
                raise InvalidArgument(f"stage {stage.name!r}: entry must name a stage of the bundle or 'module:function'")
            ref = manifest["python"].get("stages", {}).get(stage.entry, stage.entry)
            fn = entry_points.resolve(ref, f"stage {stage.name!r} entry", package=code.package)
            return stages.run_function(stage, fn, inputs)
        finally:
            code.unload()
