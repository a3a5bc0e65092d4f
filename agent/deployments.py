"""The deployments an agent hosts and the endpoint names that route to them.

Loading happens outside the lock; the route to an endpoint is switched in one
step once the new model is ready, so a redeploy never leaves a gap. Loads are
idempotent per deployment id, because the coordinator may retry them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from agent.model_cache import ModelCache
from agent.statistics import EndpointStatistics
from engines import registry
from engines.base import DeploymentSpec, LoadedModel
from engines.batching import MicroBatcher
from milepost.core.batching import BatchingSettings
from milepost.core.errors import NotFound

log = logging.getLogger("milepost.agent")


@dataclass
class Hosted:
    spec: DeploymentSpec
    engine: str
    model: LoadedModel
    stats: EndpointStatistics = field(default_factory=EndpointStatistics)


class DeploymentTable:
    def __init__(self, cache: ModelCache) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._by_id: dict[str, Hosted] = {}
        self._routes: dict[str, str] = {}  # endpoint -> deployment id

    def load(self, spec: DeploymentSpec, flavor: str, batching: BatchingSettings) -> Hosted:
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
            hosted = Hosted(spec=spec, engine=engine_name, model=model)
            with self._lock:
                self._by_id[spec.deployment_id] = hosted
                self._routes[spec.endpoint] = spec.deployment_id
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
        hosted.model.close()
        log.info("unloaded %s (%s)", deployment_id, hosted.spec.endpoint)
        return True

    def route(self, endpoint: str) -> Hosted:
        with self._lock:
            dep_id = self._routes.get(endpoint)
            hosted = self._by_id.get(dep_id) if dep_id else None
        if hosted is None:
            raise NotFound(f"model {endpoint!r} is not served by this agent")
        return hosted

    def get(self, deployment_id: str) -> Hosted | None:
        """The deployment with this id if this agent hosts it."""
        with self._lock:
            return self._by_id.get(deployment_id)

    def has_endpoint(self, endpoint: str) -> bool:
        with self._lock:
            return endpoint in self._routes

    def endpoints(self) -> list[str]:
        with self._lock:
            return sorted(self._routes)

    def hosted(self) -> list[Hosted]:
        with self._lock:
            return list(self._by_id.values())

    def close(self) -> None:
        for h in self.hosted():
            self.unload(h.spec.deployment_id)
