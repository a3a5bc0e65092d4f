"""Running one pipeline stage on this agent, with progress streamed back to the coordinator.

The stage runs on a worker thread through its engine (engines.base: score_dataset
for batch scoring, run_stage for training and custom stages); this module only
translates: parameters in, progress and outputs out. A training stage's bundle
is registered with the coordinator under the stage's ``model_name`` before the
stage reports success, with its lineage (data fingerprint, code, parameters)
inside the bundle, so the version names the data it was trained on too.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from agent.model_cache import ModelCache
from engines import entry_points, registry, stages, trainers
from engines.base import DatasetJob, Engine, Progress, StageSpec
from milepost.core import bounded_json
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, shown
from milepost.core.settings import Settings, env_var, get_settings
from milepost.core.version import __version__
from milepost.v1 import agent_pb2, pipelines_pb2


def check_entry(entry: Any, settings: Settings | None = None) -> Callable[..., Any]:
    """The function a stage entry names, if this agent allows it; resolved here, so that the
    engine calls exactly what was checked.

    A stage entry names a function this agent will call with parameters from a remote spec:
    "os:system" would be remote code execution, and so would any attribute path that walks
    from an allowed module to what it imported ("engines.trainers:importlib.import_module").
    Allowed are exact "module:function" names: the built-in trainers (engines.trainers.BUILT_IN)
    and those the operator lists in ``stage_entries`` (MILEPOST_STAGE_ENTRIES), or any
    function defined in the module it names with ``allow_code_bundles``
    (MILEPOST_ALLOW_CODE_BUNDLES=1). ``settings``: the process's when None.

    InvalidArgument: not "module:function". PermissionDenied: not an allowed name.
    """
    settings = settings or get_settings()
    if not isinstance(entry, str) or not entry_points.well_formed(entry):
        raise InvalidArgument(f"stage entry {shown(entry)} must be an exact 'module:function' name "
                              f"(no attribute paths), e.g. {trainers.BUILT_IN[0]}")
    listed = [e for e in settings.stage_entries if entry_points.well_formed(e)]
    if not settings.allow_code_bundles and entry not in trainers.BUILT_IN and entry not in listed:
        ignored = [e for e in settings.stage_entries if e not in listed]
        note = (f"; {env_var('stage_entries')} holds {shown(ignored[0], 40)}, which is not an exact "
                f"'module:function' name (prefixes are not accepted)") if ignored else ""
        raise PermissionDenied(
            f"stage entry {shown(entry)} is not allowed on this agent: the built-in trainers are "
            f"{', '.join(trainers.BUILT_IN)}; an operator allows more with "
            f"{env_var('stage_entries')}=module:function,... or {env_var('allow_code_bundles')}=1{note}"
        )
    return entry_points.resolve(entry, "stage entry", defined_here=True)


# (model name, bundle directory) -> "name:version" once registered
PushModel = Callable[[str, Path], str]
# model name -> newest registered version
NewestVersion = Callable[[str], str]
Request = agent_pb2.RunStageRequest


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
        if roots and not any(real == r or real.is_relative_to(r) for r in local_roots):
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
    datasets only inside the data roots: that directory and the ``data_roots`` setting."""

    def __init__(self, cache: ModelCache, work_dir: Path, push_model: PushModel, newest: NewestVersion,
                 data_dir: Path | None = None) -> None:
        self.cache = cache
        self.work_dir = work_dir
        self.push_model = push_model
        self.newest = newest
        self.data_dir = Path(data_dir) if data_dir is not None else Path(work_dir).parent

    def roots(self) -> list[str]:
        """Where stages may read and write: the agent's data directory, then the operator's
        ``data_roots`` (read at each stage, as every setting is)."""
        return [str(self.data_dir), *get_settings().data_roots]

    def _path(self, params: dict[str, Any], key: str, stage: str) -> str:
        return stages.confined(params[key], f"stage {shown(stage)} params.{key}", self.roots(), base=self.data_dir)

    def run(self, request: agent_pb2.RunStageRequest, context: grpc.ServicerContext) -> Iterator[pipelines_pb2.StageProgress]:
        stage = request.stage
        params = bounded_json.loads(
            request.params_json or "{}", max_depth=get_settings().max_pipeline_spec_depth,
            what=f"stage {shown(stage.name)}: params_json", setting="max_pipeline_spec_depth",
        )
        engine = registry.get(stage.engine)
        info = engine.info()
        if not info.available:
            raise FailedPrecondition(f"engine {stage.engine!r} cannot run here: {info.reason}")
        events: queue.Queue = queue.Queue()
        work = {
            "batch_scoring": self._score, "training": self._train, "custom": self._custom,
        }.get(stage.kind)
        if work is None:
            raise InvalidArgument(f"agents run training, batch_scoring and custom stages, not {stage.kind!r}")

        def target() -> None:
            try:
                events.put(("done", work(engine, request, params, lambda rows: events.put(("rows", rows)))))
            except BaseException as err:  # noqa: BLE001 - handed to the streaming thread
                events.put(("error", err))

        threading.Thread(target=target, name=f"stage-{stage.name}", daemon=True).start()
        rows = 0
        while True:
            try:
                kind, value = events.get(timeout=1.0)
            except queue.Empty:
                if not context.is_active():
                    return  # cancelled: the engine finishes its batch and its result is dropped
                continue
            if kind == "rows":
                rows = int(value)
                yield pipelines_pb2.StageProgress(rows=rows, message="running")
            elif kind == "error":
                raise value
            else:
                outputs = {k: str(v) for k, v in value.items()}
                rows = int(value.get("rows", rows))
                yield pipelines_pb2.StageProgress(rows=rows, message="done", done=True, outputs=outputs)
                return

    # ---- the kinds ----
    def _bundle(self, ref: str) -> Path:
        name, _, version = ref.partition(":")
        if not name:
            raise InvalidArgument(f"model reference {ref!r}: expected NAME[:VERSION]")
        return self.cache.get(name, version if len(version) == 64 else self.newest(name) if not version else version)

    def _score(self, engine: Engine, request: Request, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        name = request.stage.name
        for key in ("model", "source", "sink"):
            if not params.get(key):
                raise InvalidArgument(f"batch_scoring stage {shown(name)} needs params.{key}")
        source, sink = self._path(params, "source", name), self._path(params, "sink", name)
        if "://" not in source and Path(source).exists():
            dataset_files(source, self.roots())  # no link in it leads out of the roots
        job = DatasetJob(
            source=source, sink=sink, keep=tuple(params.get("keep", ())),
            batch_rows=int(params.get("batch_rows", get_settings().batch_rows)), options=dict(params.get("options", {})),
        )
        result = engine.score_dataset(self._bundle(str(params["model"])), job, progress)
        return {"sink": result.sink, "rows": result.rows, "seconds": round(result.seconds, 3)}

    def _train(self, engine: Engine, request: Request, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        stage = request.stage
        for key in ("entry", "data", "model_name"):
            if not params.get(key):
                raise InvalidArgument(f"training stage {shown(stage.name)} needs params.{key}")
        fn = check_entry(params["entry"])
        data = self._path(params, "data", stage.name)
        out = self._stage_dir(request)
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        lineage = {
            "data": str(params["data"]), "data_fingerprint": fingerprint(data, self.roots()),
            "code": f"{params['entry']} (milepost {__version__}, engine {stage.engine} {engine.info().version})",
            "params": params.get("params", {}), "pipeline_run": request.run_id, "stage": stage.name,
        }
        spec = StageSpec(name=stage.name, kind="training", entry=fn, params=params.get("params", {}))
        result = engine.run_stage(spec, {"data": data, "output": str(out / "bundle"), "lineage": lineage})
        ref = self.push_model(str(params["model_name"]), Path(result["model"]))
        return {"model": ref, "version": ref.partition(":")[2], "data_fingerprint": lineage["data_fingerprint"]}

    def _stage_dir(self, request: Request) -> Path:
        """work_dir/RUN/STAGE, where a training stage writes its bundle; both names single path
        parts, so that nothing outside work_dir is ever removed."""
        for what, part in (("run id", request.run_id), ("stage name", request.stage.name)):
            if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
                raise InvalidArgument(f"{what} {shown(part)} cannot name a folder")
        return self.work_dir / request.run_id / request.stage.name

    def _custom(self, engine: Engine, request: Request, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        name = request.stage.name
        if not params.get("entry"):
            raise InvalidArgument(f"custom stage {shown(name)} needs params.entry (module:function)")
        fn = check_entry(params["entry"])
        inputs = dict(params.get("inputs", {}))
        for key in ("data", "source", "sink", "output"):  # the dataset inputs a stage function takes by convention
            if isinstance(inputs.get(key), str):
                inputs[key] = stages.confined(inputs[key], f"stage {shown(name)} inputs.{key}", self.roots(),
                                              base=self.data_dir)
        spec = StageSpec(name=name, kind="custom", entry=fn, params=params.get("params", {}))
        return engine.run_stage(spec, inputs)  # engines check that a stage answers a dict
