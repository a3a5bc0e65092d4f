"""Drift statistics from binned counts, checked against scipy on the same bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from scoring_core import drift as d


def bin_index(values: np.ndarray, baseline: d.FeatureBaseline) -> np.ndarray:
    """Each value's bin as searchsorted gives it (missing: the bin after the last)."""
    index = np.searchsorted(np.asarray(baseline.edges), values, side="left")
    return np.where(np.isnan(values), len(baseline.edges) + 1, index)


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return np.random.default_rng(0).normal(size=20_000)


def test_counts_match_searchsorted_with_ties_missing_and_range(train) -> None:
    baseline = d.numeric_baseline("x", train)
    assert len(baseline.edges) == 9 and abs(sum(baseline.shares) - 1) < 1e-12
    live = np.random.default_rng(1).normal(0.3, 1.2, size=5_001)
    live[::97] = np.nan
    live[:5] = baseline.edges[:5]  # exactly on an edge: the bin below it, as (a, b]
    counts = d.count(baseline, live)
    expected = np.bincount(bin_index(live, baseline), minlength=len(baseline.edges) + 2)
    np.testing.assert_array_equal(counts[:-1], expected)
    present = live[~np.isnan(live)]
    assert counts[-1] == np.sum((present < baseline.low) | (present > baseline.high))


def test_statistics_agree_with_scipy_on_the_same_bins(train) -> None:
    baseline = d.numeric_baseline("x", train)
    live = np.random.default_rng(2).normal(0.5, 1.0, size=4_000)
    result = d.drift(baseline, d.count(baseline, live))
    p = np.asarray(baseline.shares)
    q = d.count(baseline, live)[:-1] / live.size
    assert result.js_distance == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert result.ks == pytest.approx(ks_2samp(bin_index(train, baseline), bin_index(live, baseline)).statistic, abs=1e-12)
    assert result.overlap == pytest.approx(np.minimum(p, q).sum(), abs=1e-12)
    assert result.rows == live.size and result.missing_rate == 0.0


def test_half_a_standard_deviation_is_flagged_and_the_same_distribution_is_not(train) -> None:
    baseline = d.numeric_baseline("x", train)
    rng = np.random.default_rng(3)
    same = d.drift(baseline, d.count(baseline, rng.normal(size=5_000)))
    shifted = d.drift(baseline, d.count(baseline, rng.normal(0.5, 1.0, size=5_000)))
    assert same.psi < 0.02 and same.overlap > 0.95 and same.ks < 0.03
    assert shifted.psi > 0.2 and shifted.overlap < 0.85 and shifted.ks > 0.15
    assert shifted.out_of_range_rate < 0.01  # a shift, not values never seen


def test_string_features_count_unseen_values_as_other_and_none_as_missing() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    baseline = d.string_baseline("colour", values, top=2)
    assert baseline.categories == ("a", "b") and baseline.shares == (0.5, 0.3, 0.2, 0.0)
    counts = d.count(baseline, ["a", "z", None, "b", "y"])
    assert counts.tolist() == [1, 1, 2, 1, 0]
    result = d.drift(baseline, counts)
    assert result.missing_rate == pytest.approx(0.2) and result.rows == 5
    assert d.FeatureBaseline.from_json(baseline.to_json()) == baseline


def test_edge_cases_empty_window_constant_and_all_missing_features() -> None:
    constant = d.numeric_baseline("k", np.full(100, 3.0))
    assert constant.edges == (3.0,) and constant.low == constant.high == 3.0
    assert d.drift(constant, d.count(constant, np.array([]))) == d.Drift(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0)
    moved = d.drift(constant, d.count(constant, np.array([4.0, 4.0])))
    assert moved.out_of_range_rate == 1.0 and moved.overlap == 0.0 and np.isfinite(moved.psi)
    missing = d.numeric_baseline("m", np.full(10, np.nan))
    assert d.drift(missing, d.count(missing, np.array([np.nan]))).psi == pytest.approx(0.0)
    assert d.FeatureBaseline.from_json(constant.to_json()) == constant


def test_compile_with_training_data_ships_the_baseline_in_the_bundle(tmp_path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import scoring_core

    rng = np.random.default_rng(4)
    X = rng.normal(size=(2_000, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=2_000) > 0).astype(int)
    model = scoring_core.compile(LogisticRegression().fit(X, y), baseline=X)
    version = model.save(tmp_path / "b")
    loaded = scoring_core.load(tmp_path / "b", version=version)
    shipped = loaded.metadata["drift_baseline"]
    features = [d.FeatureBaseline.from_json(f) for f in shipped["features"]]
    assert [f.name for f in features] == ["f0", "f1", "f2"]
    assert features[0] == d.numeric_baseline("f0", X[:, 0])
    prediction = d.FeatureBaseline.from_json(shipped["prediction"])
    assert prediction == d.numeric_baseline("prediction", model.predict(X)[:, 1])
    # A DataFrame with a string column: that column gets categories; multiclass predictions a class.
    frame = pd.DataFrame({"x": X[:, 0], "colour": rng.choice(["red", "blue"], size=2_000)})
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    three = np.digitize(X[:, 0], [-0.5, 0.5])
    pipe = make_pipeline(ColumnTransformer([("c", OneHotEncoder(), ["colour"])], remainder="passthrough"),
                         LogisticRegression()).fit(frame, three)
    shipped = scoring_core.compile(pipe, baseline=frame).metadata["drift_baseline"]
    colour = d.FeatureBaseline.from_json(shipped["features"][1])
    assert set(colour.categories) == {"red", "blue"} and not colour.numeric
    assert set(d.FeatureBaseline.from_json(shipped["prediction"]).categories) <= {"0", "1", "2"}
    with pytest.raises(Exception, match="baseline must be training data with 3 columns"):
        scoring_core.compile(LogisticRegression().fit(X, y), baseline=X[:, :2])


def test_live_windows_close_by_rows_or_by_time_and_read_named_or_matrix_inputs(train) -> None:
    import pyarrow as pa

    baseline = {"features": [d.numeric_baseline("x", train).to_json(), d.string_baseline("c", ["a", "b"] * 50).to_json()],
                "prediction": d.numeric_baseline("prediction", train).to_json()}
    now = [0.0]  # a clock the test moves: windows by time without waiting
    window = d.LiveWindow(baseline, rows=1_000, seconds=60.0, clock=lambda: now[0])
    out = pa.RecordBatch.from_arrays([pa.array(np.zeros(10))], names=["value"])
    named = pa.RecordBatch.from_arrays([pa.array(np.full(10, 9.0)), pa.array(["a"] * 10)], names=["x", "c"])
    window.add(named, out)
    assert window.drifts()["x"].rows == 10 and window.drifts()["x"].out_of_range_rate == 1.0  # the open window
    now[0] = 61.0
    window.add(named, out)  # past 60 s: this window closes with 20 rows
    assert window.drifts()["c"].rows == 20 and window.drifts()["c"].psi > 0.5
    window.add(pa.RecordBatch.from_arrays([pa.array([], pa.float64()), pa.array([], pa.string())], names=["x", "c"]), out)
    assert window.drifts()["x"].rows == 20  # an empty batch changes nothing
    # A tensor input: one fixed-size-list column, features in order (here x only).
    single = d.LiveWindow({"features": baseline["features"][:1], "prediction": baseline["prediction"]}, rows=5, seconds=60.0)
    values = np.random.default_rng(5).normal(size=(5, 1))
    matrix = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 1)], names=["input"])
    single.add(matrix, pa.RecordBatch.from_arrays([pa.array(values.ravel())], names=["value"]))
    assert single.drifts()["x"].rows == 5


def test_offer_counts_only_within_the_budget_of_scoring_time(train) -> None:
    import pyarrow as pa

    baseline = {"features": [d.numeric_baseline("x", train).to_json()], "prediction": d.numeric_baseline("prediction", train).to_json()}
    batch = pa.RecordBatch.from_arrays([pa.array(train[:64])], names=["x"])
    out = pa.RecordBatch.from_arrays([pa.array(train[:64])], names=["value"])
    free = d.LiveWindow(baseline, rows=10**9, seconds=1e9, budget=1.0)
    never = d.LiveWindow(baseline, rows=10**9, seconds=1e9, budget=0.0)
    tight = d.LiveWindow(baseline, rows=10**9, seconds=1e9, budget=0.02)
    for _ in range(200):
        free.offer(batch, out, scoring_s=1.0)  # scoring "took" a second: counting is always within budget
        never.offer(batch, out, scoring_s=1.0)
        tight.offer(batch, out, scoring_s=1e-7)  # scoring was nearly free: counting soon exceeds 2% of it
    assert free.counted == 200 and free.drifts()["x"].rows == 200 * 64
    assert never.counted == 1  # the first batch is counted before any time was spent counting
    assert 1 <= tight.counted < 20 and tight.offered == 200


def test_one_kernel_call_counts_every_layout_as_each_feature_alone(train) -> None:
    """Named columns of mixed types (float32, float64 with nulls, int64, a string, one absent),
    a float32 matrix and a tensor column: each feature's window counts equal ``count`` of that
    feature's values by itself, the prediction's too."""
    import pyarrow as pa

    rng = np.random.default_rng(7)
    numeric = [d.numeric_baseline(name, rng.normal(size=2_000) * scale)
               for name, scale in (("a", 1.0), ("b", 3.0), ("n", 10.0), ("gone", 1.0))]
    strings = d.string_baseline("s", ["x", "y", "y", "z"] * 10)
    prediction = d.numeric_baseline("prediction", train)
    baseline = {"features": [f.to_json() for f in (numeric[0], strings, *numeric[1:])], "prediction": prediction.to_json()}
    window = d.LiveWindow(baseline, rows=10**9, seconds=1e9)
    a = rng.normal(size=33).astype(np.float32)
    b = rng.normal(0.5, 3.0, size=33)
    b_nulls = pa.array(b, mask=np.arange(33) % 5 == 0)
    n = rng.integers(-30, 30, size=33)
    s = ["x", "w", None] * 11
    scores = rng.normal(size=33)
    named = pa.RecordBatch.from_arrays([pa.array(s), pa.array(n), b_nulls, pa.array(a)], names=["s", "n", "b", "a"])
    window.add(named, pa.RecordBatch.from_arrays([pa.array(scores)], names=["value"]))
    got = window.drifts()
    b_values = np.where(np.arange(33) % 5 == 0, np.nan, b)
    for feature, values in ((numeric[0], a), (numeric[1], b_values), (numeric[2], n), (strings, s), (prediction, scores)):
        assert d.drift(feature, d.count(feature, values)) == got[feature.name], feature.name
    assert got["gone"].rows == 0  # an input the batch lacks counts nothing
    # A float32 matrix (the matrix lane) and a tensor column count as the same values would alone.
    only = {"features": [f.to_json() for f in numeric[:3]], "prediction": prediction.to_json()}
    matrix = np.column_stack([a, b_values, n]).astype(np.float32)
    lane, tensor = d.LiveWindow(only, rows=10**9, seconds=1e9), d.LiveWindow(only, rows=10**9, seconds=1e9)
    lane.add(matrix, scores.reshape(-1, 1).astype(np.float32))
    tensor.add(pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), 3)], names=["input"]),
               pa.RecordBatch.from_arrays([pa.array(scores.astype(np.float32))], names=["value"]))
    for k, feature in enumerate(numeric[:3]):
        alone = d.drift(feature, d.count(feature, matrix[:, k].astype(np.float64)))
        assert lane.drifts()[feature.name] == alone == tensor.drifts()[feature.name]


def test_large_batches_past_the_budget_are_counted_in_part(train) -> None:
    """A batch of SAMPLE_ROWS rows or more that the budget cannot pay for whole is counted in
    part (a block of at least 256 rows, each block starting where the last ended), so most are
    in the window; counting stays within the budget; the sample has the batch's distribution."""
    import gc
    import time

    import pyarrow as pa

    rows, width = 8 * d.SAMPLE_ROWS, 30
    X = np.random.default_rng(3).normal(size=(rows, width))
    names = [f"f{i}" for i in range(width)]
    baseline = {"features": [d.numeric_baseline(n, train).to_json() for n in names],
                "prediction": d.numeric_baseline("prediction", train).to_json()}
    batch = pa.RecordBatch.from_arrays([pa.array(X[:, i]) for i in range(width)], names=names)
    out = pa.RecordBatch.from_arrays([pa.array(X[:, 0])], names=["value"])
    probe = d.LiveWindow(baseline, rows=10**9, seconds=1e9, budget=1.0)
    probe.add(batch, out)  # compiled here, not in the timing below
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        probe.add(batch, out)
        timings.append(time.perf_counter() - started)
    whole_s = min(timings)  # the least: a stall of this shared machine would raise a mean
    window = d.LiveWindow(baseline, rows=10**9, seconds=1e9, budget=0.02)
    scoring_s = whole_s / 0.02 / 10  # the budget pays for a tenth of each batch
    gc.disable()  # a collection of this test process's heap during one count (milliseconds) would be charged to it
    try:
        for _ in range(60):
            window.offer(batch, out, scoring_s=scoring_s)
    finally:
        gc.enable()
    counted_rows = window.drifts()["f0"].rows
    # The first batch is counted whole (the cost of a row is not known yet), which spends the
    # credit of about ten; after it most are counted in part.
    assert window.offered == 60 and window.counted >= 20
    assert window.counted * rows // 32 <= counted_rows < 60 * rows // 2  # at least 256 rows each, far from all
    assert window._counting_s <= 0.02 * window._scoring_s + 3 * whole_s  # within budget, give or take a batch
    assert max(f.psi for f in window.drifts().values()) < 0.05  # blocks of the batch: its distribution


def test_text_columns_and_classes_count_as_values_in_any_arrow_form() -> None:
    """A string column, its dictionary-encoded form (a pandas categorical through Arrow), a
    chunked one and a multiclass model's class indexes count as the plain list of values does."""
    import pandas as pd
    import pyarrow as pa

    values = ["a", None, "b", "z", "a", "a", None]
    categories = ("a", "b")
    expected = d.count_strings(values, categories)
    assert expected.tolist() == [3, 1, 1, 2, 0]  # a, b, other, missing, no range
    for form in (pa.array(values), pa.array(values).dictionary_encode(), pa.array(pd.Series(pd.Categorical(values))),
                 pa.chunked_array([values[:3], values[3:]])):
        assert d.count_strings(form, categories).tolist() == expected.tolist()
    assert d.count_strings(pa.array(pd.Series(pd.Categorical([3, 1, 3, None]))), ("3",)).tolist() == [2, 1, 1, 0]
    classes = d.string_baseline("prediction", ["0", "1", "2", "2"])
    window = d.LiveWindow({"features": [d.numeric_baseline("x", np.arange(10.0)).to_json()],
                           "prediction": classes.to_json()}, rows=10**9, seconds=1e9)
    scores = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], dtype=np.float32)
    window.add(np.arange(4, dtype=np.float32).reshape(-1, 1), scores)
    assert window.drifts()["prediction"] == d.drift(classes, d.count(classes, ["2", "0", "1", "2"]))
