"""The strategy interface every routing policy implements, and building one from its message.

A policy only decides: ``choose(key, available)`` names the arm(s) whose
answers make the response and, for shadows, an arm to mirror to. Calling the
members, recording metrics and combining answers belong to the router, which
calls the policy's hooks (``combine`` for ensembles) on completion.

Stickiness: a request's key (the value of the request parameter named by the
policy's ``key_parameter``, default ``milepost-key``) is hashed with the
endpoint name into [0, 1) by ``unit_interval``; the same key always lands on
the same point, so the same arm while the weights stay put. Requests without
a key get a random point.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

from milepost.core.errors import Unavailable
from milepost.core.routing import spec as rules
from milepost.v1 import coordinator_pb2, routing_pb2


@dataclass(frozen=True)
class Arm:
    """One arm: a deployment (``deployment_id``) or another endpoint (``endpoint``).

    As a user names it (``milepost.v1.ArmSpec``), a deployment arm is a model and
    version (a prefix, or empty for the newest); the coordinator resolves that to
    a deployment (``resolved``) before the arm goes into a route (``to_proto``).
    """

    name: str
    deployment_id: str = ""
    endpoint: str = ""
    weight: float = 0.0
    model: str = ""
    version: str = ""

    def resolved(self, deployment_id: str) -> Arm:
        return replace(self, deployment_id=deployment_id)

    @property
    def target(self) -> str:
        return f"endpoint {self.endpoint!r}" if self.endpoint else f"deployment {self.deployment_id}"

    def to_proto(self) -> routing_pb2.Arm:
        return routing_pb2.Arm(name=self.name, deployment_id=self.deployment_id, endpoint=self.endpoint, weight=self.weight)

    @classmethod
    def from_proto(cls, message: routing_pb2.Arm) -> Arm:
        return cls(message.name, message.deployment_id, message.endpoint, message.weight)

    @classmethod
    def from_spec(cls, spec: coordinator_pb2.ArmSpec, *, name: str = "") -> Arm:
        """An arm as a user asked for it: the weight as given (0 is 0: that arm gets no share),
        DEFAULT_WEIGHT only when none was given (``ArmSpec.weight`` has presence for this)."""
        weight = spec.weight if spec.HasField("weight") else rules.DEFAULT_WEIGHT
        return cls(spec.name or name, "", spec.endpoint, weight, spec.model, spec.version)

    def to_spec(self) -> coordinator_pb2.ArmSpec:
        return coordinator_pb2.ArmSpec(
            name=self.name, model=self.model, version=self.version, weight=self.weight, endpoint=self.endpoint,
        )


@dataclass(frozen=True)
class Choice:
    """What a policy chose for one request."""

    arms: tuple[Arm, ...]  # whose answers make the response: one, or an ensemble's members
    mirror: Arm | None = None  # scored in the background, compared, discarded (shadow)


Available = Callable[[Arm], bool]


def unit_interval(endpoint: str, key: str) -> float:
    """A stable point in [0, 1) for (endpoint, key): blake2b-64 of ``endpoint + "\\0" + key`` over 2**64.

    The endpoint is part of the hash so that nested splits under one key are
    independent of each other.
    """
    digest = hashlib.blake2b(f"{endpoint}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def point_for(endpoint: str, key: str | None) -> float:
    return unit_interval(endpoint, key) if key is not None else random.random()


class Policy(ABC):
    kind: str = ""

    def __init__(self, endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> None:
        """``spec`` has passed ``spec.check_resolved``: complete, with its defaults filled in."""
        self.endpoint = endpoint
        self.spec = spec
        self.generation = generation
        self.arms = tuple(Arm.from_proto(a) for a in spec.arms)
        self.key_parameter = spec.key_parameter

    @abstractmethod
    def choose(self, key: str | None, available: Available) -> Choice:
        """The arm(s) for a request with this key; Unavailable when none can serve it."""

    def ready(self, available: Available) -> bool:
        """Whether requests can be served now: by default, when every arm can."""
        return all(available(arm) for arm in self.arms)

    def _unavailable(self, arms: tuple[Arm, ...]) -> Unavailable:
        names = ", ".join(f"{a.name!r} ({a.target})" for a in arms)
        return Unavailable(f"endpoint {self.endpoint!r}: arm {names} has no replica on any agent")


def build(endpoint: str, spec: routing_pb2.RoutingPolicy, generation: int) -> Policy:
    """The policy object for a route; FailedPrecondition when the message breaks the rules."""
    from milepost.core.routing import bandit, canary, ensemble, shadow, single, split

    kinds: dict[str, type[Policy]] = {
        cls.kind: cls for cls in (
            single.SinglePolicy, split.SplitPolicy, canary.CanaryPolicy,
            shadow.ShadowPolicy, ensemble.EnsemblePolicy, bandit.BanditPolicy,
        )
    }
    complete = rules.check_resolved(endpoint, spec)
    return kinds[complete.kind](endpoint, complete, generation)
