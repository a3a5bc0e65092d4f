"""Pipeline stages in a child process of their own: CPU-time and memory limits, and a cancel that kills.

A stage runs code the agent does not own on data it has never seen: a trainer, an
operator-listed function, Spark's JVM, a local Ray. Inside the agent it could exhaust the
node's memory, spin forever, or change the process's environment (and with it the settings
every later call reads), and a cancelled stage could only be abandoned, still running. So
each stage runs in a fresh interpreter (``python -m agent.stage_child``): started with exec,
not forked from the agent, because gRPC's threads do not survive a fork and Spark's JVM must
not be started under them. It leads a session of its own, so the processes it starts (the
JVM, Ray's workers) belong to it and die with it.

The agent watches the whole tree with psutil every ``POLL_S``: resident memory summed over
its processes against ``stage_memory_mb``, CPU time summed over them (and over those that
already exited) against ``stage_cpu_seconds``. The child also sets RLIMIT_CPU on itself, a
hard stop that needs no watcher. Past either limit, or on cancel, the tree is killed.

The child reports on a pipe of its own (its stdout and stderr stay the agent's, for the
log): one JSON object a line, ``{"rows": n}`` as it goes, then ``{"done": outputs}`` or
``{"error": {"code": "INVALID_ARGUMENT", "message": "..."}}``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import psutil

from milepost.core.errors import Cancelled, FailedPrecondition, MilepostError, ResourceExhausted, shown
from milepost.core.settings import Settings, env_var

POLL_S = 0.2


@dataclass(frozen=True)
class StageLimits:
    cpu_seconds: float
    memory_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> StageLimits:
        return cls(settings.stage_cpu_seconds, settings.stage_memory_mb << 20)


def run(call: dict[str, Any], settings: Settings, *, what: str, progress: Callable[[int], None],
        cancelled: Callable[[], bool], gpus: Sequence[int] = ()) -> dict[str, Any]:
    """Run ``call`` (what agent.stage_child does: the engine, the kind and its arguments, all
    JSON) in a child process with ``settings`` and their limits; return its outputs.

    ``gpus``: the GPUs the stage holds (nvidia-smi's indexes), the only ones its process
    sees (``visible_devices``); none for a CPU stage, which then sees no GPU at all.

    ``what`` ("stage 'train'") starts every message. ``progress`` gets the rows done as the
    child reports them; ``cancelled`` is polled, and once it says so the child is killed.
    Raises the MilepostError the stage raised (same status, same message), ResourceExhausted
    past a limit, Cancelled on cancel, MilepostError (INTERNAL) if the process dies otherwise.
    """
    limits = StageLimits.of(settings)
    env = _child_env(gpus)  # refuses a GPU the agent was not given, before anything is opened
    read_end, write_end = os.pipe()
    message = json.dumps({"call": call, "settings": settings.model_dump(mode="json"), "cpu_seconds": limits.cpu_seconds})
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "agent.stage_child", str(write_end)],
            stdin=subprocess.PIPE, pass_fds=(write_end,), start_new_session=True, env=env,
        )
    finally:
        os.close(write_end)
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    reader = threading.Thread(target=_read_events, args=(read_end, events), name="stage-events", daemon=True)
    reader.start()
    watched = _Tree(child.pid)
    try:
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(message.encode())
        while True:
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                if cancelled():
                    raise Cancelled(f"{what} was cancelled; its process was stopped") from None
                watched.check(limits, what)
                continue
            if event is None:  # the pipe closed without an answer: the process ended
                raise _ended(child.wait(), what, limits)
            if "rows" in event:
                progress(int(event["rows"]))
            elif "error" in event:
                raise _error(event["error"])
            else:
                child.wait()
                return dict(event["done"])
    finally:
        watched.kill()
        child.wait()
        reader.join(timeout=5)


def _child_env(gpus: Sequence[int]) -> dict[str, str]:
    """The agent's environment, and its import path, so the child imports what the agent
    would; CUDA_VISIBLE_DEVICES names only the GPUs the stage holds, numbered as nvidia-smi
    numbers them (CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA's own default order is fastest first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def visible_devices(gpus: Sequence[int], inherited: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for a stage holding ``gpus`` (nvidia-smi's indexes), "" for none:
    a CPU stage cannot take GPU 0 by accident (torch's "cuda", a library's default).

    ``inherited`` is the agent's own CUDA_VISIBLE_DEVICES. nvidia-smi ignores it and lists
    every GPU of the node, so when the operator set it a held GPU must be one it lists (its
    entries are that same node-wide numbering): a GPU outside it is refused rather than
    handed to a stage behind the operator's back. Entries that are not indexes (GPU-/MIG-
    UUIDs) cannot be matched to nvidia-smi's indexes here and are refused, saying so."""
    if not gpus:
        return ""
    if inherited is None:
        return ",".join(str(g) for g in gpus)
    allowed = [e.strip() for e in inherited.split(",") if e.strip()]
    if not all(e.isdigit() for e in allowed):
        raise FailedPrecondition(
            f"this agent's CUDA_VISIBLE_DEVICES ({shown(inherited, 80)}) names GPUs by UUID; a GPU stage is told its "
            "GPUs by nvidia-smi index: list indexes there (e.g. 0,1), or leave it unset")
    outside = [g for g in gpus if str(g) not in {str(int(e)) for e in allowed}]
    if outside:
        raise FailedPrecondition(
            f"GPU(s) {outside} are not in this agent's CUDA_VISIBLE_DEVICES ({shown(inherited, 80)}); start the agent "
            "with the GPUs it may use listed there, or leave it unset")
    return ",".join(str(g) for g in gpus)


def _read_events(fd: int, events: queue.Queue[dict[str, Any] | None]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for line in pipe:
            try:
                events.put(json.loads(line))
            except ValueError:
                continue  # not ours: the child writes only JSON lines here
    events.put(None)


def _error(error: dict[str, Any]) -> MilepostError:
    code = getattr(grpc.StatusCode, str(error.get("code", "INTERNAL")), grpc.StatusCode.INTERNAL)
    return MilepostError.of_code(code, str(error.get("message", "the stage failed")))


def _ended(returncode: int, what: str, limits: StageLimits) -> MilepostError:
    if returncode == -signal.SIGXCPU:
        return _cpu_exhausted(what, limits)
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    return MilepostError(f"{what}: its process ended with {how} before it answered; the agent's log has its output")


def _cpu_exhausted(what: str, limits: StageLimits) -> ResourceExhausted:
    return ResourceExhausted(f"{what} used more than {limits.cpu_seconds:g} CPU seconds and was stopped "
                             f"({env_var('stage_cpu_seconds')})")


class _Tree:
    """The child and every process it started, as far as psutil can see them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.root = None
        self.members: dict[int, psutil.Process] = {}

    def _processes(self) -> list[psutil.Process]:
        if self.root is None:
            return []
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            found = []
        for process in found:
            self.members.setdefault(process.pid, process)
        return found

    def check(self, limits: StageLimits, what: str) -> None:
        rss, cpu = 0, 0.0
        for process in self._processes():
            try:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue  # it ended between the listing and the reading
        if rss > limits.memory_bytes:
            self.kill()
            raise ResourceExhausted(f"{what} held {rss >> 20} MiB, more than its {limits.memory_bytes >> 20} MiB, "
                                    f"and was stopped ({env_var('stage_memory_mb')})")
        if cpu > limits.cpu_seconds:
            self.kill()
            raise _cpu_exhausted(what, limits)

    def kill(self) -> None:
        """SIGKILL to the child's session and to every process of the tree ever seen (one that
        left the session, as a daemon may, is still found by its pid)."""
        self._processes()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for process in self.members.values():
            try:
                process.kill()
            except psutil.Error:
                pass
