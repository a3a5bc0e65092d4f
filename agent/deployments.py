"""The deployments an agent hosts and the endpoint each was loaded for.

Loading happens outside the lock; an endpoint's local deployment is switched
in one step once the new model is ready, so a redeploy never leaves a gap.
Loads are idempotent per deployment id, because the coordinator may retry
them. The router serves a local endpoint that has no pushed route as a
synthesised ``single`` route over its local deployment (``local_endpoints``);
``on_change`` tells it when that mapping moved. A deployment's data-plane
version is the registry's number the coordinator sent with the load ("3"),
its content hash (``spec.version``) its digest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.model_cache import ModelCache
from engines import registry
from engines.base import DeploymentSpec, LoadedModel
from engines.batching import MicroBatcher
from milepost.core.batching import BatchingSettings
from milepost.core.model_refs import served_version

log = logging.getLogger("milepost.agent")


@dataclass
class Hosted:
    spec: DeploymentSpec
    engine: str
    model: LoadedModel
    number: int = 0  # the registry's number of the version; 0: the coordinator sent none

    @property
    def version(self) -> str:
        """The version the data plane reports (milepost.core.model_refs.served_version)."""
        return served_version(self.number, self.spec.version)


class DeploymentTable:
    def __init__(self, cache: ModelCache) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._by_id: dict[str, Hosted] = {}
        self._routes: dict[str, str] = {}  # endpoint -> deployment id
        self.on_change: Callable[[], None] = lambda: None

    def load(self, spec: DeploymentSpec, flavor: str, batching: BatchingSettings, *, number: int = 0) -> Hosted:
        with self._lock:
            load_lock = self._load_locks.setdefault(spec.deployment_id, threading.Lock())
        with load_lock:
            with self._lock:
                existing = self._by_id.get(spec.deployment_id)
            if existing is not None:
                return existing
            engine = registry.engine_for(flavor, spec.engine)
            engine_name = engine.name
            bundle_dir: Path = self._cache.get(spec.model, spec.version)
            model = MicroBatcher(engine.load(bundle_dir, spec), batching)
            hosted = Hosted(spec=spec, engine=engine_name, model=model, number=number)
            with self._lock:
                self._by_id[spec.deployment_id] = hosted
                self._routes[spec.endpoint] = spec.deployment_id
            self.on_change()  # outside self._lock: the router reads local_endpoints()
            log.info("serving %s as %s:%s (%s)", spec.endpoint, spec.model, spec.version[:12], engine_name)
            return hosted

    def unload(self, deployment_id: str) -> bool:
        with self._lock:
            hosted = self._by_id.pop(deployment_id, None)
            self._load_locks.pop(deployment_id, None)
            if hosted is None:
                return False
            if self._routes.get(hosted.spec.endpoint) == deployment_id:
                # Fall back to another deployment of the same endpoint if one is loaded.
                others = [h for h in self._by_id.values() if h.spec.endpoint == hosted.spec.endpoint]
                if others:
                    self._routes[hosted.spec.endpoint] = others[-1].spec.deployment_id
                else:
                    del self._routes[hosted.spec.endpoint]
        self.on_change()
        hosted.model.close()
        log.info("unloaded %s (%s)", deployment_id, hosted.spec.endpoint)
        return True

    def get(self, deployment_id: str) -> Hosted | None:
        """The deployment with this id if this agent hosts it."""
        with self._lock:
            return self._by_id.get(deployment_id)

    def local_endpoints(self) -> dict[str, str]:
        """Endpoint name -> the deployment id that serves it on this agent."""
        with self._lock:
            return dict(self._routes)

    def hosted(self) -> list[Hosted]:
        with self._lock:
            return list(self._by_id.values())

    def close(self) -> None:
        for h in self.hosted():
            self.unload(h.spec.deployment_id)
