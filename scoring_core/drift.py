"""Drift of live data against the training baseline, from binned counts.

A ``Baseline`` is taken from the training data when a model is compiled: for each numeric
feature (and for the prediction) quantile bin edges from the training values and the share of
training rows in each bin, a share of missing values, and the training range; for a string
feature, the share of each of its most frequent values and of all others. It is small, plain
JSON, and travels in the bundle's manifest.

Live statistics are counts in the same bins, added batch by batch (``count_numeric`` is one
numba pass over a column, no per-row Python), so a window of any size costs a few hundred
integers per feature. From the two distributions over the same bins (missing values as a bin
of their own):

- PSI, the population stability index: sum (q - p) ln(q / p), with empty bins given a small
  share (``EPSILON``) so that it stays finite; 0.1 is a small shift, 0.2 a large one;
- the overlap score: sum min(p, q), 1 for identical distributions (ParallelM MCenter alerts
  below 0.8);
- the Jensen-Shannon distance (base 2, 0 to 1), as scipy.spatial.distance.jensenshannon;
- the Kolmogorov-Smirnov statistic of the binned values: the largest gap between the two
  cumulative distributions, as scipy.stats.ks_2samp gives on the bin indices;
- the missing-value rate and the out-of-range rate (live values below the training minimum or
  above its maximum).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pyarrow as pa

EPSILON = 1e-4  # the share an empty bin counts as in PSI
DEFAULT_BINS = 10
STALL_FACTOR = 4  # a count charged at most this many times what its rows cost the last time
SAMPLE_ROWS = 1024  # batches this large are counted in part (a block of rows) rather than skipped, past the budget
MAX_CATEGORIES = 20  # a string feature keeps its most frequent values, the rest count as one
OTHER = "__other__"


@dataclass(frozen=True)
class FeatureBaseline:
    """One feature's training distribution. Numeric: ``edges`` (inner bin edges, ascending),
    ``low``/``high`` (the training range). String: ``categories`` (the values with a bin of their
    own; the last bin is every other value). ``shares`` are the bins' shares of training rows,
    then the missing share last."""

    name: str
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    low: float = math.nan
    high: float = math.nan
    categories: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return not self.categories

    def to_json(self) -> dict:
        if self.numeric:
            return {"name": self.name, "edges": list(self.edges), "low": self.low, "high": self.high,
                    "shares": list(self.shares)}
        return {"name": self.name, "categories": list(self.categories), "shares": list(self.shares)}

    @staticmethod
    def from_json(data: dict) -> FeatureBaseline:
        return FeatureBaseline(
            data["name"], tuple(data["shares"]), tuple(data.get("edges", ())), data.get("low", math.nan),
            data.get("high", math.nan), tuple(data.get("categories", ())))


def numeric_baseline(name: str, values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureBaseline:
    """Quantile bins of the training values (ties merge bins: a constant feature has one)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0:
        return FeatureBaseline(name, (0.0, 1.0))
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = count_numeric(values, edges)
    return FeatureBaseline(name, _shares(counts[:-1]), tuple(float(e) for e in edges),
                           float(present.min()), float(present.max()))


def string_baseline(name: str, values: list[str | None], top: int = MAX_CATEGORIES) -> FeatureBaseline:
    frequent = tuple(v for v, _ in Counter(v for v in values if v is not None).most_common(top))
    counts = count_strings(values, frequent)
    return FeatureBaseline(name, _shares(counts[:-1]), categories=frequent)


@numba.njit(cache=True, nogil=True)
def _count_columns(matrix: np.ndarray, columns: np.ndarray, edges: np.ndarray, edge_starts: np.ndarray,
                   lows: np.ndarray, highs: np.ndarray, slots: np.ndarray, out: np.ndarray) -> None:
    """Column ``columns[k]`` of ``matrix`` (-1: absent, nothing to count) into
    ``out[slots[k]:]``: its bins, then missing, then out of [lows[k], highs[k]].

    A value's bin is the number of edges below it (bins are (edge[j-1], edge[j]]), counted
    without a branch: with ten bins that beats a binary search, whose branches the CPU cannot
    predict. Counts go to four local histograms in turn, summed at the end, which breaks the
    chain of increments to the same bin."""
    width = 0
    for k in range(columns.shape[0]):
        width = max(width, edge_starts[k + 1] - edge_starts[k] + 3)
    local = np.zeros(4 * width, dtype=np.int64)
    for k in range(columns.shape[0]):
        c = columns[k]
        if c < 0:
            continue
        own = edges[edge_starts[k]:edge_starts[k + 1]]  # a slice from 0: 6x faster than range(start, end)
        missing = own.shape[0] + 1
        low, high = lows[k], highs[k]
        local[:] = 0
        for i in range(matrix.shape[0]):
            v = np.float64(matrix[i, c])
            b = 0
            for e in range(own.shape[0]):
                b += own[e] < v
            lane = (i & 3) * width
            local[lane + (missing if v != v else b)] += 1
            local[lane + missing + 1] += (v < low) | (v > high)
        for j in range(missing + 2):
            out[slots[k] + j] += local[j] + local[width + j] + local[2 * width + j] + local[3 * width + j]


class _Bins:
    """Numeric baselines packed for one ``_count_columns`` call: their edges end to end, their
    ranges, and where each one's counts start in a window's flat counts (``slots``)."""

    def __init__(self, baselines: list[tuple[np.ndarray, float, float]], slots: list[int]) -> None:
        self.edges = np.concatenate([e for e, _, _ in baselines] + [np.empty(0)]).astype(np.float64)
        self.edge_starts = np.cumsum([0] + [len(e) for e, _, _ in baselines]).astype(np.int64)
        self.lows = np.array([low for _, low, _ in baselines], dtype=np.float64)
        self.highs = np.array([high for _, _, high in baselines], dtype=np.float64)
        self.slots = np.array(slots, dtype=np.int64)

    def count(self, matrix: np.ndarray, columns: np.ndarray, out: np.ndarray) -> None:
        """Add ``matrix``'s columns (``columns[k]`` for baseline k, -1 for none) to ``out``."""
        if matrix.dtype != np.float32:
            matrix = matrix.astype(np.float64, copy=False)
        _count_columns(matrix, columns, self.edges, self.edge_starts, self.lows, self.highs, self.slots, out)


def count_numeric(values: np.ndarray, edges: np.ndarray | tuple[float, ...],
                  low: float = -math.inf, high: float = math.inf) -> np.ndarray:
    """Counts per bin (len(edges) + 1), then missing, then out of [low, high]."""
    edges = np.asarray(edges, dtype=np.float64)
    out = np.zeros(edges.shape[0] + 3, dtype=np.int64)
    column = np.asarray(values)
    _Bins([(edges, low, high)], [0]).count(column.reshape(-1, 1), _FIRST, out)
    return out


_FIRST = np.zeros(1, dtype=np.int64)  # the one column of a one-column matrix


def _bins(baselines: list[FeatureBaseline], slots: list[int]) -> _Bins:
    return _Bins([(np.asarray(f.edges, dtype=np.float64), f.low, f.high) for f in baselines], slots)


def count_strings(values: Any, categories: tuple[str, ...]) -> np.ndarray:
    """Counts per category, then all other values, then missing, then 0 (no range for strings).

    ``values``: a list (None: missing), an Arrow array (nulls: missing; a dictionary array,
    a pandas categorical's, as it is) or a numpy array (class indexes), each value taken as
    ``str(value)``. Counted without a step of Python a row: the distinct values are looked up
    once and their codes counted by numpy."""
    if isinstance(values, np.ndarray):
        distinct, codes = np.unique(values, return_inverse=True)
        names: list[Any] = distinct.tolist()
    else:
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
        names = encoded.dictionary.to_pylist()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    index = {c: i for i, c in enumerate(categories)}
    other, missing = len(categories), len(categories) + 1
    bins = np.array([index.get(str(v), other) for v in names] + [missing], dtype=np.int64)  # code -1: the last
    out = np.zeros(len(categories) + 3, dtype=np.int64)
    out[:missing + 1] = np.bincount(bins[codes], minlength=missing + 1)
    return out


def count(baseline: FeatureBaseline, values: np.ndarray | list) -> np.ndarray:
    """Live counts of a column in the baseline's bins (see count_numeric / count_strings)."""
    if baseline.numeric:
        return count_numeric(np.asarray(values, dtype=np.float64), baseline.edges, baseline.low, baseline.high)
    return count_strings(values if isinstance(values, np.ndarray) else list(values), baseline.categories)


@dataclass(frozen=True)
class Drift:
    psi: float
    overlap: float
    js_distance: float
    ks: float
    missing_rate: float
    out_of_range_rate: float
    rows: int


def drift(baseline: FeatureBaseline, counts: np.ndarray) -> Drift:
    """Drift of live ``counts`` (as ``count`` gives them) against the baseline."""
    live = np.asarray(counts[:-1], dtype=np.float64)  # bins and missing
    rows = int(live.sum())
    if rows == 0:
        return Drift(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0)
    q = live / rows
    p = np.asarray(baseline.shares, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"feature {baseline.name!r}: {q.size} live bins against {p.size} in the baseline")
    p_eps, q_eps = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    m = (p + q) / 2
    js = 0.5 * (_kl(p, m) + _kl(q, m))
    return Drift(
        psi=float(np.sum((q_eps - p_eps) * np.log(q_eps / p_eps))),
        overlap=float(np.minimum(p, q).sum()),
        js_distance=float(math.sqrt(max(js, 0.0))),
        ks=float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)))),
        missing_rate=float(q[-1]),
        out_of_range_rate=float(counts[-1] / rows),
        rows=rows,
    )


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    nonzero = a > 0
    return float(np.sum(a[nonzero] * np.log2(a[nonzero] / b[nonzero])))


def _shares(counts: np.ndarray) -> tuple[float, ...]:
    total = counts.sum()
    return tuple(float(c / total) for c in counts) if total else tuple(0.0 for _ in counts)


def training_baseline(columns: dict[str, np.ndarray | list], predictions: np.ndarray) -> dict:
    """The manifest's ``drift_baseline``: every input column's and the prediction's baseline.

    A numeric column gets quantile bins, a string (object) column its frequent values. The
    prediction is a regressor's value or P(class 1) of a binary classifier (numeric), or the
    predicted class of a multiclass one (its index, as a string)."""
    features = []
    for name, values in columns.items():
        array = np.asarray(values)
        features.append(string_baseline(name, [None if v is None or v != v else str(v) for v in array.tolist()])
                        if array.dtype == object else numeric_baseline(name, array.astype(np.float64)))
    scores = np.asarray(predictions, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] > 2:
        prediction = string_baseline("prediction", [str(i) for i in scores.argmax(axis=1)])
    else:
        prediction = numeric_baseline("prediction", scores[:, -1] if scores.ndim == 2 else scores)
    return {"features": [f.to_json() for f in features], "prediction": prediction.to_json()}


@dataclass(frozen=True)
class ClosedWindow:
    """One closed window of live counts: ``counts`` per feature in the baseline's order, then the
    prediction's (as ``count`` gives them); ``opened_at``/``closed_at`` in seconds since the epoch."""

    seq: int
    opened_at: float
    closed_at: float
    rows: int
    counts: tuple[np.ndarray, ...]


class LiveWindow:
    """Counts of live traffic in a baseline's bins, in windows of ``rows`` rows or ``seconds``.

    ``add`` takes a scored batch (inputs and outputs) and counts its numeric columns in one
    numba call; a window closes when it holds ``rows`` rows or is ``seconds`` old, and the last
    closed one is what ``drifts`` judges (the open one until a first window closes), so the
    figures do not swing with every batch. Thread-safe: batches score concurrently.

    ``offer`` is how the scoring path calls it: it keeps the time spent counting within
    ``budget`` of the time spent scoring (1: count everything), so accounting never costs
    serving more than that share. A batch of ``SAMPLE_ROWS`` rows or more that the budget cannot
    pay for whole is counted in part, a block of its rows (at least a quarter of SAMPLE_ROWS,
    starting where the last block ended), so every large batch is in the window; a smaller one
    is counted whole or, past the budget, not at all. Either way the window holds a sample taken
    without regard to content (``rows`` counts what was counted).

    Each closed window is also queued, numbered from 1 with its wall-clock span, for the agent to
    ship to the coordinator (``pending``); ``acknowledge`` drops what the coordinator has. The
    queue keeps the newest ``keep`` windows: a coordinator away for longer loses the oldest."""

    def __init__(self, baseline: dict, *, rows: int, seconds: float, budget: float = 0.01,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 keep: int = 64) -> None:
        self.features = [FeatureBaseline.from_json(f) for f in baseline["features"]]
        self.prediction = FeatureBaseline.from_json(baseline["prediction"])
        # A window's counts are one flat array: each feature's bins, missing and out-of-range
        # counts from its slot on, then the prediction's; numeric ones counted in one kernel call.
        every = (*self.features, self.prediction)
        self._slots = np.cumsum([0] + [len(f.shares) + 1 for f in every]).astype(np.int64)
        self._numeric = [k for k, f in enumerate(self.features) if f.numeric]
        self._feature_bins = _bins([self.features[k] for k in self._numeric], [int(self._slots[k]) for k in self._numeric])
        self._matrix_columns = np.array(self._numeric, dtype=np.int64)  # a matrix holds the features in order
        self._prediction_bins = _bins([self.prediction], [int(self._slots[-2])]) if self.prediction.numeric else None
        self._schema_columns: tuple[Any, np.ndarray, list[int]] | None = None
        self.rows_per_window, self.seconds = rows, seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open = self._empty()
        self._opened_at = clock()
        self._open_rows = 0
        self._closed: np.ndarray | None = None
        self._wall = wall
        self._opened_wall = wall()
        self._seq = 0
        self._pending: deque[ClosedWindow] = deque(maxlen=keep)
        self.budget = budget
        self._scoring_s = 0.0
        self._counting_s = 0.0
        self.offered = self.counted = 0  # batches
        self.counted_rows = 0
        self._row_s = 0.0  # what counting one row last cost, seconds
        self._next_row = 0  # where the next block of a batch counted in part starts

    def offer(self, inputs: Any, outputs: Any, scoring_s: float) -> None:
        """A batch the model scored in ``scoring_s``; counted (whole, a block of its rows, or
        not) as the budget allows."""
        self._scoring_s += scoring_s
        self.offered += 1
        rows = len(inputs) if isinstance(inputs, np.ndarray) else inputs.num_rows
        take = rows
        if self.budget < 1:
            credit = self.budget * self._scoring_s - self._counting_s
            if credit < 0:
                return
            if rows >= SAMPLE_ROWS and rows * self._row_s > credit:
                # Half the credit a batch: the rest carries over, so the next large batch has
                # some too (spending it all, a little over, would leave the next one none). At
                # least a quarter of SAMPLE_ROWS: the per-row cost, measured with the call's
                # fixed cost in it, grows on fewer rows, and the sample would shrink with it.
                take = max(int(credit / 2 / self._row_s), SAMPLE_ROWS // 4)
        if take < rows:
            # A block of rows where the last one ended, not every k-th row: a block of named
            # columns is a slice of their buffers, where every k-th row would be a copy of the
            # whole batch first (and its reads would evict the model from the caches).
            start = self._next_row % (rows - take + 1)
            self._next_row = start + take
            inputs, outputs = _rows(inputs, start, take), _rows(outputs, start, take)
        kernels = len(_count_columns.signatures)
        started = time.perf_counter()
        self.add(inputs, outputs)
        if len(_count_columns.signatures) == kernels:  # else its time went to compiling (or loading) a kernel
            spent = time.perf_counter() - started
            if self._row_s:  # a stall of the machine (a page fault, another process) is not counting's cost
                spent = min(spent, STALL_FACTOR * take * self._row_s)
            self._counting_s += spent
            self._row_s = spent / max(take, 1)
        self.counted += 1
        self.counted_rows += take

    def _empty(self) -> np.ndarray:
        return np.zeros(int(self._slots[-1]), dtype=np.int64)

    def _split(self, counts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Flat window counts as each feature's (and the prediction's) own array, copied."""
        return tuple(counts[a:b].copy() for a, b in zip(self._slots[:-1], self._slots[1:]))

    def add(self, inputs: Any, outputs: Any) -> None:
        """``inputs``, ``outputs``: pyarrow RecordBatches as the model took and gave them, or
        the float32 matrix and (n, k) scores of the matrix lane (engines.base.predict_matrix)."""
        rows = len(inputs) if isinstance(inputs, np.ndarray) else inputs.num_rows
        if rows == 0:
            return
        counts = self._empty()
        matrix = _matrix(inputs, len(self.features))
        if matrix is not None:
            self._feature_bins.count(matrix, self._matrix_columns, counts)
        else:
            self._count_columns(inputs, counts)
        values = prediction_values(outputs, self.prediction)
        if self._prediction_bins is not None:
            self._prediction_bins.count(np.asarray(values).reshape(-1, 1), _FIRST, counts)
        else:
            at = int(self._slots[-2])
            counts[at:] += count_strings(values, self.prediction.categories)
        with self._lock:
            self._open += counts
            self._open_rows += rows
            if self._open_rows >= self.rows_per_window or self._clock() - self._opened_at >= self.seconds:
                self._close_locked()

    def _close_locked(self) -> None:
        """Close the open window (the lock held): queue it, judge it, open the next."""
        self._seq += 1
        closed_wall = self._wall()
        self._pending.append(ClosedWindow(self._seq, self._opened_wall, closed_wall, self._open_rows,
                                          self._split(self._open)))
        self._closed, self._open, self._open_rows = self._open, self._empty(), 0
        self._opened_at, self._opened_wall = self._clock(), closed_wall

    def _count_columns(self, batch: Any, counts: np.ndarray) -> None:
        """Named columns: the numeric ones as one matrix (Arrow's own conversion, nulls as NaN)
        for one kernel call; strings one by one. Where the columns are is worked out once per
        schema."""
        schema = batch.schema
        if self._schema_columns is None or not self._schema_columns[0].equals(schema):
            where = [schema.get_field_index(self.features[k].name) for k in self._numeric]
            present = sorted(i for i in where if i >= 0)
            columns = np.array([present.index(i) if i >= 0 else -1 for i in where], dtype=np.int64)
            self._schema_columns = (schema, columns, present)
        _, columns, present = self._schema_columns
        if present:
            numeric = batch if len(present) == batch.num_columns else batch.select(present)
            matrix = np.asarray(numeric.to_tensor(null_to_nan=True, row_major=False))
            self._feature_bins.count(matrix, columns, counts)
        for k, feature in enumerate(self.features):
            index = -1 if feature.numeric else schema.get_field_index(feature.name)
            if index >= 0:
                at = int(self._slots[k])
                column = batch.column(index)
                counts[at:int(self._slots[k + 1])] += count_strings(column,
                                                                      feature.categories)

    @property
    def names(self) -> list[str]:
        """The names the counts of a window follow: the features in order, then "prediction"."""
        return [f.name for f in (*self.features, self.prediction)]

    def pending(self) -> list[ClosedWindow]:
        """The closed windows not acknowledged yet, oldest first."""
        with self._lock:
            return list(self._pending)

    def acknowledge(self, seq: int) -> None:
        """The coordinator holds every window up to ``seq``: stop offering them."""
        with self._lock:
            while self._pending and self._pending[0].seq <= seq:
                self._pending.popleft()

    def drifts(self) -> dict[str, Drift]:
        """Feature name (and "prediction") -> its drift in the last closed window."""
        with self._lock:
            window = self._split(self._closed if self._closed is not None else self._open)
        return {f.name: drift(f, c) for f, c in zip((*self.features, self.prediction), window)}

    def close_if_due(self) -> None:
        """Close the open window if it is ``seconds`` old, without waiting for a batch (the agent
        calls it before each heartbeat), so that quiet traffic ships its windows too. An empty one
        is not shipped: it opens again now, so that the next batch does not make a window alone."""
        with self._lock:
            if self._clock() - self._opened_at < self.seconds:
                return
            if self._open_rows:
                self._close_locked()
            else:
                self._opened_at, self._opened_wall = self._clock(), self._wall()


def _rows(batch: Any, start: int, count: int) -> Any:
    """Rows ``start .. start + count`` of a RecordBatch or an array, without a copy."""
    return batch[start:start + count] if isinstance(batch, np.ndarray) else batch.slice(start, count)


def _matrix(batch: Any, width: int) -> np.ndarray | None:
    """The rows of a batch that is one matrix column (a tensor input, features in order), or of
    a matrix, as float64; else None."""
    if isinstance(batch, np.ndarray):
        return batch
    if batch.num_columns != 1 or getattr(batch.column(0).type, "list_size", None) != width:
        return None
    return batch.column(0).flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def prediction_values(outputs: Any, prediction: FeatureBaseline) -> Any:
    """The scored batch's primary output as the baseline took it (``primary_output``), or a
    text label column as its values. ``outputs``: a RecordBatch, or the (n, k) scores of the
    matrix lane."""
    if isinstance(outputs, np.ndarray):
        return primary_output(outputs)
    column = outputs.column(0)
    return primary_output(column) if numeric_output(column.type) else column.to_numpy(zero_copy_only=False)


def numeric_output(kind: pa.DataType) -> bool:
    """Whether an output column of this type is numbers (a value, or a fixed-size list of them)."""
    values = kind.value_type if pa.types.is_fixed_size_list(kind) else kind
    return bool(pa.types.is_floating(values) or pa.types.is_integer(values) or pa.types.is_boolean(values))


def primary_output(outputs: Any) -> np.ndarray:
    """A model's primary output, one number a row: the value, P(class 1) of two probabilities,
    or the index of the largest of more (int64); NaN where it is null. ``outputs``: a numeric
    Arrow column (``numeric_output``) or an (n, k) array. The one rule for drift's prediction
    baseline and for the predictions that feedback is judged against (agent.registration)."""
    if isinstance(outputs, np.ndarray):
        rows = outputs
    else:
        width = outputs.type.list_size if pa.types.is_fixed_size_list(outputs.type) else None
        if width is None:
            return outputs.cast(pa.float64()).to_numpy(zero_copy_only=False)
        flat = outputs.values.slice(outputs.offset * width, len(outputs) * width).cast(pa.float64())
        rows = flat.to_numpy(zero_copy_only=False).reshape(-1, width)
    if rows.shape[1] > 2:
        return rows.argmax(axis=1)
    return rows[:, -1] if rows.shape[1] else np.full(len(rows), np.nan)
