"""Validation gates: score a model bundle on labelled data, measure it, and judge it against limits.

What `milepost validate` runs, usable as a CI step: the bundle is scored by the engine its
flavor names (the same dataset path as `milepost score-dataset`), so what is measured is
what would serve. Measures, from the library-default outputs:

- binary classifiers: AUC, and at ``threshold`` on P(classes[1]): false-positive rate,
  false-negative rate, accuracy; log loss (AUC and log loss as scoring_core.measures defines
  them). The positive class is the second class label, as predict_proba's column 1.
- multi-class classifiers: accuracy (argmax) and log loss.
- regressors: MAE and RMSE.

A gate is a limit on one measure (``max_fpr=0.05``); with a baseline (``--against``) each
measure may also be at most ``max_regression`` worse than the baseline's: absolute for AUC,
rates and accuracy, relative for errors and log loss. The report (JSON) names the data by
its SHA-256, every measure, every gate with its value and verdict, and whether all passed.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from milepost.core.errors import InvalidArgument, shown
from scoring_core import measures

HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "fpr": False, "fnr": False, "log_loss": False,
                    "mae": False, "rmse": False}
RELATIVE = {"log_loss", "mae", "rmse"}  # regressions of these are judged as a share of the baseline


@dataclass(frozen=True)
class Gates:
    """Limits on the measures; None: not gated."""

    max_fpr: float | None = None
    max_fnr: float | None = None
    min_auc: float | None = None
    min_accuracy: float | None = None
    max_log_loss: float | None = None
    max_mae: float | None = None
    max_rmse: float | None = None
    max_regression: float | None = None  # with a baseline: how much worse than it each measure may be

    def limits(self) -> list[tuple[str, str, float]]:
        """(gate, measure, limit) of each limit set."""
        return [(gate, gate.split("_", 1)[1], value) for gate, value in asdict(self).items()
                if value is not None and gate != "max_regression"]


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


def _numeric(labels: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"a regressor's label column must be numeric: {err}") from err


def _classifier(manifest: dict[str, Any], labels: np.ndarray, outputs: pa.Table, threshold: float) -> dict[str, Any]:
    classes = list(manifest.get("classes") or [])
    column = outputs.column("probabilities").combine_chunks()
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


def judge(measured: dict[str, Any], gates: Gates, baseline: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every gate set, with the value it saw and whether it passed."""
    verdicts = []
    for gate, name, limit in gates.limits():
        value = measured.get(name)
        if name not in measured:
            raise InvalidArgument(f"--{gate.replace('_', '-')} does not apply to this model: it measures "
                                  f"{sorted(k for k in measured if k in HIGHER_IS_BETTER)}")
        passed = value is not None and (value >= limit if HIGHER_IS_BETTER[name] else value <= limit)
        verdicts.append({"gate": gate, "limit": limit, "value": value, "passed": passed})
    if baseline is not None and gates.max_regression is not None:
        allowed = gates.max_regression
        for name, higher in HIGHER_IS_BETTER.items():
            ours, theirs = measured.get(name), baseline.get(name)
            if ours is None or theirs is None:
                continue
            worse = (theirs - ours) if higher else (ours - theirs)
            if name in RELATIVE:
                worse = worse / theirs if theirs > 0 else (0.0 if worse <= 0 else math.inf)
            verdicts.append({"gate": f"regression_{name}", "limit": allowed, "value": worse,
                             "baseline": theirs, "passed": worse <= allowed})
    return verdicts


def report(model: str, data: Path, label: str, measured: dict[str, Any], verdicts: list[dict[str, Any]],
           against: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model, "data": {"path": str(data), "sha256": file_sha256(data)}, "label": label,
        "metrics": measured, "gates": verdicts, "passed": all(v["passed"] for v in verdicts),
    }
    if against is not None:
        out["against"] = {"model": against[0], "metrics": against[1]}
    return out
