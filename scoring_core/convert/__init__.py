"""From a trained estimator of some library to scoring_core stages.

Each converter module says which estimator classes it takes (by exact class: a user's
subclass may override prediction) and turns one into a ``Converted``. More modules
(tree ensembles) join through ``register_converter``; a Pipeline's final estimator is
converted through this same registry, so every registered estimator also works at the
end of a Pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from milepost.core.errors import Unimplemented
from scoring_core.kinds import Stage
from scoring_core.string_inputs import StringColumn


@dataclass
class Converted:
    """What a converter learned from an estimator: the stage(s) and their meaning."""

    model: Stage
    task: str
    classes: list[Any] | None
    source: str  # public dotted name, e.g. "sklearn.linear_model.LogisticRegression"
    feature_names: list[str] | None = None  # the estimator's own names, when it has them
    transforms: list[Stage] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    # Input columns (by index) that hold strings, read as codes into their vocabulary.
    string_inputs: dict[int, StringColumn] = field(default_factory=dict)
    # Input columns (by index) the model never reads: present, but any type is accepted.
    unused_inputs: set[int] = field(default_factory=set)
    # 1: predict gives (n,) (scikit-learn regressors); 2: (n, n_outputs); None: by task.
    predict_ndim: int | None = None


@dataclass(frozen=True)
class _Converter:
    supports: Callable[[Any], bool]
    convert: Callable[[Any], Converted]
    supported_names: tuple[str, ...]


_CONVERTERS: list[_Converter] = []


def register_converter(
    supports: Callable[[Any], bool], convert: Callable[[Any], Converted], supported_names: tuple[str, ...]
) -> None:
    """Add a converter; ``supported_names`` are listed when an estimator is refused."""
    _CONVERTERS.append(_Converter(supports, convert, tuple(supported_names)))


def supported_estimators() -> list[str]:
    return sorted(name for c in _CONVERTERS for name in c.supported_names)


def convert(estimator: Any) -> Converted:
    """Convert ``estimator`` with the first converter that takes it, or Unimplemented
    naming the estimator's class and everything that is supported."""
    for converter in _CONVERTERS:
        if converter.supports(estimator):
            return converter.convert(estimator)
    cls = type(estimator)
    raise Unimplemented(
        f"scoring_core cannot compile {cls.__name__} ({cls.__module__}.{cls.__qualname__}); "
        f"supported: {', '.join(supported_estimators())}"
    )


# Each registers itself; none imports its library at import time.
from scoring_core.convert import sklearn_linear, sklearn_mlp, sklearn_pipeline, torch_sequential  # noqa: E402

__all__ = [
    "Converted",
    "convert",
    "register_converter",
    "supported_estimators",
    "sklearn_linear",
    "sklearn_mlp",
    "sklearn_pipeline",
    "torch_sequential",
]
