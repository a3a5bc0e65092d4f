"""Dataset scoring on the engines, each beside what users write today, same data, one run.

    python benchmarks/engines.py [--rows 1000000] [--trees 500] [--depth 8] [--only native,spark,ray,torch]

A Parquet dataset of ``--rows`` rows x 100 float32 features (plus an id) is scored
with an XGBoost model of 500 trees of depth 8, compiled by the scoring core:

- Milepost on Spark (mapInArrow, the scoring core in the executors) beside a plain
  Spark pandas UDF calling XGBoost's inplace_predict (model broadcast, loaded once
  per worker, one XGBoost thread per task as Spark gives each task one core);
- Milepost on Ray (Ray Data map_batches over an actor pool) beside Ray Data
  map_batches calling XGBoost's inplace_predict with the same pool and CPUs;
- the native engine streaming the file in this process (and XGBoost doing the same,
  for reference);
- torch: an MLP 100-256-256-1 on the torch engine, on CPU and, when torch sees a GPU,
  on CUDA (skipped with the reason otherwise).

Each job reads the dataset and writes Parquet with the id and the prediction. Spark
and Ray run local (2 CPUs) here; a warm-up job on a small file starts their workers
first, so the figures are steady-state scoring, not start-up. Every output is checked
against XGBoost's own predictions. Rows/s and the Milepost/plain ratios are printed and
written to benchmarks/results/engines.json (engines-<rows>.json for other row counts).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import machine, table, write  # noqa: E402

FEATURES = [f"f{i}" for i in range(100)]
FILE_ROWS = 250_000
ROW_GROUP_ROWS = 65_536


# ---- data and models ----
def make_dataset(root: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` rows in files of FILE_ROWS, written once and reused by later runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / f"data-{rows}"
    if path.is_dir():
        return path
    staging = root / f".data-{rows}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        X = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        columns = {"id": np.arange(start, start + n, dtype=np.int64), **{f: X[:, j] for j, f in enumerate(FEATURES)}}
        pq.write_table(pa.table(columns), staging / f"part-{i:05d}.parquet", row_group_size=ROW_GROUP_ROWS)
    staging.rename(path)
    return path


def train_xgboost(root: Path, trees: int, depth: int):
    import xgboost as xgb

    path = root / f"xgboost-{trees}x{depth}.json"
    if not path.exists():
        rng = np.random.default_rng(1)
        X = rng.normal(size=(20_000, len(FEATURES))).astype(np.float32)
        y = (X @ rng.normal(size=len(FEATURES)) + 2 * np.sin(3 * X[:, 0]) > 0).astype(np.int32)
        booster = xgb.train({"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "tree_method": "hist",
                             "nthread": os.cpu_count()}, xgb.DMatrix(X, y), num_boost_round=trees)
        booster.save_model(path)
    booster = xgb.Booster()
    booster.load_model(path)
    return booster, path


def compile_bundle(root: Path, model_path: Path) -> Path:
    import scoring_core

    bundle_dir = root / f"bundle-{model_path.stem}"
    if not bundle_dir.is_dir():
        scoring_core.compile(model_path).save(bundle_dir)
    return bundle_dir


# ---- the plain counterparts, as users write them ----
def spark_pandas_udf(spark, booster_raw: bytes, source: str, sink: str) -> None:
    import pandas as pd
    from pyspark.sql.functions import pandas_udf, struct

    model = spark.sparkContext.broadcast(booster_raw)

    def score(features: pd.DataFrame) -> pd.Series:
        booster = _cached_booster(model.value)
        return pd.Series(booster.inplace_predict(features.to_numpy(dtype=np.float32)))

    # Real classes, not this module's postponed strings: Spark infers the UDF kind from them.
    score.__annotations__ = {"features": pd.DataFrame, "return": pd.Series}
    predict = pandas_udf(score, "double")

    df = spark.read.parquet(source)
    df.select("id", predict(struct(*FEATURES)).alias("prediction")).write.parquet(sink)


_BOOSTERS: dict[int, object] = {}


def _cached_booster(raw: bytes):
    """One Booster per worker process, as a careful user would keep it."""
    import xgboost as xgb

    key = hash(raw)
    if key not in _BOOSTERS:
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        booster.set_param({"nthread": 1})
        _BOOSTERS[key] = booster
    return _BOOSTERS[key]


class XGBoostBatches:
    """Ray Data map_batches callable holding a Booster (one per actor), XGBoost's own
    thread count left as users leave it (every core)."""

    def __init__(self, raw) -> None:
        import ray
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(bytearray(ray.get(raw)))  # the model through the object store, once per actor

    def __call__(self, batch):
        import pyarrow as pa

        X = np.column_stack([batch.column(f).to_numpy() for f in FEATURES])
        return pa.table({"id": batch.column("id"), "prediction": self.booster.inplace_predict(X)})


def ray_map_batches(raw: bytes, source: str, sink: str, batch_rows: int) -> None:
    """Read, map_batches over one actor of one CPU (a second would leave the read tasks
    no CPU on 2 cores and the job would stall), write."""
    import ray
    import ray.data

    from engines import parquet_io

    # One block per row group, as many work items as Milepost shares out, so both pools are kept busy.
    ds = ray.data.read_parquet(source, override_num_blocks=len(parquet_io.row_group_pieces(source)))
    ds.map_batches(XGBoostBatches, fn_constructor_kwargs={"raw": ray.put(raw)}, batch_format="pyarrow",
                   batch_size=batch_rows, concurrency=1, num_cpus=1).write_parquet(sink)


# ---- running and checking ----
def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def check(sink: Path, expected: np.ndarray) -> float:
    """Max abs difference between a job's predictions and the reference, rows matched by id.
    Plain jobs write XGBoost's P(class 1) as "prediction"; Milepost's compiled classifier
    writes both classes' "probabilities"."""
    from engines import parquet_io

    table = parquet_io.read_table(str(sink))
    ids = table.column("id").to_numpy()
    if "probabilities" in table.column_names:
        column = table.column("probabilities").combine_chunks()
        got = column.flatten().to_numpy().reshape(len(column), -1)[:, 1]
    else:
        got = table.column("prediction").to_numpy()
    return float(np.max(np.abs(got - expected[ids]))) if len(ids) == len(expected) else float("inf")


def reference(booster, data: Path) -> np.ndarray:
    """XGBoost's predictions for the dataset, in id order (and XGBoost's own streaming rate)."""
    import pyarrow.parquet as pq

    from engines import parquet_io

    out = []
    for path in parquet_io.parquet_files(str(data)):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=FEATURES):
            out.append(booster.inplace_predict(np.column_stack([batch.column(f).to_numpy() for f in FEATURES])))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--only", default="native,spark,ray,torch")
    parser.add_argument("--work-dir", default=os.environ.get("MILEPOST_BENCH_DIR", "/tmp/milepost-bench-engines"))
    parser.add_argument("--batch-rows", type=int, default=65536)
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    root = Path(args.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    outputs = root / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir()

    from engines.base import DatasetJob

    print(f"data: {args.rows:,} rows x {len(FEATURES)} float32 features; model: XGBoost {args.trees} trees depth {args.depth}")
    data = make_dataset(root, args.rows)
    warm = make_dataset(root, 20_000)
    booster, model_path = train_xgboost(root, args.trees, args.depth)
    raw = bytes(booster.save_raw("ubj"))
    bundle_dir = compile_bundle(root, model_path)
    t0 = time.perf_counter()
    expected = reference(booster, data)
    xgb_streaming_s = time.perf_counter() - t0
    rows: list[list[object]] = []
    results: dict[str, dict] = {}

    def record(name: str, engine: str, seconds: float, sink: Path, *, plain: str = "") -> None:
        error = check(sink, expected)
        entry = {"engine": engine, "seconds": seconds, "rows_per_s": args.rows / seconds, "max_abs_error": error}
        if plain:
            entry["vs"] = plain
            entry["ratio"] = results[plain]["seconds"] / seconds
        results[name] = entry
        rows.append([name, engine, seconds, args.rows / seconds, entry.get("ratio", ""), f"{error:.1e}"])
        print(f"  {name}: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s", flush=True)

    def job(name: str, source: Path, **options: object) -> DatasetJob:
        return DatasetJob(source=str(source), sink=str(outputs / name), keep=("id",), batch_rows=args.batch_rows,
                          options=options)

    results["xgboost streaming"] = {
        "engine": "this process", "seconds": xgb_streaming_s, "rows_per_s": args.rows / xgb_streaming_s,
        "note": "XGBoost inplace_predict on the file's batches, no output written"}
    rows.append(["xgboost streaming", "this process", xgb_streaming_s, args.rows / xgb_streaming_s, "", "0"])

    if "native" in wanted:
        from engines.native import NativeEngine

        native = NativeEngine()
        native.score_dataset(bundle_dir, job("warm-native", warm))
        seconds = timed(lambda: native.score_dataset(bundle_dir, job("native", data)))
        record("milepost native streaming", "this process", seconds, outputs / "native", plain="xgboost streaming")

    if "spark" in wanted:
        from engines import spark as spark_engine

        spark = spark_engine.session("local[2]")
        engine = spark_engine.SparkEngine(master="local[2]")
        spark_pandas_udf(spark, raw, str(warm), str(outputs / "warm-spark-udf"))
        engine.score_dataset(bundle_dir, job("warm-spark", warm))
        seconds = timed(lambda: spark_pandas_udf(spark, raw, str(data), str(outputs / "spark-udf")))
        record("spark pandas UDF + xgboost", "spark local[2]", seconds, outputs / "spark-udf")
        seconds = timed(lambda: engine.score_dataset(bundle_dir, job("spark", data)))
        record("milepost on spark", "spark local[2]", seconds, outputs / "spark", plain="spark pandas UDF + xgboost")
        spark_engine.stop_session()

    if "ray" in wanted:
        import ray

        from engines import ray as ray_engine

        ray_engine.connect("")
        # Each side as it runs best on the 2 CPUs: the plain pipeline with one actor (XGBoost
        # on every core) beside Ray's read and write tasks; Milepost with its default pool
        # (one single-threaded actor per CPU, reading and writing for itself).
        engine = ray_engine.RayEngine(address="")
        ray_map_batches(raw, str(warm), str(outputs / "warm-ray-plain"), args.batch_rows)
        engine.score_dataset(bundle_dir, job("warm-ray", warm))
        seconds = timed(lambda: ray_map_batches(raw, str(data), str(outputs / "ray-plain"), args.batch_rows))
        record("ray map_batches + xgboost", "ray local, 1 actor", seconds, outputs / "ray-plain")
        seconds = timed(lambda: engine.score_dataset(bundle_dir, job("ray", data)))
        record("milepost on ray", "ray local, 2 actors", seconds, outputs / "ray", plain="ray map_batches + xgboost")
        ray.shutdown()

    if "torch" in wanted:
        run_torch(root, data, warm, outputs, args, results, rows)

    print()
    print(table(["RUN", "WHERE", "SECONDS", "ROWS/S", "RATIO", "MAX ABS ERR"], rows))
    payload = {"machine": machine(), "rows": args.rows, "features": len(FEATURES),
               "model": f"xgboost {args.trees} trees depth {args.depth}", "results": results}
    name = "engines" if args.rows == 1_000_000 else f"engines-{args.rows}"
    print(f"\nwritten to {write(name, payload)}")


def run_torch(root: Path, data: Path, warm: Path, outputs: Path, args: argparse.Namespace, results: dict, rows: list) -> None:
    """The torch engine on an MLP 100-256-256-1: CPU, and CUDA when there is a GPU."""
    import torch

    from engines import parquet_io
    from engines.base import DatasetJob
    from engines.torch import TorchEngine, save_bundle

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(100, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                 torch.nn.ReLU(), torch.nn.Linear(256, 1)).eval()
    bundle_dir = root / "bundle-mlp-torch"
    if not bundle_dir.exists():
        save_bundle(module, bundle_dir, example_input=np.zeros((4, 100), np.float32), feature_names=FEATURES,
                    export="export")
    table_ = parquet_io.read_table(str(data), columns=FEATURES)
    X = np.column_stack([table_.column(f).to_numpy() for f in FEATURES])
    with torch.inference_mode():
        truth = module(torch.from_numpy(X)).numpy()[:, 0].astype(np.float64)
    del X, table_
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        results["torch cuda"] = {"skipped": "no CUDA device: torch sees none on this node"}
        print("  torch cuda: skipped (no CUDA device)")
    engine = TorchEngine()
    for device in devices:
        for half in ([False, True] if device == "cuda" else [False]):
            name = f"milepost torch {device}{' half' if half else ''}"
            options = {"device": device, "half": half}
            engine.score_dataset(bundle_dir, DatasetJob(source=str(warm), sink=str(outputs / f"warm-{name}"),
                                                        keep=("id",), batch_rows=args.batch_rows, options=options))
            sink = outputs / name.replace(" ", "-")
            job = DatasetJob(source=str(data), sink=str(sink), keep=("id",), batch_rows=args.batch_rows, options=options)
            seconds = timed(lambda job=job: engine.score_dataset(bundle_dir, job))
            table_ = parquet_io.read_table(str(sink))
            error = float(np.max(np.abs(table_.column("prediction").to_numpy() - truth[table_.column("id").to_numpy()])))
            results[name] = {"engine": f"torch {device}", "seconds": seconds, "rows_per_s": args.rows / seconds,
                             "max_abs_error": error, "model": "MLP 100-256-256-1"}
            rows.append([name + " (MLP)", f"torch {device}", seconds, args.rows / seconds, "", f"{error:.1e}"])
            print(f"  {name}: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()
