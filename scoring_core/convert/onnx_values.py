"""What the ONNX converter knows about each tensor of a graph while it walks the nodes.

The converter (``onnx_graph``) never runs the graph: it reads each node and gives its
outputs one of the values below, built from the values of its inputs. A graph converts
when its outputs end up as one model's prediction (and, for a classifier, the label
derived from it); any other tensor reaching an output or a node that cannot take it is
refused, naming the operator.

Feature columns are followed one by one (``Col``) rather than as a list of stages,
because skl2onnx splits the input with Gather, transforms the parts and joins them with
Concat (a ColumnTransformer), where a list of stages over the whole matrix cannot follow.
``column_stages`` then lays the columns out as at most three core stages: a
``column_map`` over the inputs (imputation, scaling, selection), an ``encode`` (one-hot),
and a ``column_map`` over the encoded columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from milepost.core.errors import Unimplemented
from scoring_core.kinds import Stage
from scoring_core.transforms import ERROR, IGNORE, ONE_HOT, PASS, Encode, column_map

Op = tuple[tuple[str, float], ...]  # a column_map chain as sorted (parameter, value) pairs
_SCALING = ("center", "divisor", "factor", "offset")


def refuse(op: str, why: str) -> Unimplemented:
    """The refusal of a graph the core cannot express: names the operator and the way out."""
    return Unimplemented(
        f"ONNX operator {op}: {why}; scoring_core cannot compile this graph, serve it with the onnx engine "
        "(milepost push sends such a file as an onnx bundle)"
    )


@dataclass(frozen=True)
class OneHot:
    """Output ``index`` of a one-hot encoding of its column over ``categories`` (as the
    graph lists them); ``refuse_unknown``: an unknown value is an error, not zeros."""

    categories: tuple[float, ...]
    index: int
    refuse_unknown: bool


@dataclass(frozen=True)
class Col:
    """One feature column: input column ``source`` through the chain ``pre``, then
    optionally one output of a one-hot encoding, then the chain ``post``."""

    source: int
    pre: Op = ()
    onehot: OneHot | None = None
    post: Op = ()

    def scaled(self, op: str, center: float, factor: float) -> Col:
        """This column through ``(x - center) * factor`` (ONNX Scaler)."""
        chain = {"center": center, "factor": factor}
        if self.onehot is None:
            if any(k in _SCALING for k, _ in self.pre):
                raise refuse(op, "a column is scaled twice")
            return replace(self, pre=_op({**dict(self.pre), **chain}))
        if self.post:
            raise refuse(op, "an encoded column is scaled twice")
        return replace(self, post=_op(chain))

    def filled(self, op: str, value: float) -> Col:
        """This column with NaN replaced by ``value`` (ONNX Imputer), before anything else."""
        if self.pre or self.onehot is not None:
            raise refuse(op, "imputation after another transform of the same column")
        return replace(self, pre=_op({"fill": value}))


def _op(params: dict[str, float]) -> Op:
    return tuple(sorted((k, float(v)) for k, v in params.items()))


@dataclass(frozen=True)
class Layer:
    """A dense layer being assembled from MatMul/Gemm, Add and activation nodes."""

    weight: np.ndarray  # (n_in, n_out)
    bias: np.ndarray | None = None
    activations: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class Rows:
    """A per-row matrix: the feature columns, then any dense layers (an MLP being built).

    The columns' sources index a matrix of ``base`` columns: the graph's inputs, or what the
    stages of ``prefix`` (a row normalisation and the columns before it) give.
    ``nested``: shaped (n, 1, k) as OneHotEncoder gives it, until a Reshape or Flatten;
    ``as_int``: cast to integers, which only OneHotEncoder reads."""

    cols: tuple[Col, ...]
    base: int
    prefix: tuple[Stage, ...] = ()
    layers: tuple[Layer, ...] = ()
    nested: bool = False
    as_int: bool = False

    @property
    def width(self) -> int:
        return self.layers[-1].weight.shape[1] if self.layers else len(self.cols)

    def plain(self, op: str) -> Rows:
        """These rows as feature columns, refusing what an ML operator cannot take."""
        if self.layers:
            raise refuse(op, "it follows dense layers (MatMul/Gemm), which the core only ends a network with")
        if self.nested or self.as_int:
            raise refuse(op, "its input is a OneHotEncoder's 3-D output or an integer cast")
        return self

    def stages(self) -> list[Stage]:
        """The core stages that compute these columns from the graph's inputs."""
        return [*self.prefix, *column_stages(self.cols, self.base)]


@dataclass(frozen=True, eq=False)
class Scores:
    """A model operator's scores: the stage computing them from the feature columns
    ``rows``, the classes when it is a classifier, and whether each row already sums to one.
    ``sigmoids``: (coef, intercept) when they are one-vs-rest sigmoids a Normalizer may
    normalise (LinearClassifier with post_transform LOGISTIC)."""

    rows: Rows
    model: Stage
    classes: list[Any] | None
    normalised: bool = False
    sigmoids: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class Label:
    """The predicted class of ``of`` (a Scores, or Rows ending in a softmax)."""

    of: Scores | Rows
    classes: list[Any] | None = None


@dataclass(frozen=True, eq=False)
class ArgMaxOf:
    rows: Rows


@dataclass(frozen=True, eq=False)
class Zipped:
    """ZipMap's sequence of {label: probability} maps over ``of``."""

    of: Scores | Rows
    labels: list[Any] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class Const:
    value: np.ndarray


Value = Rows | Scores | Label | ArgMaxOf | Zipped | Const


# ---------------------------------------------------------------------------------------
# Columns -> stages


def column_stages(cols: tuple[Col, ...], n_in: int) -> list[Stage]:
    """The core stages that compute ``cols`` from the ``n_in`` input columns (none when
    they are the inputs themselves, in order)."""
    if all(col.onehot is None for col in cols):
        ops = [{"source": col.source, **dict(col.pre)} for col in cols]
        identity = len(cols) == n_in and all(op == {"source": i} for i, op in enumerate(ops))
        return [] if identity else [column_map(n_in, ops)]
    # The columns each encoding reads, one per (source, chain, encoding); plain columns pass.
    middles: dict[tuple[Any, ...], int] = {}
    for col in cols:
        key = _middle_key(col)
        middles.setdefault(key, len(middles))
    keys = list(middles)
    first_ops = [{"source": key[0], **dict(key[1])} for key in keys]
    specs, out_start = [], [0]
    for key in keys:
        encoding = key[2]
        if encoding is None:
            specs.append((PASS, np.empty(0), IGNORE))
            out_start.append(out_start[-1] + 1)
        else:
            categories, refuse_unknown = encoding
            specs.append((ONE_HOT, np.sort(np.asarray(categories, np.float64)), ERROR if refuse_unknown else IGNORE))
            out_start.append(out_start[-1] + len(categories))
    sizes = [len(cats) for _, cats, _ in specs]
    encode = Encode(
        names=tuple(f"column {key[0]}" for key in keys),
        mode=np.array([mode for mode, _, _ in specs], np.int64),
        cat_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        categories=np.concatenate([cats for _, cats, _ in specs]),
        has_nan=np.zeros(len(keys), np.int64),
        drop=np.full(len(keys), -1, np.int64),
        on_unknown=np.array([unknown for _, _, unknown in specs], np.int64),
        unknown_value=np.full(len(keys), np.nan),
        missing_value=np.full(len(keys), np.nan),
    )
    last = []
    for col in cols:
        m = middles[_middle_key(col)]
        position = out_start[m]
        if col.onehot is not None:
            value = col.onehot.categories[col.onehot.index]
            position += int(np.searchsorted(specs[m][1], value))
        last.append({"source": position, **dict(col.post)})
    stages: list[Stage] = [encode]
    if not (len(keys) == n_in and all(op == {"source": i} for i, op in enumerate(first_ops))):
        stages.insert(0, column_map(n_in, first_ops))
    if not (len(last) == encode.n_outputs and all(op == {"source": i} for i, op in enumerate(last))):
        stages.append(column_map(encode.n_outputs, last))
    return stages


def _middle_key(col: Col) -> tuple[Any, ...]:
    encoding = None if col.onehot is None else (col.onehot.categories, col.onehot.refuse_unknown)
    return (col.source, col.pre, encoding)
