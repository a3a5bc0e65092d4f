"""Which input feature each column after the transforms comes from.

``column_map`` and ``encode`` stages make every output column from one input column, so a
contribution of an output column belongs to that input: contributions computed after them
fold back onto the input features exactly (they still sum to the margin). A stage whose
outputs mix columns (``row_norm``, or any other kind) cannot be folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from milepost.core.errors import FailedPrecondition


def stage_sources(stage: Any) -> np.ndarray:
    """For each output column of one transform stage, its input column."""
    if stage.kind == "column_map":
        return np.asarray(stage.source, np.int64)
    if stage.kind == "encode":
        widths = np.diff(np.asarray(stage._out_start, np.int64))
        return np.repeat(np.arange(widths.size), widths)  # type: ignore[arg-type]
    raise FailedPrecondition(
        f"feature transform {stage.kind!r} mixes input columns, so its outputs' contributions cannot be "
        "given back to the input features: explanations cover column_map and encode transforms")


def input_sources(transforms: Sequence[Any], n_features: int) -> np.ndarray:
    """For each column the model stage reads, the input feature it comes from."""
    sources = np.arange(n_features, dtype=np.int64)
    for stage in transforms:
        sources = sources[stage_sources(stage)]
    return sources
