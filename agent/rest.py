"""The Open Inference Protocol REST front end (KServe v2 HTTP, with Triton's config and statistics).

A thin translator over the same data-plane core as the gRPC front end (agent.grpc_inference):
each path is the gRPC method of the same name, checked by the same auth rule, answered by the
same core calls and messages (bodies by agent.rest_tensors), and its errors get the HTTP status
of their gRPC status (``HTTP_STATUS``) with a JSON body ``{"error": "..."}``.

    GET  /v2/health/live | /v2/health/ready        ServerLive, ServerReady (200, or 503)
    GET  /v2                                       ServerMetadata
    GET  /v2/models/{m}[/versions/{v}]             ModelMetadata
    GET  /v2/models/{m}[/versions/{v}]/ready       ModelReady (200, or 503)
    POST /v2/models/{m}[/versions/{v}]/infer       ModelInfer
    GET  /v2/models/{m}[/versions/{v}]/config      ModelConfig (Triton's, the config itself)
    GET  /v2/models[/{m}[/versions/{v}]]/stats     ModelStatistics

An ASGI application, so that any ASGI server runs it (milepost.core.http_server runs it on uvicorn).
Bodies are received on the server's event loop; decoding, scoring and encoding run on the
``workers`` pool, so a slow upload holds no worker, except for an infer call small enough to
be answered on the loop itself (milepost.core.inline: a body within ``inline_max_bytes``, not
compressed, to a model hosted here), which saves the two thread hops. Bounds: a body over ``max_body_bytes``
gets 413 before it is read; bodies being received and served together hold at most
``max_receiving_bytes`` (one more gets 429 at once, as the core's own admission does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from agent import grpc_inference, rest_tensors
from agent.dataplane import DataPlane, InferenceRequest, InferenceResponse
from agent.grpc_inference import response_of
from agent.routing.router import MatrixServed
from milepost.core import auth, deadlines, tensor_codec, tracing
from milepost.core.auth import Authenticate, Rule
from milepost.core.errors import InvalidArgument, MilepostError, ResourceExhausted, shown
from milepost.core.inline import WouldBlock, must_not_block, on_event_loop, refuse_blocking

log = logging.getLogger("milepost.agent")

# The HTTP status of each gRPC status (google.rpc's mapping; FAILED_PRECONDITION is 400 there too).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
HEADER_LENGTH = "inference-header-content-length"
_METHOD = "/inference.GRPCInferenceService/"
_JSON = b"application/json"
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


class HttpError(Exception):
    """A refusal that is HTTP's own (no such path, wrong method, body too large), with its status."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode())


@dataclass
class _Hold:
    """The bytes of the receiving budget one request holds."""

    size: int = 0


@dataclass(frozen=True)
class _Call:
    """What a request asks for: the gRPC method it stands for, the model and version it names."""

    method: str
    http_method: str
    model: str = ""
    version: str = ""


class RestApp:
    """The ASGI application (see the module docstring)."""

    def __init__(
        self, core: DataPlane, authenticate: Authenticate, rules: Mapping[str, Rule], *, workers: Executor,
        max_body_bytes: int, max_receiving_bytes: int, max_batch_rows: int = 1 << 20,
    ) -> None:
        self.core = core
        self._authenticate = authenticate
        self._rules = rules
        self._workers = workers
        self.max_body_bytes = max_body_bytes
        self._max_receiving = max_receiving_bytes
        self._receiving = 0  # bytes of bodies received or being served; only the event loop touches it
        self._max_batch_rows = max_batch_rows
        self._handlers: dict[str, Callable[[_Call, dict[bytes, bytes], bytes], Reply]] = {
            "ServerMetadata": lambda call, headers, body: _message_reply(grpc_inference.server_metadata()),
            "ModelMetadata": lambda call, headers, body: _message_reply(
                grpc_inference.model_metadata(self.core, call.model, call.version)),
            "ModelConfig": lambda call, headers, body: _message_reply(
                grpc_inference.model_config(self.core, call.model, call.version).config),
            "ModelStatistics": lambda call, headers, body: _message_reply(
                grpc_inference.model_statistics(self.core, call.model, call.version)),
            "ModelReady": lambda call, headers, body: _ready_reply(self.core.is_ready(call.model, call.version)),
            "ModelInfer": self._infer,
        }

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not served (the server refuses the handshake)
        headers = dict(scope["headers"])
        hold = _Hold()
        try:
            call = _route(scope.get("raw_path") or scope["path"].encode(), scope["method"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            auth.check(self._authenticate, self._rules.get(_METHOD + call.method, ()), auth.bearer_token(authorization),
                       _METHOD + call.method)
            if call.method == "ServerLive":
                reply = json_reply({"live": True})
            elif call.method == "ServerReady":
                reply = _ready_reply(self.core.ready)
            else:
                body = b""
                if call.http_method == "POST":
                    self._reserve(hold, _declared_length(headers, self.max_body_bytes))
                    body = await self._body(receive, hold)
                handler = self._handlers[call.method]
                on_loop: Reply | None = _on_loop(handler, call, headers, body) if call.method == "ModelInfer" else None
                reply = on_loop if on_loop is not None else await asyncio.get_running_loop().run_in_executor(
                    self._workers, handler, call, headers, body)
        except HttpError as err:
            reply = Reply(err.status, _error_body(err.message), headers=list(err.headers))
        except MilepostError as err:
            reply = Reply(HTTP_STATUS.get(err.code, 500), _error_body(err.message))
        except Exception:  # noqa: BLE001 - our bug: a generic answer, the traceback logged
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            reply = Reply(500, _error_body(f"internal error in {scope['method']} {scope['path']}; see the server log"))
        finally:
            self._receiving -= hold.size
        await send({
            "type": "http.response.start", "status": reply.status,
            "headers": [(b"content-type", reply.content_type), (b"content-length", b"%d" % len(reply.body)), *reply.headers],
        })
        await send({"type": "http.response.body", "body": reply.body})

    # ---- bounds ----
    def _reserve(self, hold: _Hold, size: int) -> None:
        """Hold ``size`` more bytes of the receiving budget for a request (ResourceExhausted when it is spent)."""
        if self._receiving and self._receiving + size > self._max_receiving:
            raise ResourceExhausted(
                f"this agent is receiving and serving {self._receiving} bytes of requests (limit "
                f"{self._max_receiving}, max_inflight_bytes); retry with backoff or on another replica"
            )
        self._receiving += size
        hold.size += size

    async def _body(self, receive: Callable[[], Awaitable[dict[str, Any]]], hold: _Hold) -> bytes:
        """The whole body; one sent without a Content-Length grows its hold as it arrives."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(499, "the client went away before its request arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            if size > hold.size:
                self._reserve(hold, size - hold.size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # ---- inference ----
    def _infer(self, call: _Call, headers: dict[bytes, bytes], body: bytes) -> Reply:
        size = len(body)
        if must_not_block() and (size > self.core.inline_max_bytes or headers.get(b"content-encoding")):
            refuse_blocking("a large or compressed body is parsed on a worker")
        body = _decompressed(body, headers.get(b"content-encoding", b""), self.max_body_bytes)
        header_length = headers.get(HEADER_LENGTH.encode())
        parsed = rest_tensors.parse(body, header_length.decode("latin-1") if header_length is not None else None)
        deadline = deadlines.after(parsed.timeout_s)

        def encode(served: InferenceResponse | MatrixServed) -> Reply:
            content, header_size = rest_tensors.render(response_of(call.model, parsed.id, served, parsed.requested),
                                                       parsed)
            if header_size is None:
                return Reply(200, content)
            return Reply(200, content, b"application/octet-stream", [(HEADER_LENGTH.encode(), b"%d" % header_size)])

        # The matrix lane (DataPlane.serve_matrix) for the common body; a body it cannot read is
        # read again by decode, below, so that its error comes where gRPC's would.
        try:
            message = rest_tensors.to_protobuf(parsed, call.model, call.version)
        except InvalidArgument:
            message = None
        X = tensor_codec.raw_matrix(message, self._max_batch_rows) if message is not None else None
        if X is not None and parsed.requested is None:
            answered = self.core.serve_matrix(call.model, X, parsed.parameters, encode, size_bytes=max(size, len(body)),
                                              deadline=deadline, request_id=parsed.id, version=call.version)
            if answered is not None:
                return answered
        request = InferenceRequest(
            name=call.model,
            decode=lambda schema: tensor_codec.decode_inputs(
                message if message is not None else rest_tensors.to_protobuf(parsed, call.model, call.version),
                schema, max_rows=self._max_batch_rows, raw_label=rest_tensors.BINARY_DATA),
            version=call.version,
            parameters=parsed.parameters,
            deadline=deadline,
            size_bytes=max(size, len(body)),
            request_id=parsed.id,
            trace=tracing.from_headers(headers),
        )
        return self.core.serve(request, encode)


def _on_loop(handler: Callable[[_Call, dict[bytes, bytes], bytes], Reply], call: _Call, headers: dict[bytes, bytes],
             body: bytes) -> Reply | None:
    """The handler's reply when it can be given on the event loop (milepost.core.inline), else None."""
    try:
        with on_event_loop():
            return handler(call, headers, body)
    except WouldBlock:
        return None


# ---------------------------------------------------------------------------
# Paths


def _route(raw_path: bytes, http_method: str) -> _Call:
    """The call a path and method stand for; HttpError 404 or 405 when none."""
    path = raw_path.decode("latin-1").split("?", 1)[0]
    call = _call_of([unquote(p) for p in path.strip("/").split("/")])
    if call is None:
        raise HttpError(404, f"no such path {shown(path)}; this agent serves the Open Inference Protocol under /v2 "
                             "(/v2/health/live, /v2/models/NAME, /v2/models/NAME/infer, ...)")
    if http_method != call.http_method:
        raise HttpError(405, f"{path} takes {call.http_method}, not {http_method}",
                        ((b"allow", call.http_method.encode()),))
    return call


_SERVER_PATHS = {("v2",): "ServerMetadata", ("v2", "health", "live"): "ServerLive",
                 ("v2", "health", "ready"): "ServerReady", ("v2", "models", "stats"): "ModelStatistics"}
_MODEL_ACTIONS = {"ready": ("ModelReady", "GET"), "infer": ("ModelInfer", "POST"), "config": ("ModelConfig", "GET"),
                  "stats": ("ModelStatistics", "GET")}


def _call_of(parts: list[str]) -> _Call | None:
    server = _SERVER_PATHS.get(tuple(parts))
    if server is not None:
        return _Call(server, "GET")
    if len(parts) < 3 or parts[:2] != ["v2", "models"] or not parts[2]:
        return None
    model, version, rest = parts[2], "", parts[3:]
    if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
        version, rest = rest[1], rest[2:]
    if not rest:
        return _Call("ModelMetadata", "GET", model, version)
    if len(rest) == 1 and rest[0] in _MODEL_ACTIONS:
        method, http_method = _MODEL_ACTIONS[rest[0]]
        return _Call(method, http_method, model, version)
    return None


# ---------------------------------------------------------------------------
# Bodies


def _declared_length(headers: dict[bytes, bytes], limit: int) -> int:
    text = headers.get(b"content-length")
    if text is None:
        return 0  # chunked: reserved as it arrives
    try:
        size = int(text)
    except ValueError as err:
        raise HttpError(400, f"Content-Length {shown(text.decode('latin-1'))} is not a number") from err
    if size > limit:
        raise _too_large(limit)
    return size


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"the request body is larger than this agent takes ({limit} bytes); split the request")


def _decompressed(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A body sent with Content-Encoding gzip or deflate (as tritonclient compresses), at most ``limit`` bytes."""
    if encoding in (b"", b"identity"):
        return body
    if encoding not in (b"gzip", b"deflate"):
        raise HttpError(415, f"Content-Encoding {shown(encoding.decode('latin-1'))} is not supported: use gzip, "
                             "deflate or none")
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # zlib or gzip framing, told by its header
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error as err:
        raise InvalidArgument(f"the request body is not valid {encoding.decode()} data: {err}") from err
    if len(out) > limit or inflate.unconsumed_tail:
        raise _too_large(limit)
    return out


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _ready_reply(ready: bool) -> Reply:
    return json_reply({"ready": ready}, 200 if ready else 503)


def _message_reply(message: Message) -> Reply:
    """A protobuf answer as the JSON Triton gives: field names as in the proto, every field, numbers as numbers."""
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    return json_reply(_numbers(message.DESCRIPTOR, value))


def _numbers(descriptor: Descriptor, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with the 64-bit integers that protobuf's JSON writes as strings written as numbers."""
    for f in descriptor.fields:
        if f.name not in value:
            continue
        item = value[f.name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            if inner.message_type is not None:
                for entry in item.values():
                    _numbers(inner.message_type, entry)
        elif f.message_type is not None:
            for entry in item if isinstance(item, list) else [item]:
                _numbers(f.message_type, entry)
        elif f.type in _INT64:
            value[f.name] = [int(i) for i in item] if isinstance(item, list) else int(item)
    return value


async def _lifespan(receive: Callable[[], Awaitable[dict[str, Any]]], send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The ASGI lifespan protocol, for servers that send it: nothing to set up or tear down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
