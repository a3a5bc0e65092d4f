"""Datasets as engines see them: file order, URIs, and sinks that appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engines import parquet_io
from engines.base import DatasetJob
from engines.native import NativeEngine
from milepost.core.errors import InvalidArgument, NotFound
from tests.engines.conftest import Data


def test_files_are_in_natural_order_and_markers_are_skipped(tmp_path: Path) -> None:
    for name in ("part-10.parquet", "part-2.parquet", "part-1.parquet"):
        pq.write_table(pa.table({"x": [int(name.split("-")[1].split(".")[0])]}), tmp_path / name)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-1.parquet.crc").write_text("")
    assert [Path(p).name for p in parquet_io.parquet_files(str(tmp_path))] == [
        "part-1.parquet", "part-2.parquet", "part-10.parquet"]
    assert parquet_io.read_table(str(tmp_path)).column("x").to_pylist() == [1, 2, 10]
    assert parquet_io.count_rows(tmp_path.as_uri()) == 3


def test_file_uris_with_escapes_are_local_paths(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1]}), folder / "a.parquet")
    assert parquet_io.local_path(folder.as_uri()) == folder
    assert parquet_io.count_rows(folder.as_uri()) == 1


def test_missing_and_empty_datasets(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nothing"):
        parquet_io.parquet_files(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match="no data files"):
        parquet_io.parquet_files(str(tmp_path / "empty"))


def test_native_writes_one_file_for_a_parquet_sink(logistic, data: Data, tmp_path: Path) -> None:
    job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / "scored.parquet"), keep=("note", "id"))
    result = NativeEngine().score_dataset(logistic[1], job)
    table = pq.read_table(tmp_path / "scored.parquet")
    assert result.rows == table.num_rows == len(data.X)
    assert table.column_names == ["note", "id", "probabilities"]
    assert table.column("note")[12345].as_py() == "row 12345"


def test_a_failing_job_leaves_no_sink_behind(logistic, data: Data, tmp_path: Path) -> None:
    class Failing(NativeEngine):
        def load(self, bundle_dir, deployment):
            model = super().load(bundle_dir, deployment)
            calls = []
            real = model.predict

            def predict(batch, deadline=None):
                calls.append(1)
                if len(calls) == 3:
                    raise InvalidArgument("column 'f1' went bad on the third batch")
                return real(batch, deadline)

            model.predict = predict  # type: ignore[method-assign]  # a stand-in that fails the third batch
            return model

    for sink in ("out", "out.parquet"):
        job = DatasetJob(source=str(data.dataset_dir), sink=str(tmp_path / sink), batch_rows=1000)
        with pytest.raises(InvalidArgument, match="third batch"):
            Failing().score_dataset(logistic[1], job)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_keep_may_not_shadow_an_output(logistic, data: Data, tmp_path: Path) -> None:
    table = parquet_io.read_table(str(data.dataset_dir)).append_column("probabilities", pa.array(np.zeros(len(data.X))))
    pq.write_table(table, tmp_path / "in.parquet")
    job = DatasetJob(source=str(tmp_path / "in.parquet"), sink=str(tmp_path / "o"), keep=("probabilities",))
    with pytest.raises(InvalidArgument, match="collide"):
        NativeEngine().score_dataset(logistic[1], job)


def test_job_fields_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="batch_rows"):
        DatasetJob(source="a", sink="b", batch_rows=0)
    with pytest.raises(InvalidArgument, match="keep"):
        DatasetJob(source="a", sink="b", keep="id")  # type: ignore[arg-type]  # the wrong type on purpose
