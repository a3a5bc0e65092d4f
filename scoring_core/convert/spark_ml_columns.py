"""Spark columns as they flow through a pipeline, compiled into ``column_map`` and ``encode`` stages.

Spark's feature stages read and write named columns (numbers, or vectors of numbers);
the core's stages map one float matrix to the next. ``Flow`` keeps, for each Spark
column still to be read, its values as columns of the matrix the stages built so far
give, each with a pending ``column_map`` chain (fill, then center, divisor, factor,
offset): imputers and scalers only extend chains, so an imputer and a scaler after it
cost one pass; a chain is computed when the next step cannot extend it, when an encoder
needs its input as a plain column, and at the end. Each step rounds as it stores, so
fusing steps into one op changes no value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument
from scoring_core.kinds import Stage
from scoring_core.transforms import ERROR, IGNORE, ONE_HOT, ORDINAL, PASS, VALUE, Encode, column_map

_CHAIN = ("fill", "center", "divisor", "factor", "offset")  # column_map's order
_IDENTITY = {"center": 0.0, "divisor": 1.0, "factor": 1.0, "offset": 0.0}


@dataclass(frozen=True)
class Value:
    """One value of a Spark column: matrix column ``source`` through a pending column_map
    chain (``fill``, ``center``, ``divisor``, ``factor``, ``offset``, in that order)."""

    source: int
    chain: tuple[tuple[str, float], ...] = ()

    def takes(self, op: dict[str, float]) -> bool:
        """Whether ``op`` (keys in chain order) can follow the pending chain in one column_map op."""
        return not self.chain or not op or _CHAIN.index(self.chain[-1][0]) < _CHAIN.index(next(iter(op)))


class Flow:
    """The stages built so far, the width of the matrix they give, and each live Spark
    column's values in it. ``live_after`` (set by the caller before each Spark stage) names
    the columns read after it: the others may be dropped or encoded in place."""

    def __init__(self, width: int, columns: dict[str, list[Value]]) -> None:
        self.width = width
        self.columns = columns
        self.stages: list[Stage] = []
        self.live_after: set[str] = set()  # the columns later stages (or the model) read

    def read(self, name: str, who: str, width: int | None = None) -> list[Value]:
        values = self.columns[name]
        if width is not None and len(values) != width:
            raise InvalidArgument(f"{who} takes {width} values but column {name!r} holds {len(values)}")
        return values

    def affine(self, source: str, target: str, ops: list[dict[str, float]], who: str) -> None:
        """``target`` = each value of ``source`` through its op (a piece of the chain)."""
        ops = [{k: v for k, v in op.items() if _IDENTITY.get(k) != v} for op in ops]
        if not all(e.takes(op) for e, op in zip(self.read(source, who, len(ops)), ops)):
            self.materialise()
        self.columns[target] = [Value(e.source, e.chain + tuple(op.items())) for e, op in zip(self.columns[source], ops)]

    def materialise(self, extra: Sequence[Value] = ()) -> list[Value]:
        """Compute every live value (once each) and each of ``extra`` (a column of its
        own); the plain values that stand for ``extra`` now."""
        live = list(dict.fromkeys(e for name, values in self.columns.items() if name in self.live_after or not extra
                                  for e in values))
        ops = [{"source": e.source, **dict(e.chain)} for e in [*live, *extra]]
        self.stages.append(column_map(self.width, ops))
        index = {e: j for j, e in enumerate(live)}
        self.columns = {name: [Value(index[e]) for e in values] for name, values in self.columns.items()
                        if all(e in index for e in values)}
        self.width = len(ops)
        return [Value(len(live) + j) for j in range(len(extra))]

    def encode(self, targets: list[tuple[str, str, dict[str, Any]]], who: str) -> None:
        """``target`` = ``source`` (one value) through an ``encode`` spec, for each
        (source, target, spec); in place where nothing later reads the plain source."""
        values = [self.read(source, who, 1)[0] for source, _, _ in targets]
        later = {e.source for name, vs in self.columns.items() if name in self.live_after for e in vs}
        sources = [e.source for e in values]
        if any(e.chain for e in values) or len(set(sources)) < len(sources) or set(sources) & later:
            values = self.materialise(values)
        by_column = {e.source: (source, spec) for e, (source, _, spec) in zip(values, targets)}
        widths = [_encoded_width(by_column[j][1]) if j in by_column else 1 for j in range(self.width)]
        start = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self.stages.append(_encode_stage(self.width, by_column))
        self.columns = {name: [Value(int(start[e.source]), e.chain) for e in vs] for name, vs in self.columns.items()
                        if name in self.live_after}
        for e, (_, target, _) in zip(values, targets):
            self.columns[target] = [Value(int(start[e.source]) + c) for c in range(widths[e.source])]
        self.width = int(start[-1])

    def finish(self, name: str, who: str, width: int) -> None:
        """Leave exactly ``name``'s values, in order, as the matrix."""
        values = self.read(name, who, width)
        if any(e.chain for e in values) or [e.source for e in values] != list(range(self.width)):
            self.stages.append(column_map(self.width, [{"source": e.source, **dict(e.chain)} for e in values]))


def ordinal(n_categories: int, unknown_value: float | None) -> dict[str, Any]:
    """An ``encode`` spec: a whole number in [0, n) stays; anything else (NaN too) becomes
    ``unknown_value``, or InvalidArgument when it is None."""
    return {"mode": ORDINAL, "categories": list(range(n_categories)), "drop": -1,
            "on_unknown": ERROR if unknown_value is None else VALUE,
            "unknown_value": math.nan if unknown_value is None else unknown_value}


def one_hot(size: int, drop: int, refuse_unknown: bool) -> dict[str, Any]:
    """An ``encode`` spec: index i in [0, size) -> a one at position i (none for ``drop``,
    -1: no drop); anything else gives zeros, or InvalidArgument with ``refuse_unknown``."""
    return {"mode": ONE_HOT, "categories": list(range(size)), "drop": drop,
            "on_unknown": ERROR if refuse_unknown else IGNORE, "unknown_value": math.nan}


def _encoded_width(spec: dict[str, Any]) -> int:
    return len(spec["categories"]) - (spec["drop"] >= 0) if spec["mode"] == ONE_HOT else 1


def _encode_stage(width: int, by_column: dict[int, tuple[str, dict[str, Any]]]) -> Encode:
    """An ``encode`` stage over ``width`` columns: the specs where given, else pass through."""
    blank = {"mode": PASS, "categories": [], "drop": -1, "on_unknown": IGNORE, "unknown_value": math.nan}
    specs = [by_column.get(j, (f"column {j}", blank)) for j in range(width)]
    sizes = [len(spec["categories"]) for _, spec in specs]
    return Encode(
        names=tuple(name for name, _ in specs),
        mode=np.array([spec["mode"] for _, spec in specs], np.int64),
        cat_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        categories=np.concatenate([np.asarray(spec["categories"], np.float64) for _, spec in specs]),
        has_nan=np.zeros(width, np.int64),
        drop=np.array([spec["drop"] for _, spec in specs], np.int64),
        on_unknown=np.array([spec["on_unknown"] for _, spec in specs], np.int64),
        unknown_value=np.array([spec["unknown_value"] for _, spec in specs], np.float64),
        missing_value=np.full(width, math.nan),
    )
