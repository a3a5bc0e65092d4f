"""Model versions at the coordinator: numbered as they are pushed, found by the one rule of
references (milepost.core.model_refs), named by aliases, deleted when nothing serves them.

- ``resolve`` answers NOT_FOUND naming what was asked for, and INVALID_ARGUMENT listing
  the candidates when a digest prefix matches several versions.
- The Registry makes the changes. What touches both the artifact store and the records
  runs under its lock: a push keeps its archive and adds its record together, a delete
  removes the record and then (when no other name's record holds the same content) the
  archive, so a delete never removes an archive that a concurrent push is about to name.
  Aliases move under the same lock, in one transaction with their event.
- A delete also holds the reconciler's ``placing`` lock, under which a Deploy resolves its
  versions and stores its deployments: a version is never deleted between being chosen and
  being deployed, and one that any deployment serves is refused (FAILED_PRECONDITION
  naming the endpoints).
- A version records who pushed it, the author an approver must differ from; what an agent
  pushes for a pipeline's training stage is the run submitter's (``pusher``).
- Deployments keep the content hash they resolved to: moving an alias later changes what
  ``NAME@ALIAS`` means from then on, not what an endpoint serves (deploy again to follow it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from coordinator.artifacts import ArtifactStore
from coordinator.store import ModelRecord, Store
from milepost.core.auth import AGENT, current_identity
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from milepost.core.model_refs import SHA256, VersionRef, check_alias, parse_version, split_model_ref
from milepost.core.names import check_name
from milepost.v1 import pipelines_pb2


def resolve(store: Store, model: str, version: str = "") -> ModelRecord:
    """The version ``model`` (a name, or a whole reference such as ``churn@champion``) and
    ``version`` (its text, when ``model`` is only a name) name."""
    name, text = split_model_ref(model, version)
    ref = parse_version(text)
    found = store.find_models(name, ref)
    if not found:
        raise NotFound(_missing(name, ref))
    if len(found) > 1:
        listed = ", ".join(m.label for m in found)
        raise InvalidArgument(
            f"version prefix {shown(ref.digest)} of model {shown(name)} is ambiguous: it matches {listed}"
            f"{' and maybe more' if len(found) >= 10 else ''}; give more digits or the version number"
        )
    return found[0]


def explicit(model: str, version: str, what: str) -> tuple[str, str]:
    """(name, version text) of a reference that names its version: changes that touch one
    version (delete, validate, approve, retire) never mean "the newest"."""
    name, text = split_model_ref(model, version)
    if not text:
        raise InvalidArgument(f"say which version of {shown(name)} to {what}: NAME:NUMBER, NAME@ALIAS or NAME@sha256:HEX")
    return name, text


def _missing(name: str, ref: VersionRef) -> str:
    see = f"see `milepost models list {name}`" if len(name) <= 128 else "see `milepost models`"
    if ref.number is not None:
        hint = f" (a digest prefix of digits only is written sha256:{ref.number})" if ref.number >= 10**6 else ""
        return f"model {shown(name)} has no version {ref.number}{hint}; {see}"
    if ref.alias:
        return f"model {shown(name)} has no alias {shown(ref.alias)}; {see}"
    if ref.digest:
        return f"model {shown(name)} has no version with digest {shown(SHA256 + ref.digest)}; {see}"
    return f"model {shown(name)} is not registered; see `milepost models`"


def pusher(store: Store, name: str, manifest: dict) -> str:
    """Who answers for a version being pushed (an approver must be someone else): the
    identity of the call, or, when an agent pushes what a pipeline's training stage trained,
    the identity that submitted that run; an agent only carries the push out, and taking it
    as the author would let the submitter approve their own model.

    The run is the running one whose running training stage makes model ``name`` (the one
    the bundle's lineage names when several do); its submitter is the actor of the audit
    entry that recorded its submission. An agent's push no run accounts for stays its own."""
    identity = current_identity()
    if identity is None:
        return ""
    if identity.role != AGENT:
        return identity.name
    runs = _training(store, name)
    lineage = ((manifest.get("metadata") or {}).get("lineage") or {}) if isinstance(manifest, dict) else {}
    if lineage.get("pipeline_run") in runs:
        runs = [lineage["pipeline_run"]]
    submitters = {run: _submitter(store, run) for run in runs}
    if len(set(submitters.values())) > 1:
        raise FailedPrecondition(
            f"runs {', '.join(f'{r} (submitted by {shown(who)})' for r, who in sorted(submitters.items()))} all train "
            f"model {shown(name)} now and the bundle's lineage names none of them, so its author is unknown: "
            "train it under one run at a time, or give the runs' training stages different model_name params"
        )
    return next(iter(submitters.values()), identity.name)


def _training(store: Store, name: str) -> list[str]:
    """The running pipeline runs with a running training stage whose params name model ``name``."""
    found = []
    for run in store.list_runs(limit=1000, states=("RUNNING",)):
        running = {s.name for s in run.stages if s.state == "RUNNING"}
        for stage in pipelines_pb2.PipelineSpec.FromString(run.spec).stages:
            if stage.kind != "training" or stage.name not in running:
                continue
            try:
                params = json.loads(stage.params_json or "{}")
            except ValueError:
                continue
            if isinstance(params, dict) and params.get("model_name") == name:
                found.append(run.run_id)
                break
    return found


def _submitter(store: Store, run_id: str) -> str:
    """The identity name that submitted pipeline run ``run_id`` ("" when none is known)."""
    with store.transaction() as db:
        row = db.execute("SELECT actor FROM audit WHERE action='pipeline' AND detail LIKE ? ORDER BY seq LIMIT 1",
                         (f"run {run_id} submitted:%",)).fetchone()
    actor = row[0] if row else ""
    return actor.rpartition(" (")[0] if actor.endswith(")") else ""  # "name (role)"; the coordinator's own: none


class Registry:
    def __init__(
        self, store: Store, artifacts: ArtifactStore, placing: AbstractContextManager, clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self._placing = placing
        self._clock = clock
        self._lock = threading.Lock()

    def resolve(self, model: str, version: str = "") -> ModelRecord:
        return resolve(self.store, model, version)

    def push(self, name: str, chunks: Iterable[bytes], sha256: str) -> ModelRecord:
        """Register the archive ``chunks`` carry under ``name``: its next number, or the version
        it already is when that content was pushed under this name before."""
        check_name("model", name)
        with self.artifacts.receive(chunks, sha256) as received:
            record = ModelRecord(
                name=name, version=received.version, flavor=str(received.manifest.get("flavor", "")),
                size_bytes=received.size, created_at=self._clock(),
                manifest_json=json.dumps(received.manifest, sort_keys=True),
                pushed_by=pusher(self.store, name, received.manifest),
            )
            with self._lock:
                received.keep()
                stored, _ = self.store.add_model(record)
        return stored

    def set_alias(self, name: str, alias: str, version: str) -> ModelRecord:
        """Point ``name@alias`` at the version ``version`` names (moving it if it named another),
        or with ``version`` empty remove it; the version it names (named) now."""
        check_alias(alias)
        with self._lock:
            if not version:
                before = self.store.remove_alias(name, alias, self._clock())
                if before is None:
                    raise NotFound(f"model {shown(name)} has no alias {shown(alias)}")
                found = self.store.get_model(name, before)
            else:
                target = self.resolve(name, version)
                old = self.store.find_models(name, VersionRef(alias=alias))
                if old and old[0].version == target.version:
                    return target
                was = f" (it named {old[0].label})" if old else ""
                message = f"{name}@{alias} -> {target.label}{was}"
                self.store.set_alias(name, alias, target.version, self._clock(), message)
                found = self.store.get_model(name, target.version)
        assert found is not None  # its record goes only with a delete, which waits for this lock
        return found

    def delete(self, model: str, version: str = "") -> ModelRecord:
        """Delete one version, named explicitly (never "the newest"): its record, its aliases and,
        unless another name holds the same content, its archive; FailedPrecondition naming
        the endpoints while any deployment serves it."""
        name, text = explicit(model, version, "delete")
        with self._placing, self._lock:
            target = self.resolve(name, text)
            outcome = self.store.delete_model(target.name, target.version, self._clock())
            if outcome.in_use:
                raise FailedPrecondition(
                    f"model version {target.label} is deployed on endpoint(s) {', '.join(outcome.in_use)}; "
                    "undeploy them or deploy another version there first"
                )
            if not outcome.artifact_shared:
                self.artifacts.remove(target.version)
        return target
