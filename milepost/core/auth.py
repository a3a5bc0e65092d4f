"""Identities and roles on every call: the one table of RPC -> role, and the interceptors.

Every call carries gRPC metadata ``authorization: Bearer <token>``. A server
resolves the token to an Identity (``authenticate``), then checks the role the
method needs (``RULES``): no or unknown token is UNAUTHENTICATED, too small a
role PERMISSION_DENIED, and the handler never runs. A method missing from the
table is refused for everyone, so a new RPC cannot be open by accident
(tests/security/test_auth_matrix.py checks the table against the services'
own descriptors).

Roles, smallest first: viewer (read), deployer (push, deploy, route, submit,
feedback), approver (approve model versions), admin (tokens, agents,
everything). ``agent`` is not on that ladder: only agents register and
heartbeat, and fetch the bundles they are told to load. ``coordinator`` is the
identity an agent accepts on its control RPCs (load, unload, routes, stages).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from milepost.core.errors import PermissionDenied, Unauthenticated
from milepost.core.handlers import rewrap

VIEWER, DEPLOYER, APPROVER, ADMIN = "viewer", "deployer", "approver", "admin"
AGENT, COORDINATOR = "agent", "coordinator"
OPEN = "open"  # no token needed (health checks; the data plane unless it asks for tokens)
USER_ROLES = (VIEWER, DEPLOYER, APPROVER, ADMIN)
ROLES = (*USER_ROLES, AGENT)
_LADDER = {role: rank for rank, role in enumerate(USER_ROLES)}
TOKEN_PREFIX = "mpt"

_C = "/milepost.v1.CoordinatorService/"
_A = "/milepost.v1.AgentService/"
_I = "/inference.GRPCInferenceService/"
Rule = str | tuple[str, ...]  # the role a method needs, or any one of several
RULES: dict[str, Rule] = {
    # agents, each as itself
    _C + "RegisterAgent": AGENT, _C + "Heartbeat": AGENT, _C + "FetchModel": (AGENT, VIEWER),
    # reading (agents: the newest version, for a pipeline's deploy stage)
    _C + "ListModels": (VIEWER, AGENT), _C + "ListEndpoints": VIEWER, _C + "Report": VIEWER, _C + "ListEvents": VIEWER,
    _C + "ListRuns": VIEWER, _C + "GetRun": VIEWER, _C + "WatchRun": VIEWER, _C + "GetStatus": VIEWER,
    # changing what serves (agents push what a pipeline's training stage trained)
    _C + "PushModel": (DEPLOYER, AGENT), _C + "SetAlias": DEPLOYER, _C + "DeleteModel": DEPLOYER,
    _C + "Deploy": DEPLOYER, _C + "Undeploy": DEPLOYER, _C + "SetPolicy": DEPLOYER,
    _C + "Promote": DEPLOYER, _C + "Rollback": DEPLOYER, _C + "Feedback": DEPLOYER,
    _C + "SubmitPipeline": DEPLOYER, _C + "CancelRun": DEPLOYER, _C + "SetDecisionLog": DEPLOYER,
    # review: validations come from CI (deployer); approving, retiring and lifting an endpoint's
    # approval requirement need an approver (coordinator.governance)
    _C + "GetModel": VIEWER, _C + "RecordValidation": DEPLOYER,
    _C + "ApproveModel": APPROVER, _C + "RetireModel": APPROVER, _C + "SetEndpointApproval": DEPLOYER,
    # the audit trail
    _C + "ListAudit": APPROVER, _C + "VerifyAudit": APPROVER,
    # identities
    _C + "CreateToken": ADMIN, _C + "ListTokens": ADMIN, _C + "RevokeToken": ADMIN,
    # ML health: read it, or set an endpoint's thresholds, groups and webhook
    _C + "GetHealth": VIEWER, _C + "GetFairness": VIEWER, _C + "SetHealthConfig": DEPLOYER,
    # an agent's control plane: the coordinator only
    _A + "Load": COORDINATOR, _A + "Unload": COORDINATOR, _A + "Status": COORDINATOR,
    _A + "SetRoutes": COORDINATOR, _A + "RunStage": COORDINATOR, _A + "ServedArm": COORDINATOR,
    # an agent's decision log: read by people (milepost decisions, replay)
    _A + "ListDecisions": VIEWER,
    # the data plane (see data_plane_rules) and health; the coordinator's identity is what agents
    # call each other with (agent.routing.members.Channels)
    **{_I + m: (VIEWER, COORDINATOR) for m in (
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
        "ModelStatistics", "ModelInfer", "ModelStreamInfer",
    )},
    "/grpc.health.v1.Health/Check": OPEN, "/grpc.health.v1.Health/Watch": OPEN, "/grpc.health.v1.Health/List": OPEN,
}


def data_plane_rules(require_token: bool) -> dict[str, Rule]:
    """RULES, with the inference calls open unless the agent requires tokens on them."""
    if require_token:
        return dict(RULES)
    return {method: (OPEN if method.startswith(_I) else role) for method, role in RULES.items()}


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    token_id: str = ""

    def may(self, needed: Rule) -> bool:
        """Whether this identity may call a method that needs ``needed``."""
        if isinstance(needed, tuple):
            return any(self.may(one) for one in needed)
        if needed == OPEN or self.role == ADMIN and needed in _LADDER:
            return True
        if needed in _LADDER:
            return self.role in _LADDER and _LADDER[self.role] >= _LADDER[needed]
        return self.role == needed


_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("milepost_identity", default=None)


def current_identity() -> Identity | None:
    """Who is calling the handler running now (None on open methods called without a token)."""
    return _current.get()


# ---- tokens ----
def new_token() -> tuple[str, str, str]:
    """(token id, the bearer token, the hash to store): ``mpt_<id>_<secret>``."""
    token_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secret}", token_hash(secret)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_matches(secret: str, stored: str) -> bool:
    return hmac.compare_digest(token_hash(secret), stored)


# ---- the server side ----
Authenticate = Callable[[str], Identity | None]  # bearer token -> identity, None when not valid


def bearer_of(metadata: Any) -> str:
    """The token of ``authorization: Bearer <token>`` among (key, value) pairs; empty when none."""
    for key, value in metadata or ():
        if key == "authorization":
            return bearer_token(value.decode() if isinstance(value, bytes) else value)
    return ""


def bearer_token(authorization: str) -> str:
    """The token of an ``authorization`` value ``Bearer <token>``; empty for any other scheme."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks every call against ``rules`` before its handler runs (see the module docstring).

    Placed inside the error-mapping interceptor, so its refusals become statuses.
    """

    def __init__(self, authenticate: Authenticate, rules: Mapping[str, Rule]) -> None:
        self._authenticate = authenticate
        self._rules = rules

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        needed: Rule = self._rules.get(method, ())

        def admit(context: grpc.ServicerContext) -> contextvars.Token:
            token = bearer_of(context.invocation_metadata())
            return _current.set(check(self._authenticate, needed, token, method))

        return _wrapped(handler, admit)


def check(authenticate: Authenticate, needed: Rule, token: str, method: str) -> Identity | None:
    """Who calls ``method`` (a rule of RULES) with bearer ``token`` (empty: none); None on an open
    method called without a valid token. Unauthenticated or PermissionDenied when refused.
    Every front end checks its calls here: the gRPC interceptor and the agent's REST paths."""
    identity = authenticate(token) if token else None
    if needed == OPEN:
        return identity
    if identity is None:
        raise Unauthenticated(
            "this call needs `authorization: Bearer <token>` (gRPC metadata or an HTTP header) with a valid token "
            "(milepost --token, $MILEPOST_TOKEN, or the admin.token of `milepost up`)"
            if not token else "the token is unknown, expired or revoked"
        )
    if not needed or not identity.may(needed):
        raise PermissionDenied(
            f"{identity.role} {identity.name!r} may not call {method.rsplit('/', 1)[-1]}"
            + (f"; it needs role {_roles(needed)}" if needed else "")
        )
    return identity


def _roles(needed: Rule) -> str:
    return " or ".join(needed) if isinstance(needed, tuple) else needed


def _wrapped(handler: grpc.RpcMethodHandler, admit: Callable[[grpc.ServicerContext], contextvars.Token]) -> Any:
    def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            reset = admit(context)
            try:
                return fn(request, context)
            finally:
                _current.reset(reset)

        return run

    def stream(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            reset = admit(context)
            try:
                yield from fn(request, context)
            finally:
                _current.reset(reset)

        return run

    return rewrap(handler, unary, stream)


# ---- the calling side ----
class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call made on a channel."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def _with_token(self, details: Any) -> Any:
        token = self._token()
        if not token:
            return details
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {token}")]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def with_token(channel: grpc.Channel, token: str | Callable[[], str]) -> grpc.Channel:
    """``channel`` with every call carrying the bearer token (a callable: read at each call)."""
    source = token if callable(token) else (lambda: token)
    return grpc.intercept_channel(channel, _Bearer(source))

