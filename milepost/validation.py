"""Validation gates: score a model bundle on labelled data, measure it, and judge it against limits.

What `milepost validate` runs, usable as a CI step: the bundle is scored by the engine its
flavor names (the same dataset path as `milepost score-dataset`), so what is measured is
what would serve. Measures, from the library-default outputs:

- binary classifiers: AUC, and at ``threshold`` on P(classes[1]): false-positive rate,
  false-negative rate, accuracy; log loss (AUC and log loss as scoring_core.measures defines
  them). The positive class is the second class label, as predict_proba's column 1.
- multi-class classifiers: accuracy (argmax) and log loss.
- regressors: MAE and RMSE.

Gates and their verdicts are milepost.core.gates (the coordinator judges a recorded report
again by the same rule). The report (JSON) names the data by its SHA-256, every measure,
every gate with its value and verdict, and whether all passed.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from milepost.core import gates
from milepost.core.errors import InvalidArgument, shown
from scoring_core import measures
from scoring_core.model import declared_output_name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def score(bundle_dir: Path, data: Path, label: str,
          progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], np.ndarray, pa.Table]:
    """(manifest, the label column, the model's outputs) for every row of ``data`` (Parquet);
    ``progress(rows)`` as the engine goes."""
    from engines import registry
    from engines.base import DatasetJob
    from scoring_core import bundle

    names = pq.read_schema(data).names
    if label not in names:
        raise InvalidArgument(f"--label {shown(label)} is not a column of {data}; its columns: {names[:20]}")
    manifest = bundle.read_manifest(bundle_dir)
    engine = registry.engine_for(str(manifest.get("flavor", "")), "", online=False)
    with tempfile.TemporaryDirectory(prefix="milepost-validate-") as tmp:
        sink = Path(tmp) / "scored.parquet"
        engine.score_dataset(bundle_dir, DatasetJob(source=str(data), sink=str(sink), keep=(label,)), progress)
        scored = pq.read_table(sink)
    labels = scored.column(label)
    if labels.null_count:
        raise InvalidArgument(f"label column {shown(label)} has {labels.null_count} missing values; "
                              "validation needs a label on every row")
    return manifest, labels.to_numpy(zero_copy_only=False), scored.drop_columns([label])


def measure(manifest: dict[str, Any], labels: np.ndarray, outputs: pa.Table, threshold: float = 0.5) -> dict[str, Any]:
    """The measures of the module docstring for one model's outputs against the labels."""
    if len(labels) == 0:
        raise InvalidArgument("the validation data has no rows")
    if manifest.get("task") == "classification" or "probabilities" in outputs.column_names:
        return _classifier(manifest, labels, outputs, threshold)
    values = np.asarray(outputs.column(outputs.column_names[0]).to_numpy(zero_copy_only=False), dtype=np.float64)
    if values.ndim != 1:
        raise InvalidArgument("validation measures regressors with one output per row")
    return {"rows": len(labels), **measures.errors(values, _numeric(labels))}


def _probabilities(manifest: dict[str, Any], outputs: pa.Table) -> str:
    """The column of a classifier's probabilities: the one output a core bundle declares (a
    graph's own name for an ONNX model), else "probabilities"."""
    name = declared_output_name(manifest)
    if name is not None and name in outputs.column_names:
        return name
    if "probabilities" not in outputs.column_names:
        raise InvalidArgument(f"the model's outputs {outputs.column_names} have no probabilities column to measure")
    return "probabilities"


def _numeric(labels: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"a regressor's label column must be numeric: {err}") from err


def _classifier(manifest: dict[str, Any], labels: np.ndarray, outputs: pa.Table, threshold: float) -> dict[str, Any]:
    classes = list(manifest.get("classes") or [])
    column = outputs.column(_probabilities(manifest, outputs)).combine_chunks()
    probabilities = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(labels), -1)
    if not classes:
        classes = list(range(probabilities.shape[1]))
    index = {_key(c): i for i, c in enumerate(classes)}
    found = [index.get(_key(v), -1) for v in labels.tolist()]
    strangers = sorted({str(v) for v, i in zip(labels.tolist(), found) if i < 0})
    if strangers:
        raise InvalidArgument(f"labels {strangers[:10]} are not among the model's classes {classes}")
    truth = np.asarray(found)
    chosen = probabilities[np.arange(len(truth)), truth]
    out: dict[str, Any] = {"rows": len(truth), "classes": classes, "log_loss": measures.log_loss(chosen)}
    if len(classes) != 2:
        out["accuracy"] = float(np.mean(np.argmax(probabilities, axis=1) == truth))
        return out
    positive = truth == 1
    p1 = probabilities[:, 1]
    predicted = p1 >= threshold
    negatives, positives = int((~positive).sum()), int(positive.sum())
    out.update(
        threshold=threshold, positives=positives, negatives=negatives,
        accuracy=float(np.mean(predicted == positive)),
        fpr=float((predicted & ~positive).sum() / negatives) if negatives else None,
        fnr=float((~predicted & positive).sum() / positives) if positives else None,
        auc=_none_if_nan(measures.auc(p1, positive)), log_loss=measures.binary_log_loss(p1, positive),
    )
    return out


def _key(value: Any) -> Any:
    """Labels and class labels compared as values: 1, 1.0 and True are one class; "1" is another."""
    return float(value) if isinstance(value, (bool, int, float, np.number)) else str(value)


def _none_if_nan(value: float) -> float | None:
    """None where a measure is undefined (AUC of one class): JSON has no NaN."""
    return None if math.isnan(value) else value


def report(model: str, data: Path, label: str, measured: dict[str, Any], verdicts: list[dict[str, Any]],
           against: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model, "data": {"path": str(data), "sha256": file_sha256(data)}, "label": label,
        "metrics": measured, "gates": verdicts, "passed": gates.passed(verdicts),
    }
    if against is not None:
        out["against"] = {"model": against[0], "metrics": against[1]}
    return out
