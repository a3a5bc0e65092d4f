"""`milepost score-dataset` as the CLI runs it: a real coordinator holds the model, the
command fetches it and scores a Parquet dataset on each engine, with progress on stderr.

Most call milepost.dataset_command through its own argparse parser, in this process,
so that Spark and Ray are the test session's shared ones; the last runs the real
`milepost score-dataset` command line against a real `milepost up`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from engines import parquet_io
from milepost import dataset_command
from milepost.core.errors import InvalidArgument, NotFound
from tests.engines.conftest import Data, as_matrix


def parse(*argv: str) -> argparse.Namespace:
    from milepost.cli import common_arguments
    from milepost.core.settings import read_settings

    parser = argparse.ArgumentParser(prog="milepost")
    dataset_command.add_parser(parser.add_subparsers(dest="command"), common_arguments(read_settings()))
    return parser.parse_args(list(argv))


@pytest.fixture
def registered(cluster, logistic, torch_model):
    """The logistic and torch bundles pushed to a real coordinator."""
    client = cluster.client
    client.push_model(logistic[1], "churn")
    client.push_model(torch_model[1]["export"], "mlp")
    yield cluster.coordinator.address
    client.close()


@pytest.mark.parametrize("engine", ["native", "spark", "ray", "torch"])
def test_score_dataset_command_on_each_engine(
    engine: str, registered: str, data: Data, logistic, torch_model, tmp_path: Path, capsys, request,
) -> None:
    import torch

    if engine in ("spark", "ray"):
        request.getfixturevalue(f"{engine}_engine")  # the session's shared Spark / Ray
    model = "mlp" if engine == "torch" else "churn"
    out = tmp_path / "scored"
    args = parse("score-dataset", model, "--coordinator", registered, "--input", str(data.dataset_dir),
                 "--output", str(out), "--engine", engine, "--keep", "id", "--batch-rows", "4096")
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert f"scored {len(data.X):,} rows" in captured.out and engine in captured.out
    assert f"{len(data.X):,}/{len(data.X):,} rows (100%)" in captured.err
    table = parquet_io.read_table(str(out))
    np.testing.assert_array_equal(table.column("id").to_numpy(), data.ids)
    if engine == "torch":
        with torch.inference_mode():
            expected = torch_model[0](torch.from_numpy(data.X)).numpy()
    else:
        expected = logistic[0].predict_proba(data.X.astype(np.float64))
    np.testing.assert_allclose(as_matrix(table.column(1)), expected, rtol=1e-5, atol=1e-6)


def test_unknown_model_is_not_found(registered: str, data: Data, tmp_path: Path) -> None:
    args = parse("score-dataset", "nope", "--coordinator", registered, "--input", str(data.dataset_dir),
                 "--output", str(tmp_path / "o"))
    with pytest.raises(NotFound, match="nope"):
        args.func(args)


def test_engine_flags_must_match_the_engine(registered: str, data: Data, tmp_path: Path) -> None:
    args = parse("score-dataset", "churn", "--coordinator", registered, "--input", str(data.dataset_dir),
                 "--output", str(tmp_path / "o"), "--master", "local[1]")
    with pytest.raises(InvalidArgument, match="--master applies to --engine spark"):
        args.func(args)


def test_torch_model_on_a_compiled_model_engine_is_refused(registered: str, data: Data, tmp_path: Path) -> None:
    from milepost.core.errors import Unimplemented

    args = parse("score-dataset", "mlp", "--coordinator", registered, "--input", str(data.dataset_dir),
                 "--output", str(tmp_path / "o"), "--engine", "spark")
    with pytest.raises(Unimplemented, match="flavor 'torch'"):
        args.func(args)


def test_milepost_score_dataset_through_the_cli(up, logistic, data: Data, tmp_path: Path) -> None:
    """The real command line against a real `milepost up`: fetch, score natively, progress on stderr."""
    import subprocess

    from milepost.client import Client
    from tests.conftest import ROOT, milepost_cmd

    with Client(up.coordinator) as client:
        version = client.push_model(logistic[1], "churn").version
    out = tmp_path / "scored.parquet"
    done = subprocess.run(
        milepost_cmd("score-dataset", f"churn:{version[:12]}", "--coordinator", up.coordinator,
                     "--input", str(data.dataset_dir), "--output", str(out), "--keep", "id"),
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"scored {len(data.X):,} rows" in done.stdout and "native" in done.stdout
    assert f"{len(data.X):,}/{len(data.X):,} rows (100%)" in done.stderr
    table = parquet_io.read_table(str(out))
    np.testing.assert_array_equal(table.column("id").to_numpy(), data.ids)
    np.testing.assert_allclose(as_matrix(table.column("probabilities")),
                               logistic[0].predict_proba(data.X.astype(np.float64)), rtol=1e-5, atol=1e-6)
