"""From a trained estimator of some library to scoring_core stages.

``CLASS_CONVERTERS`` and ``FILE_CONVERTERS`` below are the one table of what
``scoring_core.compile`` takes; nothing registers itself by being imported. A class row
names a package, the classes it takes there, and the converter: by exact class, defined
in that package or a module below it, so a user's subclass (which may override
prediction) is refused. No two rows can take the same class (checked as the table is
built), so the order of the rows does not matter. A file row takes a model file by its
suffix (a sniff of its content tells rows that share a suffix apart), or a model
directory by a sniff of its content. A Pipeline's final estimator is converted through
this same table, so every estimator listed also works at the end of a Pipeline.

Each converter module reads its estimator from fitted attributes or the library's own
non-executable dump and imports the library only when it is handed one of its objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from scoring_core.convert import (
    boosters,
    catboost_json,
    onnx_graph,
    sklearn_linear,
    sklearn_mlp,
    sklearn_pipeline,
    sklearn_trees,
    spark_ml,
    torch_sequential,
)
from scoring_core.convert.converted import Converted, unsupported
from scoring_core.convert.lightgbm_text import from_lightgbm_text
from scoring_core.convert.sklearn_trees import from_sklearn
from scoring_core.convert.xgboost_json import from_xgboost_json

Converter = Callable[[Any], Converted]


@dataclass(frozen=True)
class ClassConverter:
    """Takes the classes ``names`` (every class, when None) of ``package``."""

    package: str
    names: tuple[str, ...] | None
    convert: Converter
    listed: tuple[str, ...] | None = None  # named when an estimator is refused; default package.name

    def takes(self, cls: type) -> bool:
        module = cls.__module__
        inside = module == self.package or module.startswith(self.package + ".")
        return inside and (self.names is None or cls.__name__ in self.names)

    def overlaps(self, other: ClassConverter) -> bool:
        a, b = self.package + ".", other.package + "."
        if not (a.startswith(b) or b.startswith(a)):
            return False
        return self.names is None or other.names is None or bool(set(self.names) & set(other.names))

    def supported(self) -> tuple[str, ...]:
        if self.listed is not None:
            return self.listed
        return tuple(f"{self.package}.{name}" for name in self.names or ())


@dataclass(frozen=True)
class FileConverter:
    """Takes a path to an existing file whose suffix is one of ``suffixes`` (lower case)
    and, if ``sniff`` is given, whose content it accepts; with ``directory``, a path to an
    existing directory (any name) that ``sniff`` accepts. Several rows may take one
    suffix when all but one have a sniff: those are asked first, the one without last."""

    suffixes: tuple[str, ...]
    convert: Converter
    listed: str
    sniff: Callable[[Path], bool] | None = None
    directory: bool = False


def _pipeline(pipeline: Any) -> Converted:
    return sklearn_pipeline.convert(pipeline, convert)


CLASS_CONVERTERS: tuple[ClassConverter, ...] = (
    ClassConverter(sklearn_linear.PACKAGE, sklearn_linear.NAMES, sklearn_linear.convert),
    ClassConverter(sklearn_mlp.PACKAGE, sklearn_mlp.NAMES, sklearn_mlp.convert),
    ClassConverter("sklearn.tree", sklearn_trees.TREE_NAMES, sklearn_trees.convert),
    ClassConverter("sklearn.ensemble", sklearn_trees.ENSEMBLE_NAMES, sklearn_trees.convert),
    ClassConverter("sklearn.pipeline", ("Pipeline",), _pipeline),
    # Refused there with a reason: a ColumnTransformer alone only transforms.
    ClassConverter("sklearn.compose", ("ColumnTransformer",), _pipeline, listed=()),
    ClassConverter("torch.nn.modules", ("Sequential",), torch_sequential.convert, listed=("torch.nn.Sequential",)),
    ClassConverter("xgboost", None, boosters.convert_xgboost,
                   listed=("xgboost.Booster", "xgboost.XGBClassifier", "xgboost.XGBRegressor")),
    ClassConverter("lightgbm", None, boosters.convert_lightgbm,
                   listed=("lightgbm.Booster", "lightgbm.LGBMClassifier", "lightgbm.LGBMRegressor")),
    ClassConverter(onnx_graph.PACKAGE, onnx_graph.NAMES, onnx_graph.convert, listed=("onnx.ModelProto",)),
    ClassConverter("pyspark.ml", None, spark_ml.convert_object, listed=spark_ml.LISTED),
    ClassConverter("catboost", None, catboost_json.convert,
                   listed=("catboost.CatBoost", "catboost.CatBoostClassifier", "catboost.CatBoostRegressor")),
)
FILE_CONVERTERS: tuple[FileConverter, ...] = (
    FileConverter((".json",), boosters.convert_xgboost, "XGBoost JSON model file"),
    FileConverter((".txt", ".model"), boosters.convert_lightgbm, "LightGBM text model file", boosters.is_lightgbm_text),
    FileConverter((".onnx",), onnx_graph.convert_file, "ONNX model file"),
    FileConverter((".json",), catboost_json.convert, "CatBoost JSON model file", catboost_json.is_catboost_json),
    FileConverter((), spark_ml.convert_path, "Spark ML model directory (PipelineModel.save)", spark_ml.is_saved_model,
                  directory=True),
)


def _by_suffix(rows: tuple[FileConverter, ...]) -> dict[str, tuple[FileConverter, ...]]:
    """Per suffix, the file rows that take it, the one without a sniff (at most one) last."""
    table: dict[str, tuple[FileConverter, ...]] = {}
    for row in rows:
        for suffix in () if row.directory else row.suffixes:
            taken = table.get(suffix, ())
            if row.sniff is None and any(r.sniff is None for r in taken):
                raise RuntimeError(f"converter table: two file converters take {suffix!r} without a sniff")
            table[suffix] = tuple(sorted((*taken, row), key=lambda r: r.sniff is None))
    return table


def _check_disjoint(rows: tuple[ClassConverter, ...]) -> None:
    for a, b in combinations(rows, 2):
        if a.overlaps(b):
            raise RuntimeError(f"converter table: {a.package} {a.names} and {b.package} {b.names} overlap")


_check_disjoint(CLASS_CONVERTERS)
_BY_SUFFIX = _by_suffix(FILE_CONVERTERS)
_DIRECTORY_ROWS = tuple(row for row in FILE_CONVERTERS if row.directory and row.sniff is not None)


def supported_estimators() -> list[str]:
    """Everything the table takes, as the refusal lists it."""
    names = [name for row in CLASS_CONVERTERS for name in row.supported()]
    return sorted(names + [row.listed for row in FILE_CONVERTERS])


def converter_for(estimator: Any) -> Converter | None:
    """The one converter that takes ``estimator``, or None."""
    if isinstance(estimator, (str, os.PathLike)):
        path = Path(estimator)
        rows = _DIRECTORY_ROWS if path.is_dir() else _BY_SUFFIX.get(path.suffix.lower(), ()) if path.is_file() else ()
        for file_row in rows:
            if file_row.sniff is None or file_row.sniff(path):
                return file_row.convert
        return None
    cls = type(estimator)
    for row in CLASS_CONVERTERS:  # at most one takes it: _check_disjoint
        if row.takes(cls):
            return row.convert
    return None


def convert(estimator: Any) -> Converted:
    """Convert ``estimator`` with the converter that takes it, or Unimplemented naming the
    estimator's class and everything that is supported."""
    converter = converter_for(estimator)
    if converter is None:
        raise unsupported(estimator, supported_estimators())
    return converter(estimator)


__all__ = [
    "CLASS_CONVERTERS",
    "FILE_CONVERTERS",
    "ClassConverter",
    "Converted",
    "FileConverter",
    "convert",
    "converter_for",
    "from_lightgbm_text",
    "from_sklearn",
    "from_xgboost_json",
    "supported_estimators",
]
