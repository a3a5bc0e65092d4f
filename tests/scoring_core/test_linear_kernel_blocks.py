"""The column-major linear kernels' blocks and prefetch splits: every edge gives the bits
the row-major kernel gives.

Column-major blocks are ``column_block_rows`` rows (16384 for one output, fewer for more
outputs or to give each thread a block), and each pass switches its prefetch from its own
columns to the next pass's ``COLUMN_AHEAD_ROWS`` rows before its end; these row counts
sit on either side of both, on one thread and two, for one matrix (``predict`` on an
F-ordered array) and for named columns read in place (``linear_columns``).
"""

from __future__ import annotations

import numpy as np
import pytest

import scoring_core
from scoring_core import linear, linear_columns
from scoring_core.linear import LinearModel
from scoring_core.linear_columns import COLUMN_AHEAD_ROWS, column_block_rows

ONE_OUTPUT_BLOCK = column_block_rows(1, 10**9, 1)


def test_block_rows_follow_outputs_and_threads():
    assert ONE_OUTPUT_BLOCK == linear_columns.LANE_BYTES // (8 * linear.LANES)
    three = column_block_rows(3, 10**9, 1)
    assert three % 16 == 0 and 3 * 8 * linear.LANES * three <= linear_columns.LANE_BYTES
    # Each of two threads gets a block of 5000 rows; never fewer rows than BLOCK.
    assert column_block_rows(1, 5000, 2) == 2512
    assert column_block_rows(1, 100, 2) == linear.BLOCK


@pytest.mark.parametrize("threads", [1, 2])
def test_column_kernels_match_row_kernel_at_block_and_prefetch_edges(threads):
    rng = np.random.default_rng(17)
    f = 37
    edges = (COLUMN_AHEAD_ROWS - 1, COLUMN_AHEAD_ROWS + 1, ONE_OUTPUT_BLOCK - 1, ONE_OUTPUT_BLOCK + 1,
             ONE_OUTPUT_BLOCK + COLUMN_AHEAD_ROWS - 1, ONE_OUTPUT_BLOCK + COLUMN_AHEAD_ROWS + 1,
             2 * ONE_OUTPUT_BLOCK + 17)
    X_all = rng.normal(size=(max(edges), f)).astype(np.float32)
    try:
        scoring_core.set_num_threads(threads)
        for link, k in (("logistic", 1), ("softmax", 3)):
            model = LinearModel(rng.normal(size=(k, f)), rng.normal(size=k), link)
            for n in edges:
                X = X_all[:n]
                by_rows = model.predict(X)
                scores = X.astype(np.float64) @ model.coef.T + model.intercept
                if link == "logistic":
                    np.testing.assert_allclose(by_rows[:, 1], 1 / (1 + np.exp(-scores[:, 0])), rtol=0, atol=1e-12)
                else:
                    e = np.exp(scores - scores.max(axis=1, keepdims=True))
                    np.testing.assert_allclose(by_rows, e / e.sum(axis=1, keepdims=True), rtol=0, atol=1e-12)
                np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), by_rows, err_msg=f"{link} {n}")
                columns = linear_columns.FloatColumns.of_arrays([np.ascontiguousarray(X[:, j]) for j in range(f)])
                named = linear_columns.score_columns(columns, model.coef, model.intercept, link)
                np.testing.assert_array_equal(named, by_rows, err_msg=f"{link} {n} named")
    finally:
        scoring_core.set_num_threads(2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("f", [1, 5, 9, 33])
def test_a_logistic_block_linked_in_the_next_blocks_passes_keeps_its_bits(threads, f):
    """The column kernel links a binary logistic block inside the next block's four-column
    passes, one row a 16-row step, and the rest after: with no four-column pass (1, 5, 9
    features), a few (33) or a short last block, every row is linked once, to the bits the
    row-major kernel gives, NaN rows included."""
    rng = np.random.default_rng(f)
    X = rng.normal(size=(2 * ONE_OUTPUT_BLOCK + 17, f)).astype(np.float32)
    X[rng.random(X.shape) < 0.001] = np.nan
    model = LinearModel(rng.normal(size=(1, f)), rng.normal(size=1), "logistic")
    try:
        scoring_core.set_num_threads(threads)
        by_rows = model.predict(X)
        np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), by_rows)
    finally:
        scoring_core.set_num_threads(2)
