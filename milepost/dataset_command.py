"""`milepost score-dataset`: score a Parquet dataset with a registered model, on an engine.

The bundle is fetched from the coordinator (verified against its content hash) and
scored in this process by the chosen engine: native streams the file here, torch
and python likewise, spark runs the job on the cluster given by ``--master``, ray on
the one at ``--address``. Progress (rows done) goes to stderr; the summary to stdout.

Pipelines run the same operation as a "batch_scoring" stage: the agent's stage runner
calls Engine.score_dataset too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from milepost.cli.progress import ProgressBar
from milepost.core.settings import Settings, env_var, get_settings

if TYPE_CHECKING:
    from engines.base import DatasetJob, JobResult

ENGINES = ("native", "torch", "onnx", "python", "spark", "ray")


def add_parser(
    subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser, settings: Settings | None = None,
) -> argparse.ArgumentParser:
    """Register ``score-dataset`` on the CLI's subparsers; defaults from ``settings`` (the process's when None)."""
    settings = settings or get_settings()
    p = subparsers.add_parser(
        "score-dataset", parents=[common_parent],
        help="score a Parquet file or directory with a registered model on an engine",
    )
    p.add_argument("model", metavar="MODEL[:VERSION]",
                   help="registered model (NAME:NUMBER, NAME@ALIAS, NAME@sha256:HEX); the newest version when none is given")
    p.add_argument("--input", required=True, help="Parquet file or directory (path or file:// URI)")
    p.add_argument("--output", required=True, help="where to write the scored Parquet (must not exist)")
    p.add_argument("--engine", choices=ENGINES, default="",
                   help="engine to run on (default: the model flavor's engine, native for compiled models)")
    p.add_argument("--master", default="",
                   help=f"Spark master URL (spark engine; default {settings.spark_master}, ${env_var('spark_master')})")
    p.add_argument("--address", default="",
                   help=f"Ray cluster address (ray engine; default ${env_var('ray_address')}, else a local Ray)")
    p.add_argument("--keep", default="", metavar="COLS", help="comma-separated input columns to copy to the output")
    p.add_argument("--batch-rows", type=int, default=settings.batch_rows, help="rows scored per call")
    p.add_argument("--device", default="",
                   help="native: cpu, gpu (the CUDA scoring core on cuda:0), auto (gpu when --batch-rows reaches "
                   "MILEPOST_GPU_CROSSOVER_ROWS, as deploy --device auto), cuda or cuda:N; torch: cpu, cuda, cuda:N "
                   "or auto (its first GPU when it sees one)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from engines.base import DatasetJob
    from milepost.core.errors import InvalidArgument
    from milepost.core.model_refs import split_model_ref

    name, version = split_model_ref(args.model)
    if not name:
        raise InvalidArgument(f"MODEL {args.model!r}: expected NAME, NAME:VERSION or NAME@ALIAS")
    options: dict[str, object] = {}
    for flag, engine, value in (("--master", "spark", args.master), ("--address", "ray", args.address),
                                ("--device", "torch", args.device)):
        if value:
            if flag == "--device" and args.engine in ("", "native"):
                value = native_device(value, args.batch_rows)
            elif args.engine != engine:
                raise InvalidArgument(f"{flag} applies to --engine {engine}, not {args.engine or 'the default engine'}")
            options[flag.lstrip("-")] = value
    keep = tuple(c.strip() for c in args.keep.split(",") if c.strip())
    job = DatasetJob(source=args.input, sink=args.output, batch_rows=args.batch_rows, keep=keep, options=options)
    bar = ProgressBar(_total_rows(args.input), sys.stderr, unit="rows")
    from milepost.cli.arguments import client

    with tempfile.TemporaryDirectory(prefix="milepost-score-") as tmp:
        bundle_dir = Path(tmp) / "bundle"
        with client(args) as c:
            c.fetch_model(name, version, bundle_dir)
        # Closed before the job starts: Spark starts its JVM by fork and exec, and a fork while
        # gRPC's threads serve a call can leave the child broken ("Java gateway process exited").
        result = score_bundle(bundle_dir, job, engine=args.engine, progress=bar.update)
    bar.finish(result.rows)
    where = f" ({options['device']})" if "device" in options else ""
    print(f"scored {result.rows:,} rows of {args.input} with {name} on {result.engine}{where} "
          f"in {result.seconds:.1f} s ({result.rows / max(result.seconds, 1e-9):,.0f} rows/s) -> {result.sink}")
    return 0


def native_device(device: str, batch_rows: int) -> str:
    """Where the native engine scores a dataset here: "cpu", "gpu" and "auto" as a deployment
    takes them (Requirements.on_device, with ``batch_rows`` as the batch: "auto" takes the
    GPU from gpu_crossover_rows rows a call), a GPU meaning this machine's first ("cuda:0");
    "cuda" or "cuda:N" name one outright."""
    from milepost.core.errors import InvalidArgument
    from milepost.core.requirements import Requirements

    if device == "cuda" or device.startswith("cuda:"):
        return device
    try:
        wants = Requirements().on_device(device, batch_rows, get_settings().gpu_crossover_rows)
    except InvalidArgument as err:
        raise InvalidArgument(f"--device {device!r} is unknown; use cpu, gpu, auto, cuda or cuda:N") from err
    return "cuda:0" if wants.gpus else "cpu"


def score_bundle(
    bundle_dir: Path, job: DatasetJob, *, engine: str = "", progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Run ``job`` with the bundle at ``bundle_dir`` on ``engine`` (the flavor's default when
    empty); returns the engine's JobResult."""
    from engines import registry
    from scoring_core import bundle

    flavor = str(bundle.read_manifest(bundle_dir).get("flavor", ""))
    chosen = registry.engine_for(flavor, engine, online=False)
    return chosen.score_dataset(bundle_dir, job, progress)


def _total_rows(source: str) -> int | None:
    """Rows in the source, from its footers: read before the model is fetched, so that a file
    that is not Parquet (a CSV given by mistake) is refused at once and as the caller's."""
    import pyarrow as pa

    from engines import parquet_io
    from milepost.core.errors import InvalidArgument, MilepostError

    try:
        return parquet_io.count_rows(source)
    except pa.ArrowInvalid as err:
        why = str(err).split(". ")[0]  # pyarrow's first sentence: "Parquet magic bytes not found in footer"
        raise InvalidArgument(f"score-dataset reads Parquet, and --input {source} is not Parquet ({why}); use "
                              "`milepost score ENDPOINT --input FILE` for a CSV or JSON file, or convert it") from err
    except (MilepostError, OSError):
        return None  # the engine reports the problem with the source itself
