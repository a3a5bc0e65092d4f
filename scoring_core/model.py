"""CompiledModel: a model ready to score, whatever library it came from.

It is a short pipeline of stages (optional feature transforms, then one model stage,
each a registered kind) plus what a server needs to know about it: feature names,
Arrow input and output schemas, the task and class labels, and free-form metadata.
It saves to, and loads from, a content-addressed bundle directory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from milepost.core.errors import DataLoss, InvalidArgument, Unimplemented
from scoring_core import bundle, linear_columns
from scoring_core.arrow_input import as_batch, float_columns, matrix_from_batch, matrix_from_data
from scoring_core.kinds import Stage, stage_from_manifest, stage_to_manifest
from scoring_core.linear import LinearModel
from scoring_core.string_inputs import StringColumn

FLAVOR = "scoring_core"
TASKS = ("classification", "regression")
_JSON_SCALARS = (str, int, float, bool)


class CompiledModel:
    """A compiled, immutable-weights model: ``predict`` for numpy/Arrow/pandas callers,
    ``predict_arrow`` for the serving path, ``save`` to write a bundle.

    Inputs: one float32 field per feature, or pa.string() for the categorical columns
    named in ``string_columns``. ``unused_columns`` are features the model was fitted
    with but never reads (a ColumnTransformer dropped them): they must be present, as
    for scikit-learn, but any values (strings too) are accepted and ignored. Output, one field: ``probabilities`` (a list of
    n_classes float64) for a classifier; for a regressor ``prediction`` (float64) when it
    gives one value per row, else ``output`` (a list of n_outputs float64). ``output_name``
    names it otherwise: a graph that names its own outputs (ONNX) keeps its name, as
    onnxruntime and Triton answer it.
    ``predict_ndim`` says whether ``predict`` returns (n,) or (n, n_outputs), as the
    source library does (scikit-learn regressors (n,), torch modules (n, out), a binary
    XGBoost or LightGBM Booster (n,) of P(class 1)), and ``predict_dtype`` its dtype
    (float32 for XGBoost and torch); the wire output stays as described above.

    Scoring is thread-safe: the stages hold no mutable state and every call allocates
    its own output.
    """

    flavor: str = FLAVOR

    def __init__(
        self,
        model: Stage,
        *,
        feature_names: Sequence[str],
        task: str,
        classes: Sequence[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        transforms: Sequence[Stage] = (),
        version: str | None = None,
        string_columns: Mapping[str, StringColumn] | None = None,
        predict_ndim: int | None = None,
        unused_columns: Sequence[str] = (),
        predict_dtype: str = "float64",
        output_name: str | None = None,
    ) -> None:
        feature_names = list(feature_names)
        _check_feature_names(feature_names)
        if task not in TASKS:
            raise InvalidArgument(f"task must be one of {TASKS}, got {task!r}")
        string_columns = dict(string_columns or {})
        unused = frozenset(unused_columns)
        strangers = [name for name in [*string_columns, *unused] if name not in feature_names]
        if strangers:
            raise InvalidArgument(f"string or unused columns {strangers!r} are not among the feature names")
        stages = [*transforms, model]
        width = len(feature_names)
        for stage in stages:
            if stage.n_features != width:
                raise InvalidArgument(
                    f"stage {stage.kind!r} takes {stage.n_features} features but receives {width}"
                )
            width = stage.n_outputs
        if task == "classification":
            if classes is None or len(classes) < 2:
                raise InvalidArgument("a classifier needs at least two class labels")
            classes = list(classes)
            if any(not isinstance(c, _JSON_SCALARS) for c in classes):
                raise InvalidArgument(f"class labels must be str, int, float or bool; got {classes!r}")
            if width != len(classes):
                raise InvalidArgument(f"the model gives {width} outputs for {len(classes)} classes")
            if predict_ndim not in (None, 1, 2) or (predict_ndim == 1 and len(classes) != 2):
                raise InvalidArgument("a classifier's predict gives (n, n_classes), or (n,) of P(class 1) for two "
                                      f"classes: predict_ndim must be 2 or (binary) 1, got {predict_ndim!r}")
            predict_ndim = predict_ndim or 2
            output = pa.field("probabilities", pa.list_(pa.float64(), len(classes)))
        else:
            if classes is not None:
                raise InvalidArgument("a regressor has no classes")
            if predict_ndim is None:
                predict_ndim = 1 if width == 1 else 2
            if predict_ndim not in (1, 2) or (predict_ndim == 1 and width != 1):
                raise InvalidArgument(
                    f"predict_ndim must be 2, or 1 for a single output; got {predict_ndim} for {width} outputs"
                )
            if width == 1:
                output = pa.field("prediction", pa.float64())
            else:
                output = pa.field("output", pa.list_(pa.float64(), width))
        self.model = model
        self.transforms = list(transforms)
        self.feature_names = feature_names
        self.n_features = len(feature_names)
        self.n_outputs = width
        self.task = task
        self.classes = classes
        self.predict_ndim = predict_ndim
        if predict_dtype not in ("float32", "float64"):
            raise InvalidArgument(f"predict_dtype must be 'float32' or 'float64', got {predict_dtype!r}")
        self.predict_dtype = predict_dtype
        self.string_columns = string_columns
        self.unused_columns = unused
        self.metadata = dict(metadata or {})
        self.version = version
        self.input_schema = pa.schema(
            [pa.field(name, pa.string() if name in string_columns else pa.float32()) for name in feature_names]
        )
        if output_name is not None:
            if not isinstance(output_name, str) or not output_name:
                raise InvalidArgument(f"output_name must be a non-empty string, got {output_name!r}")
            output = output.with_name(output_name)
        self.output_schema = pa.schema([output])
        # A bare linear model reads large batches of named columns in place (scoring_core.linear_columns).
        self._reads_columns = isinstance(model, LinearModel) and not transforms and not string_columns and not unused

    def __repr__(self) -> str:
        source = self.metadata.get("source", self.model.kind)
        return f"<CompiledModel {source} {self.task} n_features={self.n_features} version={self.version}>"

    def _score(self, X: np.ndarray) -> np.ndarray:
        for stage in self.transforms:
            X = stage.predict(X)
        out = self.model.predict(X)
        # A single-output stage may answer (n,), as its library's predict does.
        return out.reshape(-1, 1) if out.ndim == 1 else np.ascontiguousarray(out)

    @property
    def scores_matrices(self) -> bool:
        """Whether ``score_matrix`` takes this model's inputs: every feature a number."""
        return not self.string_columns

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """The (n, n_outputs) scores of ``X`` (n, n_features) float32, exactly the column
        ``predict_arrow`` answers for a tensor column of those values: the matrix lane's
        call (agent.dataplane), with no Arrow around it. Only where ``scores_matrices``."""
        return self._score(X)

    def predict(self, data: Any) -> np.ndarray:
        """Scores as the source library's default prediction gives them, shape and dtype: for
        scikit-learn classifiers predict_proba's (n, n_classes), for its regressors predict's
        (n,), for a binary XGBoost or LightGBM Booster Booster.predict's (n,) of P(class 1),
        for torch modules (n, out); float32 for XGBoost and torch, else float64.

        ``data``: a 2-D array (n, n_features), an Arrow Table or RecordBatch, or a
        pandas DataFrame with one column per feature (an object array or DataFrame
        when the model has string columns).
        """
        out = self._score(matrix_from_data(data, self.feature_names, self.string_columns, self.unused_columns))
        out = out if self.predict_ndim == 2 else out[:, -1]  # a regressor's one column; a binary Booster's P(class 1)
        return out.astype(self.predict_dtype, copy=False)

    def explain(self, data: Any) -> np.ndarray:
        """Per-feature contributions to the output margin (the raw score before the link),
        bias last, float64: (n, n_features + 1), or (n, n_groups, n_features + 1) for
        several margins, as XGBoost's ``pred_contribs``. Exact TreeSHAP for tree ensembles,
        coefficient times value for linear models, folded back through the feature
        transforms; FailedPrecondition for a model that cannot be explained
        (``scoring_core.explain``). ``data``: what ``predict`` takes."""
        from scoring_core import explain  # imported here: explain imports this module's users

        return explain.explain(self, data)

    def predict_arrow(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score a RecordBatch into one matching ``output_schema``.

        The batch holds either one column per feature, named per ``input_schema``, or a
        single fixed-size-list column of width n_features (a row-major tensor, read
        without a copy; only for models without string columns). Bad columns, and
        unknown categories where the encoder refuses them, raise InvalidArgument naming
        the column.
        """
        if not isinstance(batch, (pa.RecordBatch, pa.Table)):
            raise InvalidArgument(f"predict_arrow takes a pyarrow RecordBatch, got {type(batch).__name__}")
        batch = as_batch(batch)
        columns = (float_columns(batch, self.feature_names)
                   if self._reads_columns and batch.num_rows >= linear_columns.MIN_ROWS else None)
        if columns is not None:
            model = self.model
            assert isinstance(model, LinearModel)
            out = linear_columns.score_columns(columns, model.coef, model.intercept, model.link)
        else:
            out = self._score(matrix_from_batch(batch, self.feature_names, self.string_columns, self.unused_columns))
        if out.shape[1] > 1:
            values = pa.array(out.reshape(-1))
            column = pa.FixedSizeListArray.from_arrays(values, type=self.output_schema.field(0).type)
        else:
            column = pa.array(out[:, 0])
        return pa.RecordBatch.from_arrays([column], schema=self.output_schema)

    def _outputs_entry(self) -> list[dict[str, Any]]:
        shape = [self.n_outputs] if self.n_outputs > 1 else []
        return [{"name": self.output_schema.field(0).name, "type": "float64", "shape": shape}]

    def _inputs_entry(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name in self.feature_names:
            strings = self.string_columns.get(name)
            if name in self.unused_columns:
                entries.append({"name": name, "type": "float32", "unused": True})
            elif strings is None:
                entries.append({"name": name, "type": "float32"})
            else:
                entries.append({"name": name, "type": "string", "encoding": strings.to_json()})
        return entries

    def manifest_and_files(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The milepost.json content and every array file of this model's bundle."""
        files: dict[str, bytes] = {}
        transforms = []
        for i, stage in enumerate(self.transforms):
            entry, stage_files = stage_to_manifest(stage, f"transform{i}")
            transforms.append(entry)
            files.update(stage_files)
        model_entry, model_files = stage_to_manifest(self.model, "model")
        files.update(model_files)
        manifest = {
            "format_version": bundle.FORMAT_VERSION,
            "flavor": self.flavor,
            "task": self.task,
            "inputs": self._inputs_entry(),
            "outputs": self._outputs_entry(),
            "predict_ndim": self.predict_ndim,
            "predict_dtype": self.predict_dtype,
            "classes": self.classes,
            "transforms": transforms,
            "model": model_entry,
            "metadata": self.metadata,
        }
        try:
            files[bundle.MANIFEST] = bundle.manifest_bytes(manifest)
        except (TypeError, ValueError) as err:
            raise InvalidArgument(f"metadata must be JSON-able without NaN or infinity: {err}") from err
        return manifest, files

    def to(self, device: str) -> CompiledModel:
        """This model on ``device``: "cpu" is the model itself; "cuda" or "cuda:N" a
        ``scoring_core.cuda.DeviceModel`` with this interface, its stages on that GPU
        (FailedPrecondition where there is none)."""
        if device == "cpu":
            return self
        from scoring_core.cuda import to_device  # imported here: a CPU process never loads the CUDA backend

        return to_device(self, device)

    def save(self, path: str | Path) -> str:
        """Write the bundle directory at ``path`` and return its version (also set on
        ``self.version``). The same model always gives the same bytes and version."""
        _, files = self.manifest_and_files()
        self.version = bundle.write_bundle(path, files)
        return self.version


def _check_feature_names(names: list[str]) -> None:
    if not names:
        raise InvalidArgument("a model needs at least one feature")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise InvalidArgument(f"feature names must be non-empty strings, got {bad[:5]!r}")
    dups = sorted(n for n, count in Counter(names).items() if count > 1)
    if dups:
        raise InvalidArgument(f"duplicate feature name(s) {dups[:10]!r}")


def load(path: str | Path, *, version: str | None = None) -> CompiledModel:
    """Load a verified bundle directory. DataLoss when any file fails its hash, files are
    missing or extra, or ``version`` is given and differs from the content's version."""
    actual, files = bundle.read_bundle(path)
    if version is not None and version != actual:
        raise DataLoss(f"bundle {path} has version {actual}, expected {version}")
    if bundle.MANIFEST not in files:
        raise InvalidArgument(f"bundle {path} has no {bundle.MANIFEST}")
    manifest = bundle.parse_manifest(files[bundle.MANIFEST])
    return model_from_manifest(manifest, files, version=actual)


def model_from_manifest(manifest: dict[str, Any], files: dict[str, bytes], *, version: str | None) -> CompiledModel:
    """Rebuild a CompiledModel from a parsed manifest and the bundle's verified files."""
    fmt = manifest.get("format_version")
    if fmt != bundle.FORMAT_VERSION:
        raise Unimplemented(f"bundle format_version {fmt!r} is not supported (this build reads {bundle.FORMAT_VERSION})")
    flavor = manifest.get("flavor")
    if flavor != FLAVOR:
        raise Unimplemented(f"bundle flavor {flavor!r} is not run by scoring_core")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and "name" in i for i in inputs):
        raise InvalidArgument("milepost.json: 'inputs' must be a list of {name, type}")
    unsupported = [i["name"] for i in inputs if i.get("type") not in ("float32", "string")]
    if unsupported:
        raise Unimplemented(f"milepost.json: inputs {unsupported!r} are neither float32 nor string")
    string_columns = {
        i["name"]: StringColumn.from_json(i.get("encoding"), f"inputs[{i['name']!r}].encoding")
        for i in inputs
        if i.get("type") == "string"
    }
    transforms_entries = manifest.get("transforms", [])
    if not isinstance(transforms_entries, list):
        raise InvalidArgument("milepost.json: 'transforms' must be a list")
    transforms = [
        stage_from_manifest(entry, files, f"transforms[{i}]") for i, entry in enumerate(transforms_entries)
    ]
    model = stage_from_manifest(manifest.get("model"), files, "model")
    task: Any = manifest.get("task")  # JSON, checked by CompiledModel
    compiled = CompiledModel(
        model,
        feature_names=[i["name"] for i in inputs],
        task=task,
        classes=manifest.get("classes"),
        metadata=manifest.get("metadata") or {},
        transforms=transforms,
        version=version,
        string_columns=string_columns,
        predict_ndim=manifest.get("predict_ndim"),
        unused_columns=[i["name"] for i in inputs if i.get("unused") is True],
        predict_dtype=manifest.get("predict_dtype", "float64"),
        output_name=declared_output_name(manifest),
    )
    declared = manifest.get("outputs")
    expected = compiled._outputs_entry()
    if declared != expected:
        raise InvalidArgument(f"milepost.json: outputs {declared!r} do not match the model, which gives {expected!r}")
    return compiled


def declared_output_name(manifest: dict[str, Any]) -> str | None:
    """The one output name a core bundle's manifest declares (a graph's own for an ONNX
    model); None where it declares none readable (loading then checks the model's own)."""
    declared = manifest.get("outputs")
    if isinstance(declared, list) and len(declared) == 1 and isinstance(declared[0], dict):
        name = declared[0].get("name")
        return name if isinstance(name, str) and name else None
    return None
