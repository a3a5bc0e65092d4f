"""What a converter gives ``scoring_core.compile``: the stages of one estimator and their meaning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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
    # 1: predict gives (n,) (scikit-learn regressors; a binary Booster's P(class 1)); 2: (n, n_outputs);
    # None: by task.
    predict_ndim: int | None = None
    # The dtype of the source library's predict: float64 (scikit-learn, LightGBM), float32 (XGBoost, torch).
    predict_dtype: str = "float64"
    # The output's name where the source names it (an ONNX graph's output); None: by task.
    output_name: str | None = None


def unsupported(obj: Any, supported: Iterable[str], noun: str = "") -> Unimplemented:
    """The refusal of an object no converter (``noun``: no ``noun`` compiler) takes,
    naming its class and listing what is supported."""
    cls = type(obj)
    what, listed = (f"the {noun} ", f"supported {noun}s") if noun else ("", "supported")
    return Unimplemented(
        f"scoring_core cannot compile {what}{cls.__name__} ({cls.__module__}.{cls.__qualname__}); "
        f"{listed}: {', '.join(supported)}"
    )
