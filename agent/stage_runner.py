"""Running one pipeline stage on this agent, with progress streamed back to the coordinator.

The stage runs in a child process (agent.stage_process: CPU and memory limits, killed on
cancel) through its engine (engines.base: score_dataset for batch scoring, run_stage for
training and custom stages). This module decides what may run before anything starts:
the entry, the paths (inside the data roots, outside the agent's own folders), the
cluster; then it translates: parameters in, progress and outputs out. A training stage's bundle
is registered with the coordinator under the stage's ``model_name`` before the
stage reports success, with its lineage (data fingerprint, code, parameters)
inside the bundle, so the version names the data it was trained on too.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyarrow.fs as pafs

from agent import stage_process
from agent.model_cache import ModelCache
from agent.resources import GpuAssigner
from agent.stage_entries import allowed_entry
from engines import parquet_io, registry, stages
from engines.base import DatasetJob
from milepost.core import bounded_json
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, shown
from milepost.core.requirements import stage_holder
from milepost.core.settings import Settings, env_var, get_settings
from milepost.core.version import __version__
from milepost.v1 import agent_pb2, pipelines_pb2

log = logging.getLogger("milepost.agent")

# (model name, bundle directory) -> "name:version" once registered
PushModel = Callable[[str, Path], str]
# model name -> newest registered version
NewestVersion = Callable[[str], str]
Request = agent_pb2.RunStageRequest


@dataclass
class _Prepared:
    """A stage checked and ready: ``call`` for its process (agent.stage_child), ``finish`` what
    the agent does with the outputs before it reports them (a training stage registers its
    bundle), ``abandon`` what it removes when the stage fails or is cancelled (what the stage
    was writing), so a stopped stage leaves no output behind."""

    call: dict[str, Any]
    finish: Callable[[dict[str, Any]], dict[str, Any]] = lambda outputs: outputs
    abandon: Callable[[], None] = lambda: None


def dataset_files(path: str, roots: Sequence[str | Path] = ()) -> list[Path]:
    """The regular files of a dataset (a file, or every file below a folder, through the links
    an engine's reader would follow), in path order.

    With ``roots``, every entry must stay inside them once its links are followed: a folder
    inside a data root may hold a link out of it. A device or a pipe is never read (it
    would never end)."""
    root = Path(path)
    if not root.exists():
        raise NotFound(f"dataset {shown(root.name)} does not exist")
    local_roots = [Path(r).expanduser().resolve() for r in map(str, roots) if "://" not in r]

    def inside(entry: Path) -> Path:
        real = entry.resolve()
        if roots and not stages.within(real, local_roots):
            raise PermissionDenied(f"dataset {shown(root.name)}: {shown(entry.name)} links out of this agent's data roots")
        return real

    if not root.is_dir():
        if not stat.S_ISREG(inside(root).stat().st_mode):
            raise InvalidArgument(f"dataset {shown(root.name)} is neither a regular file nor a folder")
        return [root]
    files: list[Path] = []
    seen: set[Path] = set()
    folders = [root]
    while folders:
        folder = folders.pop()
        real = inside(folder)
        if real in seen:  # a link back to a folder already read
            continue
        seen.add(real)
        for entry in folder.iterdir():
            target = inside(entry)
            if target.is_dir():
                folders.append(entry)
            elif target.exists() and stat.S_ISREG(target.stat().st_mode):
                files.append(entry)
    return sorted(files)


def fingerprint(path: str, roots: Sequence[str | Path] = ()) -> str:
    """sha256 over the files of a dataset (a file, or a folder's files in path order); see
    ``dataset_files`` for what ``roots`` checks."""
    root = Path(path)
    digest = hashlib.sha256()
    for f in dataset_files(path, roots):
        digest.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
        with f.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class StageRunner:
    """Runs stages for the agent whose data directory is ``data_dir`` (by default the folder
    above ``work_dir``, where training stages write their bundles). A stage reads and writes
    datasets only inside the data roots (that directory and the ``data_roots`` setting), and
    never inside the agent's own folders: its model cache and its stages' work.

    A stage whose resources ask for GPUs (the coordinator resolved ``resources.device``
    into them) holds them in ``gpus``, the agent's GpuAssigner, from before it starts until
    its process ended, as "stage:RUN/STAGE": the agent's heartbeats report it like a
    replica, so placement counts it. Its process sees only those GPUs
    (CUDA_VISIBLE_DEVICES; "" for a stage holding none), the first as "cuda:0": a batch
    scoring stage scores there (the CUDA scoring core for the native engine), a custom
    stage's function finds it in ``inputs["device"]`` ("cpu" without a GPU), a training
    function uses "cuda" (or reads CUDA_VISIBLE_DEVICES)."""

    def __init__(self, cache: ModelCache, work_dir: Path, push_model: PushModel, newest: NewestVersion,
                 data_dir: Path | None = None, gpus: GpuAssigner | None = None) -> None:
        self.gpus = gpus if gpus is not None else GpuAssigner(list)
        self.cache = cache
        self.work_dir = work_dir
        self.push_model = push_model
        self.newest = newest
        self.data_dir = Path(data_dir) if data_dir is not None else Path(work_dir).parent

    def roots(self) -> list[str]:
        """Where stages may read and write: the agent's data directory, then the operator's
        ``data_roots`` (read at each stage, as every setting is)."""
        return [str(self.data_dir), *get_settings().data_roots]

    def _path(self, value: Any, what: str) -> str:
        path = stages.confined(value, what, self.roots(), base=self.data_dir)
        for own in (self.cache.root, self.work_dir):
            if stages.within(Path(path), [Path(own).resolve()]):
                raise PermissionDenied(f"{what} is inside the agent's own {Path(own).name}/ folder, which stages "
                                       f"may not read or write; keep datasets elsewhere in the data roots")
        return path

    def run(self, request: agent_pb2.RunStageRequest, context: grpc.ServicerContext) -> Iterator[pipelines_pb2.StageProgress]:
        stage = request.stage
        settings = get_settings()
        params = bounded_json.loads(
            request.params_json or "{}", max_depth=settings.max_pipeline_spec_depth,
            what=f"stage {shown(stage.name)}: params_json", setting="max_pipeline_spec_depth",
        )
        check_cluster(stage.engine, params, settings)
        engine = registry.get(stage.engine)
        info = engine.info()
        if not info.available:
            raise FailedPrecondition(f"engine {stage.engine!r} cannot run here: {info.reason}")
        if stage.kind not in ("batch_scoring", "training", "custom"):
            raise InvalidArgument(f"agents run training, batch_scoring and custom stages, not {stage.kind!r}")
        holder = stage_holder(request.run_id, stage.name)
        held = (self.gpus.assign(holder, stage.resources.gpus, stage.resources.gpu_memory_bytes)
                if stage.resources.gpus > 0 else "")
        gpus = self.gpus.held().get(holder, ())
        try:
            if stage.kind == "batch_scoring":
                prepared = self._score(request, params, held)
            else:
                prepared = self._train(request, params) if stage.kind == "training" else self._custom(request, params)
        except BaseException:
            self.gpus.release(holder)
            raise
        prepared.call.update(engine=stage.engine, name=stage.name)
        events: queue.Queue = queue.Queue()
        stop = threading.Event()

        def target() -> None:
            try:
                try:
                    outputs = stage_process.run(prepared.call, get_settings(), what=f"stage {shown(stage.name)}",
                                                progress=lambda rows: events.put(("rows", rows)),
                                                cancelled=stop.is_set, gpus=gpus)
                finally:  # before the answer: the next stage the coordinator places here may ask for these GPUs
                    self.gpus.release(holder)
                events.put(("done", prepared.finish(outputs)))
            except BaseException as err:  # noqa: BLE001 - handed to the streaming thread
                prepared.abandon()
                events.put(("error", err))

        threading.Thread(target=target, name=f"stage-{stage.name}", daemon=True).start()
        try:
            while True:
                try:
                    kind, value = events.get(timeout=1.0)
                except queue.Empty:
                    if not context.is_active():
                        return  # cancelled: the finally below stops the stage's process
                    continue
                if kind == "rows":
                    yield pipelines_pb2.StageProgress(rows=int(value), message="running")
                elif kind == "error":
                    raise value
                else:
                    outputs = {k: str(v) for k, v in value.items()}
                    yield pipelines_pb2.StageProgress(rows=int(value.get("rows", 0)), message="done", done=True,
                                                      outputs=outputs)
                    return
        finally:
            stop.set()

    # ---- the kinds: what the stage's process runs, and what the agent does with its answer ----
    def _bundle(self, ref: str) -> Path:
        name, _, version = ref.partition(":")
        if not name:
            raise InvalidArgument(f"model reference {ref!r}: expected NAME[:VERSION]")
        return self.cache.get(name, version if len(version) == 64 else self.newest(name) if not version else version)

    def _score(self, request: Request, params: dict[str, Any], device: str) -> _Prepared:
        """``device``: the GPU the stage holds ("cuda:N", the agent's numbering, which its
        outputs report), or "" for none (then ``params.options.device`` may only be "cpu": the
        stage's process sees no GPU). The engine gets "cuda:0": its process sees only the GPUs
        it holds, the first of them as cuda:0."""
        name = request.stage.name
        for key in ("model", "source", "sink"):
            if not params.get(key):
                raise InvalidArgument(f"batch_scoring stage {shown(name)} needs params.{key}")
        source = self._path(params["source"], f"stage {shown(name)} params.source")
        sink = self._path(params["sink"], f"stage {shown(name)} params.sink")
        if "://" not in source and Path(source).exists():
            dataset_files(source, self.roots())  # no link in it leads out of the roots
        options = dict(params.get("options", {}))
        if device and "device" in options:
            raise InvalidArgument(
                f"batch_scoring stage {shown(name)}: params.options.device {shown(options['device'])} and its "
                f"resources (gpus or device) both choose a device; drop options.device: the stage runs on the GPU "
                f"this agent assigns it ({device})")
        if not device and str(options.get("device", "cpu")) != "cpu":
            raise InvalidArgument(
                f"batch_scoring stage {shown(name)}: params.options.device {shown(options['device'])} needs a GPU, and "
                f"the stage holds none (its process sees no GPU); ask for one with resources.gpus or resources.device "
                f"gpu, and drop options.device")
        if device:
            options["device"] = STAGE_GPU
        job = DatasetJob(
            source=source, sink=sink, keep=tuple(params.get("keep", ())),
            batch_rows=int(params.get("batch_rows", get_settings().batch_rows)), options=options,
        )
        parquet_io.check_sink_free(job.sink)  # so that what abandon removes is this stage's own
        call = {"kind": "score", "bundle": str(self._bundle(str(params["model"]))),
                "job": {"source": job.source, "sink": job.sink, "keep": list(job.keep), "batch_rows": job.batch_rows,
                        "options": dict(job.options)}}
        where = device or "cpu"
        return _Prepared(call, finish=lambda outputs: {**outputs, "device": where}, abandon=lambda: _remove(job.sink))

    def _train(self, request: Request, params: dict[str, Any]) -> _Prepared:
        stage = request.stage
        for key in ("entry", "data", "model_name"):
            if not params.get(key):
                raise InvalidArgument(f"training stage {shown(stage.name)} needs params.{key}")
        entry = allowed_entry(params["entry"])
        data = self._path(params["data"], f"stage {shown(stage.name)} params.data")
        out = self._stage_dir(request)
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        engine = registry.get(stage.engine)
        lineage = {
            "data": str(params["data"]), "data_fingerprint": fingerprint(data, self.roots()),
            "code": f"{entry} (milepost {__version__}, engine {stage.engine} {engine.info().version})",
            "params": params.get("params", {}), "pipeline_run": request.run_id, "stage": stage.name,
        }
        call = {"kind": "training", "entry": entry, "params": params.get("params", {}),
                "inputs": {"data": data, "output": str(out / "bundle"), "lineage": lineage}}

        def finish(outputs: dict[str, Any]) -> dict[str, Any]:
            bundle_dir = Path(str(outputs.get("model", ""))).resolve()
            if not bundle_dir.is_relative_to(out.resolve()):  # the stage's answer names what the agent pushes
                self._path(str(bundle_dir), f"stage {shown(stage.name)}: the bundle its function returned")
            ref = self.push_model(str(params["model_name"]), bundle_dir)
            return {"model": ref, "version": ref.partition(":")[2], "data_fingerprint": lineage["data_fingerprint"]}

        return _Prepared(call, finish, abandon=lambda: shutil.rmtree(out, ignore_errors=True))

    def _stage_dir(self, request: Request) -> Path:
        """work_dir/RUN/STAGE, where a training stage writes its bundle; both names single path
        parts, so that nothing outside work_dir is ever removed."""
        for what, part in (("run id", request.run_id), ("stage name", request.stage.name)):
            if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
                raise InvalidArgument(f"{what} {shown(part)} cannot name a folder")
        return self.work_dir / request.run_id / request.stage.name

    def _custom(self, request: Request, params: dict[str, Any]) -> _Prepared:
        name = request.stage.name
        if not params.get("entry"):
            raise InvalidArgument(f"custom stage {shown(name)} needs params.entry (module:function)")
        entry = allowed_entry(params["entry"])
        inputs = dict(params.get("inputs", {}))
        if "device" in inputs:
            raise InvalidArgument(f"custom stage {shown(name)}: inputs.device is the agent's to set (the GPU the stage "
                                  "holds, or cpu); drop it and ask for a GPU with resources.gpus or resources.device")
        inputs["device"] = STAGE_GPU if request.stage.resources.gpus > 0 else "cpu"
        for key in ("data", "source", "sink", "output"):  # the dataset inputs a stage function takes by convention
            if isinstance(inputs.get(key), str):
                inputs[key] = self._path(inputs[key], f"stage {shown(name)} inputs.{key}")
        call = {"kind": "custom", "entry": entry, "params": params.get("params", {}), "inputs": inputs}
        return _Prepared(call)  # engines check that a stage answers a dict; what it writes is its own


def _remove(sink: str) -> None:
    """Remove what a stopped batch-scoring stage had written at ``sink`` (a part file, Spark's
    _temporary folder) and, for a local sink, the hidden siblings engines stage their output in
    (engines.parquet_stream.staging_name), so that a cancelled run writes no output."""
    fs, path = parquet_io.resolve(sink)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type != pafs.FileType.NotFound:
            fs.delete_file(path)
        if isinstance(fs, pafs.LocalFileSystem):
            for staging in Path(path).parent.glob(f".{Path(path).name}.writing-*"):
                if staging.is_dir():
                    shutil.rmtree(staging)
                else:
                    staging.unlink()
    except OSError:
        log.warning("could not remove the partial output of a stopped stage at %s", sink, exc_info=True)


# The device a stage holding a GPU runs on, in its own process: CUDA_VISIBLE_DEVICES there
# lists only the GPUs it holds (agent.stage_process.visible_devices), the first being cuda:0.
STAGE_GPU = "cuda:0"

# The option of each cluster engine that names its cluster, with the settings that allow one.
_CLUSTER_OPTIONS = {"spark": ("master", "spark_master", "spark_masters"), "ray": ("address", "ray_address", "ray_addresses")}
_LOCAL_SPARK = re.compile(r"^local(\[(\d+|\*)(,\d+)?\])?$")


def check_cluster(engine: str, params: dict[str, Any], settings: Settings) -> None:
    """A stage may name only a cluster the operator configured: a pipeline that picks its own
    would ship the agent's data and the stage's code to a foreign Spark master or Ray head.
    Allowed: the engine's setting, those listed beside it, and a local one (local[N], or an
    empty Ray address)."""
    if engine not in _CLUSTER_OPTIONS:
        return
    option, configured, listed = _CLUSTER_OPTIONS[engine]
    for where, holder in (("params", params), ("params.params", params.get("params")), ("params.options", params.get("options"))):
        if not isinstance(holder, dict) or option not in holder:
            continue
        value = holder[option]
        local = _LOCAL_SPARK.match(str(value)) if engine == "spark" else value == ""
        if not (local or value == getattr(settings, configured) or value in getattr(settings, listed)):
            raise PermissionDenied(
                f"{where}.{option} {shown(value, 40)} is not a cluster this agent may use: it uses "
                f"{env_var(configured)}, a local one, or those listed in {env_var(listed)}"
            )
