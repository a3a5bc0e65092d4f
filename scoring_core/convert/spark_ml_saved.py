"""Reading a directory written by Spark ML's ``save`` (``MLWriter``) without a JVM.

Spark writes every stage the same way: ``metadata/part-*`` holds one JSON line (the
Scala class, the uid, ``paramMap`` and ``defaultParamMap``, and for tree models
``numFeatures``/``numClasses``/``numTrees``); ``data/`` (when the stage learned
something) is a Parquet dataset whose vector and matrix columns are Spark's user-defined
types, stored as structs (``type`` 0 sparse or 1 dense, ``size``/``indices``/``values``;
matrices add ``numRows``, ``numCols``, ``colPtrs``, ``rowIndices``, ``isTransposed``);
tree ensembles add ``treesMetadata/`` (tree id, its metadata, its weight). A
``PipelineModel`` keeps its stages under ``stages/<index>_<uid>``, in the order its
``stageUids`` give. pyarrow reads the Parquet parts (it skips ``_SUCCESS`` and the
``.crc`` files, whose names start with ``_`` and ``.``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from milepost.core.errors import InvalidArgument

SPARK_ML = "org.apache.spark.ml."
PIPELINE_MODEL = SPARK_ML + "PipelineModel"


@dataclass
class SavedStage:
    """One saved stage: its Scala class, parameters (defaults overlaid by those set),
    the rest of its metadata, and its Parquet tables, read when first asked for."""

    path: Path
    cls: str
    uid: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    _tables: dict[str, pa.Table | None] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The class without its package, e.g. ``LogisticRegressionModel``."""
        return self.cls.rsplit(".", 1)[-1]

    def table(self, part: str = "data") -> pa.Table:
        """The Parquet dataset ``part`` of this stage (InvalidArgument when absent)."""
        if part not in self._tables:
            self._tables[part] = _read_parquet(self.path / part) if (self.path / part).is_dir() else None
        found = self._tables[part]
        if found is None:
            raise InvalidArgument(f"saved Spark stage {self.uid}: no {part}/ directory under {self.path}")
        return found

    def row(self) -> dict[str, Any]:
        """The single row of ``data/``, where a stage keeps what it learned."""
        rows = self.table().to_pylist()
        if len(rows) != 1:
            raise InvalidArgument(f"saved Spark stage {self.uid}: data/ has {len(rows)} rows, expected 1")
        return rows[0]


def is_saved_spark_model(path: Path) -> bool:
    """Whether ``path`` is a directory Spark ML saved (its metadata names a Spark ML class)."""
    try:
        return read_metadata(path)["class"].startswith(SPARK_ML)
    except (InvalidArgument, OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON line of ``path/metadata/part-*``."""
    parts = sorted((path / "metadata").glob("part-*")) if (path / "metadata").is_dir() else []
    for part in parts:
        text = part.read_text(encoding="utf-8").strip()
        if text:
            try:
                doc = json.loads(text.splitlines()[0])
            except ValueError as err:
                raise InvalidArgument(f"saved Spark model {path}: metadata is not JSON: {err}") from err
            if not isinstance(doc, dict):
                raise InvalidArgument(f"saved Spark model {path}: metadata is not a JSON object")
            return doc
    raise InvalidArgument(f"{path} is not a saved Spark ML model: no metadata/part-* file")


def read_stage(path: Path) -> SavedStage:
    meta = read_metadata(path)
    params = {**(meta.get("defaultParamMap") or {}), **(meta.get("paramMap") or {})}
    return SavedStage(path, str(meta.get("class", "")), str(meta.get("uid", "")), params, meta)


def pipeline_stages(stage: SavedStage) -> list[SavedStage]:
    """A PipelineModel's stages, in order, nested PipelineModels flattened (Spark runs
    them as one sequence too)."""
    uids = stage.params.get("stageUids")
    if not isinstance(uids, list):
        raise InvalidArgument(f"saved PipelineModel {stage.path}: metadata has no stageUids")
    found = {d.name.split("_", 1)[-1]: d for d in (stage.path / "stages").iterdir() if d.is_dir()} \
        if (stage.path / "stages").is_dir() else {}
    stages: list[SavedStage] = []
    for uid in uids:
        if uid not in found:
            raise InvalidArgument(f"saved PipelineModel {stage.path}: stage {uid} has no directory under stages/")
        child = read_stage(found[uid])
        stages.extend(pipeline_stages(child) if child.cls == PIPELINE_MODEL else [child])
    return stages


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise InvalidArgument(f"saved Spark model: cannot read the Parquet data in {path}: {err}") from err


def vector(value: Any, where: str) -> np.ndarray:
    """A Spark ``VectorUDT`` struct as a dense float64 array."""
    if not isinstance(value, dict) or value.get("type") not in (0, 1):
        raise InvalidArgument(f"{where}: not a Spark vector")
    values = np.asarray(value["values"], np.float64)
    if value["type"] == 1:
        return values
    dense = np.zeros(int(value["size"]), np.float64)
    dense[np.asarray(value["indices"], np.int64)] = values
    return dense


def matrix(value: Any, where: str) -> np.ndarray:
    """A Spark ``MatrixUDT`` struct as a dense (numRows, numCols) float64 array."""
    if not isinstance(value, dict) or value.get("type") not in (0, 1):
        raise InvalidArgument(f"{where}: not a Spark matrix")
    rows, cols = int(value["numRows"]), int(value["numCols"])
    values = np.asarray(value["values"], np.float64)
    transposed = bool(value["isTransposed"])
    if value["type"] == 1:  # column-major, or row-major when transposed
        return values.reshape(rows, cols) if transposed else values.reshape(cols, rows).T.copy()
    # Compressed sparse columns (rows, when transposed): colPtrs over the outer dimension.
    outer, inner = (rows, cols) if transposed else (cols, rows)
    ptrs = np.asarray(value["colPtrs"], np.int64)
    index = np.asarray(value["rowIndices"], np.int64)
    dense = np.zeros((outer, inner), np.float64)
    for o in range(outer):
        dense[o, index[ptrs[o]:ptrs[o + 1]]] = values[ptrs[o]:ptrs[o + 1]]
    return dense if transposed else dense.T.copy()
