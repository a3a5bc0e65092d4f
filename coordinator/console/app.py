"""The console as an ASGI application: who may look, which page, and the reply.

A caller is who its bearer token says (milepost.core.auth): an ``Authorization: Bearer`` header
(scripts), else the cookie the login page sets (HttpOnly, SameSite=Strict, Secure over TLS),
which holds the token pasted there. Each page reads through one RPC's handler (console.source)
and admits a caller by that RPC's rule in auth.RULES, checked by auth.check as every front end
does: no token or a bad one gets a 401 page, too small a role a 403 page, and neither shows data.
The console only reads; its one form (the login) is refused from another site's page.
Three paths are open, for machines that probe: ``/metrics`` (Prometheus, coordinator.metrics),
``/healthz`` (the process answers) and ``/readyz`` (its gRPC server is serving).
Rendering runs on a worker thread, not on the server's event loop (it reads SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from prometheus_client import CONTENT_TYPE_LATEST

from coordinator.console import records, serving
from coordinator.console.html import CSS, Markup, esc, page, tag
from coordinator.console.source import METHOD, Source
from milepost.core import auth
from milepost.core.auth import Authenticate, Identity
from milepost.core.errors import MilepostError, PermissionDenied, Unauthenticated

log = logging.getLogger("milepost.coordinator")
COOKIE = "milepost_console"
MAX_FORM_BYTES = 8 << 10
LIVE_S = 15  # how often pages of live figures (agents' load, per-arm traffic, canaries) reload
_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
           grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
           grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503}
# No script runs and nothing is fetched but the stylesheet; no other site may frame a page.
_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-store"),
]
Render = Callable[[Source, dict[str, str], tuple[str, ...]], tuple[str, Markup]]


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    section: str  # its place in the navigation
    rpc: str  # the RPC it reads through, whose rule admits the caller
    render: Render
    refresh_s: int = 0  # pages of live traffic reload themselves


def _route(pattern: str, section: str, rpc: str, render: Render, refresh_s: int = 0) -> Route:
    return Route(re.compile(pattern + r"\Z"), section, rpc, render, refresh_s)


ROUTES = (
    _route(r"/agents", "agents", "GetStatus", lambda s, q, g: serving.agents(s), LIVE_S),
    _route(r"/endpoints", "endpoints", "ListEndpoints", lambda s, q, g: serving.endpoints(s)),
    _route(r"/endpoints/([^/]+)", "endpoints", "Report", lambda s, q, g: serving.endpoint(s, *g), LIVE_S),
    _route(r"/canary", "canary", "Report", lambda s, q, g: serving.canaries(s), LIVE_S),
    _route(r"/health", "health", "ListEndpoints", lambda s, q, g: serving.health(s)),
    _route(r"/health/([^/]+)", "health", "GetHealth", lambda s, q, g: serving.endpoint_health(s, *g)),
    _route(r"/models", "models", "ListModels", lambda s, q, g: records.models(s)),
    _route(r"/models/([^/]+)/([^/]+)", "models", "GetModel", lambda s, q, g: records.model(s, *g)),
    _route(r"/runs", "runs", "ListRuns", lambda s, q, g: records.runs(s)),
    _route(r"/runs/([^/]+)", "runs", "GetRun", lambda s, q, g: records.run(s, *g)),
    _route(r"/events", "events", "ListEvents", lambda s, q, g: records.events(s, q.get("endpoint", ""))),
    _route(r"/audit", "audit", "ListAudit", lambda s, q, g: records.audit(s)),
)


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = b"text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes = b""


def _redirect(to: str, cookie: str = "") -> Reply:
    headers = [(b"location", to.encode())]
    if cookie:
        headers.append((b"set-cookie", cookie.encode()))
    return Reply(303, b"", headers=headers)


@dataclass(frozen=True)
class Probes:
    """What the open paths answer: the metrics exposition, and whether the coordinator is ready."""

    metrics: Callable[[], bytes]
    ready: Callable[[], bool]


class ConsoleApp:
    def __init__(self, source: Source, authenticate: Authenticate, *, secure_cookie: bool, probes: Probes) -> None:
        self._source = source
        self._authenticate = authenticate
        self._secure = secure_cookie
        self._probes = probes

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > MAX_FORM_BYTES or not message.get("more_body"):
                    break
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        request = Request(scope["method"], scope["path"], query, headers, body)
        if len(body) > MAX_FORM_BYTES:
            reply = Reply(413, _login_page(f"a form of over {MAX_FORM_BYTES} bytes is refused"))
        else:
            reply = await asyncio.to_thread(self.answer, request)
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", reply.content_type), *_HEADERS, *reply.headers]})
        await send({"type": "http.response.body", "body": reply.body})

    def answer(self, request: Request) -> Reply:
        """The reply to one request (never raises: our own bugs are a logged 500)."""
        try:
            return self._answer(request)
        except Exception:  # noqa: BLE001 - a page's bug must not take the console down
            log.exception("console page %s failed", request.path)
            return Reply(500, page("Something went wrong", tag("p", "this page failed; the coordinator's log says why",
                                                                class_="error")))

    def _answer(self, request: Request) -> Reply:
        method, where = request.method, request.path
        if where == "/style.css":
            return Reply(200, CSS, b"text/css; charset=utf-8")
        if where == "/metrics":
            return Reply(200, self._probes.metrics(), CONTENT_TYPE_LATEST.encode())
        if where == "/healthz":
            return Reply(200, b"live\n", b"text/plain; charset=utf-8")
        if where == "/readyz":
            ready = self._probes.ready()
            return Reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n", b"text/plain; charset=utf-8")
        if where == "/":
            return _redirect("/agents")
        if where == "/login":
            return self._login(request) if method == "POST" else Reply(200, _login_page())
        if where == "/logout" and method == "POST":
            return _redirect("/login", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict")
        for route in ROUTES:
            match = route.pattern.match(where)
            if match:
                if method != "GET":
                    return Reply(405, page("Read only", tag("p", "the console only reads; use the CLI to change things")),
                                 headers=[(b"allow", b"GET")])
                return self._show(route, request, tuple(unquote(g) for g in match.groups()))
        return Reply(404, page("Not found", tag("p", f"no page {where}", class_="error"), who=self._who(request)))

    def _show(self, route: Route, request: Request, groups: tuple[str, ...]) -> Reply:
        token = _token(request.headers)
        try:
            identity = auth.check(self._authenticate, auth.RULES[METHOD + route.rpc], token, route.rpc)
        except Unauthenticated as err:
            message = err.message if token else "log in to see this page (or send `Authorization: Bearer <token>`)"
            return Reply(401, _login_page(message), headers=[(b"www-authenticate", b"Bearer")])
        except PermissionDenied as err:
            return Reply(403, page("Not for this role", tag("p", err.message, class_="error"), section=route.section,
                                   who=self._who(request)))
        who = _name(identity)
        try:
            title, body = route.render(self._source, request.query, groups)
        except MilepostError as err:
            status = _STATUS.get(err.code, 500)
            return Reply(status, page("Cannot show this", tag("p", err.message, class_="error"), section=route.section,
                                      who=who))
        return Reply(200, page(title, body, section=route.section, who=who, refresh_s=route.refresh_s))

    def _login(self, request: Request) -> Reply:
        if not _same_site(request.headers):
            return Reply(403, _login_page("a login form posted from another site is refused"))
        form = parse_qs(request.body.decode("utf-8", "replace"))
        token = form.get("token", [""])[0].strip()
        identity = self._authenticate(token) if token else None
        if identity is None:
            return Reply(401, _login_page("the token is unknown, expired or revoked" if token else "paste a token"))
        if not identity.may(auth.VIEWER):
            return Reply(403, _login_page(f"role {identity.role} may not use the console; it needs role viewer or above"))
        secure = "; Secure" if self._secure else ""
        return _redirect("/agents", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")

    def _who(self, request: Request) -> str:
        token = _token(request.headers)
        return _name(self._authenticate(token) if token else None)


def _name(identity: Identity | None) -> str:
    return f"{identity.name} ({identity.role})" if identity is not None else ""


def _token(headers: dict[bytes, bytes]) -> str:
    """The caller's token: its Authorization header's, else the console's cookie's; empty when none."""
    header = headers.get(b"authorization", b"").decode("latin-1")
    if header:
        return auth.bearer_token(header)
    try:
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    except CookieError:
        return ""
    return cookie[COOKIE].value if COOKIE in cookie else ""


def _same_site(headers: dict[bytes, bytes]) -> bool:
    """Whether a form came from a page of this console, by what the browser says: Sec-Fetch-Site,
    and the Origin naming this host (a browser sends Origin "null" under Referrer-Policy
    no-referrer, hence same-origin above). A script sending neither is not a browser tricked."""
    if headers.get(b"sec-fetch-site", b"same-origin") not in (b"same-origin", b"none"):
        return False
    origin = headers.get(b"origin", b"").decode("latin-1")
    return not origin or urlsplit(origin).netloc == headers.get(b"host", b"").decode("latin-1")


def _login_page(message: str = "") -> bytes:
    note = tag("p", message, class_="error") if message else Markup("")
    form = Markup(
        '<form class="login" method="post" action="/login">'
        '<p><label for="token">Token (role viewer or above: `milepost tokens create NAME --role viewer`, '
        'or the admin.token of `milepost up`)</label></p>'
        '<p><textarea id="token" name="token" rows="3" autocomplete="off" spellcheck="false"></textarea></p>'
        '<p><button type="submit">Log in</button></p></form>'
    )
    return page("Log in", Markup(esc(note) + form))
