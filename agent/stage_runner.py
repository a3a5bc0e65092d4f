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
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from agent.model_cache import ModelCache
from engines import registry
from engines.base import DatasetJob, Engine, Progress, StageSpec
from milepost.core import bounded_json
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from milepost.core.settings import Settings, env_var, get_settings
from milepost.core.version import __version__
from milepost.v1 import agent_pb2, pipelines_pb2

# Entry points any training or custom stage may name; others need the operator's consent.
BUILT_IN_ENTRIES = ("engines.trainers:",)


def check_entry(entry: str, settings: Settings | None = None) -> None:
    """Refuse entry points outside the built-in trainers unless the operator allowed them.

    A stage entry names a function this agent will call with parameters from a remote
    spec: "os:system" would be remote code execution. The ``stage_entries`` setting
    (MILEPOST_STAGE_ENTRIES) lists allowed module prefixes; ``allow_code_bundles``
    (MILEPOST_ALLOW_CODE_BUNDLES=1) allows all. ``settings``: the process's when None.
    """
    settings = settings or get_settings()
    if settings.allow_code_bundles:
        return
    allowed = BUILT_IN_ENTRIES + settings.stage_entries
    if not any(entry.startswith(prefix) for prefix in allowed):
        raise FailedPrecondition(
            f"stage entry {entry!r} is not allowed on this agent: built-in trainers are "
            f"({', '.join(BUILT_IN_ENTRIES)}); an operator allows more with "
            f"{env_var('stage_entries')}=module.prefix,... or {env_var('allow_code_bundles')}=1"
        )


# (model name, bundle directory) -> "name:version" once registered
PushModel = Callable[[str, Path], str]
# model name -> newest registered version
NewestVersion = Callable[[str], str]
Request = agent_pb2.RunStageRequest


def fingerprint(path: str) -> str:
    """sha256 over the files of a dataset (a file, or a folder's files in path order)."""
    root = Path(path)
    if not root.exists():
        raise NotFound(f"dataset {path} does not exist on agent {socket.gethostname()}")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
        with f.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class StageRunner:
    def __init__(self, cache: ModelCache, work_dir: Path, push_model: PushModel, newest: NewestVersion) -> None:
        self.cache = cache
        self.work_dir = work_dir
        self.push_model = push_model
        self.newest = newest

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
        for key in ("model", "source", "sink"):
            if not params.get(key):
                raise InvalidArgument(f"batch_scoring stage {request.stage.name!r} needs params.{key}")
        job = DatasetJob(
            source=str(params["source"]), sink=str(params["sink"]), keep=tuple(params.get("keep", ())),
            batch_rows=int(params.get("batch_rows", get_settings().batch_rows)), options=dict(params.get("options", {})),
        )
        result = engine.score_dataset(self._bundle(str(params["model"])), job, progress)
        return {"sink": result.sink, "rows": result.rows, "seconds": round(result.seconds, 3)}

    def _train(self, engine: Engine, request: Request, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        stage = request.stage
        for key in ("entry", "data", "model_name"):
            if not params.get(key):
                raise InvalidArgument(f"training stage {stage.name!r} needs params.{key}")
        check_entry(str(params["entry"]))
        out = self.work_dir / request.run_id / stage.name
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        lineage = {
            "data": str(params["data"]), "data_fingerprint": fingerprint(str(params["data"])),
            "code": f"{params['entry']} (milepost {__version__}, engine {stage.engine} {engine.info().version})",
            "params": params.get("params", {}), "pipeline_run": request.run_id, "stage": stage.name,
        }
        spec = StageSpec(name=stage.name, kind="training", entry=str(params["entry"]), params=params.get("params", {}))
        result = engine.run_stage(spec, {"data": str(params["data"]), "output": str(out / "bundle"), "lineage": lineage})
        ref = self.push_model(str(params["model_name"]), Path(result["model"]))
        return {"model": ref, "version": ref.partition(":")[2], "data_fingerprint": lineage["data_fingerprint"]}

    def _custom(self, engine: Engine, request: Request, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        if not params.get("entry"):
            raise InvalidArgument(f"custom stage {request.stage.name!r} needs params.entry (module:function)")
        check_entry(str(params["entry"]))
        spec = StageSpec(name=request.stage.name, kind="custom", entry=str(params["entry"]), params=params.get("params", {}))
        return engine.run_stage(spec, dict(params.get("inputs", {})))  # engines check that a stage answers a dict
