"""CompiledModel: a model ready to score, whatever library it came from.

It is a short pipeline of stages (optional feature transforms, then one model stage,
each a registered kind) plus what a server needs to know about it: feature names,
Arrow input and output schemas, the task and class labels, and free-form metadata.
It saves to, and loads from, a content-addressed bundle directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from milepost.errors import DataLoss, InvalidArgument, Unimplemented
from scoring_core import bundle
from scoring_core.arrow_input import as_batch, matrix_from_batch, matrix_from_data
from scoring_core.kinds import Stage, stage_from_manifest, stage_to_manifest

FLAVOR = "scoring_core"
TASKS = ("classification", "regression")
_JSON_SCALARS = (str, int, float, bool)


class CompiledModel:
    """A compiled, immutable-weights model: ``predict`` for numpy/Arrow/pandas callers,
    ``predict_arrow`` for the serving path, ``save`` to write a bundle.

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
    ) -> None:
        feature_names = list(feature_names)
        _check_feature_names(feature_names)
        if task not in TASKS:
            raise InvalidArgument(f"task must be one of {TASKS}, got {task!r}")
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
            output = pa.field("probabilities", pa.list_(pa.float64(), len(classes)))
        else:
            if classes is not None:
                raise InvalidArgument("a regressor has no classes")
            if width != 1:
                raise InvalidArgument(f"a regressor must give one output, this one gives {width}")
            output = pa.field("prediction", pa.float64())
        self.model = model
        self.transforms = list(transforms)
        self.feature_names = feature_names
        self.n_features = len(feature_names)
        self.task = task
        self.classes = classes
        self.metadata = dict(metadata or {})
        self.version = version
        self.input_schema = pa.schema([pa.field(name, pa.float32()) for name in feature_names])
        self.output_schema = pa.schema([output])

    def __repr__(self) -> str:
        source = self.metadata.get("source", self.model.kind)
        return f"<CompiledModel {source} {self.task} n_features={self.n_features} version={self.version}>"

    def _score(self, X: np.ndarray) -> np.ndarray:
        for stage in self.transforms:
            X = stage.predict(X)
        out = self.model.predict(X)
        # A single-output stage may answer (n,), as its library's predict does.
        return out.reshape(-1, 1) if out.ndim == 1 else out

    def predict(self, data: Any) -> np.ndarray:
        """Scores as the source library's default prediction gives them: for classifiers
        predict_proba's (n, n_classes), for regressors predict's (n,); float64.

        ``data``: a 2-D array (n, n_features), an Arrow Table or RecordBatch, or a
        pandas DataFrame with one column per feature.
        """
        out = self._score(matrix_from_data(data, self.feature_names))
        return out if self.task == "classification" else out[:, 0]

    def predict_arrow(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score a RecordBatch into one matching ``output_schema``.

        The batch holds either one column per feature, named per ``input_schema``, or a
        single fixed-size-list column of width n_features (a row-major tensor, read
        without a copy). Bad columns raise InvalidArgument naming them.
        """
        if not isinstance(batch, (pa.RecordBatch, pa.Table)):
            raise InvalidArgument(f"predict_arrow takes a pyarrow RecordBatch, got {type(batch).__name__}")
        out = self._score(matrix_from_batch(as_batch(batch), self.feature_names))
        if self.task == "classification":
            values = pa.array(out.reshape(-1))
            column = pa.FixedSizeListArray.from_arrays(values, type=self.output_schema.field(0).type)
        else:
            column = pa.array(out[:, 0])
        return pa.RecordBatch.from_arrays([column], schema=self.output_schema)

    def _outputs_entry(self) -> list[dict[str, Any]]:
        shape = [len(self.classes)] if self.task == "classification" else []
        return [{"name": self.output_schema.field(0).name, "type": "float64", "shape": shape}]

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
            "inputs": [{"name": name, "type": "float32"} for name in self.feature_names],
            "outputs": self._outputs_entry(),
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
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})
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
    unsupported = [i["name"] for i in inputs if i.get("type") != "float32"]
    if unsupported:
        raise Unimplemented(f"milepost.json: inputs {unsupported!r} are not float32")
    transforms_entries = manifest.get("transforms", [])
    if not isinstance(transforms_entries, list):
        raise InvalidArgument("milepost.json: 'transforms' must be a list")
    transforms = [
        stage_from_manifest(entry, files, f"transforms[{i}]") for i, entry in enumerate(transforms_entries)
    ]
    model = stage_from_manifest(manifest.get("model"), files, "model")
    compiled = CompiledModel(
        model,
        feature_names=[i["name"] for i in inputs],
        task=manifest.get("task"),
        classes=manifest.get("classes"),
        metadata=manifest.get("metadata") or {},
        transforms=transforms,
        version=version,
    )
    declared = manifest.get("outputs")
    expected = compiled._outputs_entry()
    if declared != expected:
        raise InvalidArgument(f"milepost.json: outputs {declared!r} do not match the model, which gives {expected!r}")
    return compiled
