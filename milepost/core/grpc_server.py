"""How every Milepost gRPC server is built and run: limits, error mapping, identities, and which
thread does what.

Why asyncio. grpc's sync server reads a request inside the worker thread that then runs its
handler, so a client that sends a large request slowly, or stalls mid-message, holds a worker
for as long as it likes: 16 such clients and every other caller waits (the data plane answers
DEADLINE_EXCEEDED, the coordinator misses heartbeats and declares agents lost). A ``grpc.aio``
server reads requests on its event loop; a handler is given a worker only once its request
has arrived whole, so a slow upload holds none.

Which thread runs what:
- the process's one event loop (a thread of its own, shared by every server in the process):
  receiving, decoding and sending messages. One loop, not one per server: grpc.aio delivers
  the completions of all servers through one poller, and with two loops (the coordinator and
  the agent of `milepost up`) each woke for the other's calls, which doubled the CPU time of
  a request and halved the throughput of an empty handler at 8 concurrent calls. It is
  uvloop's where installed (milepost.core.event_loops);
- ``calls`` workers: handlers of unary requests with one response (ModelInfer, Heartbeat...);
- ``streams`` workers: handlers that read a request stream or write a response stream. Such a
  handler waits on its worker between messages (it pulls requests from an iterator, or blocks
  before its next yield), so streams have workers of their own and never hold one a unary call
  needs; and each message of a request stream must arrive within the ``stream_idle_timeout_s``
  setting, else the call ends with DEADLINE_EXCEEDED and a stalled upload frees its worker.

Handlers and the two interceptors stay sync (grpc.ServicerContext, grpc.ServerInterceptor). They
are applied to each method's handler once, as services are added (they depend on the method,
not the call), and what they return runs on the workers, with a context that keeps the sync
server's promises (is_active, add_callback, abort...). No aio interceptor runs per call: one
cost a coroutine, a future and a task switch on every request.

Methods named in ``inline_methods`` (the agent's ModelInfer) are first run on the event loop
itself, inside milepost.core.inline.on_event_loop: a small request to a model hosted here is
scored there, without the two thread hops that would cost more than the scoring. Where the
handler would block it raises WouldBlock first, and it runs on a worker as any other call.

A unary handler may answer with its message already serialized (bytes): it is sent as it is.

Listening (with or without TLS) is milepost.core.tls.listen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from milepost.core.auth import AuthInterceptor
from milepost.core.errors import DeadlineExceeded
from milepost.core.event_loops import new_event_loop
from milepost.core.grpc_errors import ErrorMappingInterceptor
from milepost.core.handlers import Behaviour, rewrap
from milepost.core.inline import WouldBlock, on_event_loop
from milepost.core.settings import get_settings

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
_END = object()  # what a stream gives when it has no more messages
log = logging.getLogger("milepost.grpc")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _process_loop() -> asyncio.AbstractEventLoop:
    """The event loop every gRPC server of this process runs on, started at first use."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = new_event_loop()
            threading.Thread(target=_loop.run_forever, name="grpc-loop", daemon=True).start()
        return _loop


def new_server(
    auth: AuthInterceptor, *, max_workers: int = 16, max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    inline_methods: frozenset[str] = frozenset(),
) -> Server:
    """A server whose calls are checked by ``auth`` and whose oversized messages get
    RESOURCE_EXHAUSTED from gRPC itself. The error mapping is outermost, so refusals
    and every error inside become their status. ``inline_methods`` (full method names) are
    tried on the event loop first (see the module docstring)."""
    return Server(
        [ErrorMappingInterceptor(), auth], max_workers=max_workers,
        stream_idle_timeout_s=get_settings().stream_idle_timeout_s, inline_methods=inline_methods,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )


class Server(grpc.Server):
    """A grpc.aio server on an event loop in a thread of its own, used as a sync grpc.Server is:
    add services and ports, ``start()``, ``stop(grace).wait()``.

    ``interceptors`` are sync, the first outermost (as grpc.server takes them). At most
    ``max_workers * 8`` calls are under way at once, counting those still arriving; past that,
    RESOURCE_EXHAUSTED at once."""

    def __init__(
        self, interceptors: Sequence[grpc.ServerInterceptor], *, max_workers: int, stream_idle_timeout_s: float,
        options: Sequence[tuple[str, Any]], inline_methods: frozenset[str] = frozenset(),
    ) -> None:
        self._calls = ThreadPoolExecutor(max_workers, thread_name_prefix="grpc")
        self._streams = ThreadPoolExecutor(max_workers, thread_name_prefix="grpc-stream")
        self._loop = _process_loop()
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._on_threads = _OnThreads(interceptors, self._calls, self._streams, stream_idle_timeout_s, inline_methods)

        async def build() -> Any:  # an aio server belongs to the loop it is made on
            return grpc.aio.server(migration_thread_pool=self._calls, options=options,
                                   maximum_concurrent_rpcs=max_workers * 8)

        self._server = self._wait(build())

    def _wait(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self._server.add_generic_rpc_handlers([_Generic(h, self._on_threads) for h in generic_rpc_handlers])

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        """Only ``inline_methods`` are registered with grpc; the others are served by the generic
        handler that the generated code adds beside them. grpc.aio waits on one pending call per
        registered method, all of them at every call: with the agent's ~20 methods registered that
        wait cost more than the rest of grpc's Python per call."""
        hot = {name: handler for name, handler in method_handlers.items()
               if f"/{service_name}/{name}" in self._on_threads.inline}
        if hot:
            self._server.add_registered_method_handlers(service_name, {
                name: self._on_threads.wrap(f"/{service_name}/{name}", handler) for name, handler in hot.items()
            })

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._server.add_secure_port(address, server_credentials))

    def start(self) -> None:
        self._wait(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Take no new calls, cancel those still running after ``grace`` seconds (None: at once);
        the event is set once the server and its workers are released."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                asyncio.run_coroutine_threadsafe(self._shutdown(grace), self._loop)
        return self._stopped

    async def _shutdown(self, grace: float | None) -> None:
        try:
            await self._server.stop(grace)
            # A call whose handler was still on a worker may outlive the server: end its task too.
            leftover = list(self._on_threads.calls)
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        finally:
            for pool in (self._calls, self._streams):
                pool.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Whether ``timeout`` passed before the server stopped."""
        return not self._stopped.wait(timeout)


class _MethodDetails(grpc.HandlerCallDetails):
    """What the sync interceptors are shown of a method when its handler is wrapped (no call yet)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Generic(grpc.GenericRpcHandler):
    """A generic handler whose handlers are wrapped by _OnThreads, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, on_threads: _OnThreads) -> None:
        self._inner, self._on_threads = inner, on_threads
        self._handlers: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method not in self._handlers:
            handler = self._inner.service(handler_call_details)
            self._handlers[method] = None if handler is None else self._on_threads.wrap(method, handler)
        return self._handlers[method]


class _OnThreads:
    """Applies the sync interceptors to a method's handler and runs what they return on the
    workers (or first on the loop, for ``inline_methods``)."""

    def __init__(
        self, interceptors: Sequence[grpc.ServerInterceptor], calls: ThreadPoolExecutor, streams: ThreadPoolExecutor,
        stream_idle_timeout_s: float, inline_methods: frozenset[str] = frozenset(),
    ) -> None:
        self._interceptors = list(interceptors)
        self._calls, self._streams = calls, streams
        self._idle_s = stream_idle_timeout_s
        self.inline = inline_methods
        self.calls: set[asyncio.Task] = set()  # the tasks of this server's calls under way, to end at its stop

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Keep the running call's task in ``calls`` while it waits for a worker."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self.calls.add(task)
        try:
            yield
        finally:
            self.calls.discard(task)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        """``handler`` of ``method`` (its full name) as the server runs it; None: UNIMPLEMENTED."""
        details = _MethodDetails(method)
        for interceptor in reversed(self._interceptors):  # the innermost wraps first
            if handler is None:
                return None
            handler = interceptor.intercept_service(lambda _details, inner=handler: inner, details)
        if handler is None:
            return None
        return self._on_threads(handler, method.rsplit("/", 1)[-1], inline=method in self.inline)

    def _on_threads(self, handler: grpc.RpcMethodHandler, method: str, *, inline: bool) -> grpc.RpcMethodHandler:
        pool = self._streams if handler.request_streaming or handler.response_streaming else self._calls
        idle_s = self._idle_s
        inline = inline and not (handler.request_streaming or handler.response_streaming)

        def requests(request: Any, loop: asyncio.AbstractEventLoop) -> Any:
            return _pulled(request, loop, idle_s, method) if handler.request_streaming else request

        def unary(fn: Behaviour) -> Behaviour:
            async def run(request: Any, context: Any) -> Any:
                loop = asyncio.get_running_loop()
                if inline:
                    try:
                        with on_event_loop():
                            return fn(request, _LoopContext(context, loop))
                    except WouldBlock:
                        pass  # on a worker, below
                    except _AbortOnLoop as abort:
                        await context.abort(abort.code, abort.details)
                sync = _SyncContext(context, loop)
                with self._counted():
                    return await loop.run_in_executor(
                        pool, contextvars.copy_context().run, fn, requests(request, loop), sync)

            return run

        def stream(fn: Behaviour) -> Behaviour:
            async def run(request: Any, context: Any) -> AsyncIterator[Any]:
                loop = asyncio.get_running_loop()
                cv = contextvars.copy_context()  # one context for every step: the steps may run on different workers
                # Both interceptors wrap streams in generator functions: calling one runs nothing yet.
                responses = iter(cv.run(fn, requests(request, loop), _SyncContext(context, loop)))
                step: concurrent.futures.Future | None = None
                finished = False
                with self._counted():
                    try:
                        while True:
                            step = pool.submit(cv.run, _following, responses)
                            response = await asyncio.wrap_future(step)
                            if response is _END:
                                finished = True
                                return
                            yield response
                    finally:
                        if not finished:
                            _close_after(responses, step, pool, cv)

            return run

        return rewrap(handler, unary, stream, response_serializer=_passing_bytes(handler.response_serializer))


def _passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """``serializer``, except that an answer already serialized (bytes) is sent as it is: how a
    handler answers from bytes it built (the agent's matrix lane, agent.grpc_inference)."""
    if serializer is None:
        return None

    def serialize(message: Any) -> bytes:
        return message if message.__class__ is bytes else serializer(message)

    return serialize


def _pulled(requests: Any, loop: asyncio.AbstractEventLoop, idle_s: float, method: str) -> Iterator[Any]:
    """A request stream as a sync handler on a worker reads it: each message must arrive within ``idle_s``."""
    while True:
        arriving = asyncio.run_coroutine_threadsafe(_next(requests), loop)
        try:
            message = arriving.result(timeout=idle_s)
        except concurrent.futures.TimeoutError:
            # The read stays pending; ending the call (the error's status) completes it.
            raise DeadlineExceeded(
                f"{method}: no request message arrived for {idle_s:g} s (stream_idle_timeout_s); "
                "a stalled stream is ended so that it holds no worker"
            ) from None
        if message is _END:
            return
        yield message


async def _next(requests: Any) -> Any:
    return await anext(requests, _END)


def _following(responses: Iterator[Any]) -> Any:
    return next(responses, _END)


def _close_after(responses: Iterator[Any], step: concurrent.futures.Future | None, pool: ThreadPoolExecutor,
                 cv: contextvars.Context) -> None:
    """Close a response generator the call left early (the client went away), on a worker and in
    its own context, once the step still running on it is over."""
    close = getattr(responses, "close", None)
    if close is None:
        return

    def submit(_step: object = None) -> None:
        try:
            pool.submit(cv.run, close)
        except RuntimeError:
            pass  # the server has stopped: its workers take no more work

    if step is None or step.done():
        submit()
    else:
        step.add_done_callback(submit)


class _AbortOnLoop(Exception):  # noqa: N818 - the handler's abort(), carried out to the loop's wrapper
    """A handler running on the event loop called abort(): the wrapper awaits the real abort."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _SyncContext(grpc.ServicerContext):
    """The sync server's context of a call, for its handler on a worker, over the call's aio context.

    What waits on the call (abort, initial metadata) is done on the loop; callbacks given to
    ``add_callback`` run on the loop when the call ends, however it ends. A handler running on
    the loop itself cannot wait for the loop: its abort is raised to the wrapper, which awaits
    it, and sending initial metadata sends it to a worker."""

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._context, self._loop = context, loop
        self._lock = threading.Lock()
        self._ended = False
        self._callbacks: list[Callable[[], object]] = []
        context.add_done_callback(self._end)

    def _end(self, _context: object) -> None:
        with self._lock:
            self._ended, callbacks, self._callbacks = True, self._callbacks, []
        for callback in callbacks:
            _run_callback(callback)

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _on_this_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # ---- the call ----
    def is_active(self) -> bool:
        return not self._ended and not self._context.done()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def add_callback(self, callback: Callable[[], object]) -> bool:
        with self._lock:
            if self._ended:
                return False
            self._callbacks.append(callback)
            return True

    def cancel(self) -> None:
        asyncio.run_coroutine_threadsafe(_quietly(self._context.abort(grpc.StatusCode.CANCELLED, "cancelled")),
                                         self._loop)

    # ---- who calls ----
    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._context.peer_identity_key()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    # ---- the answer ----
    def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self._on_this_loop():
            raise WouldBlock("sending initial metadata waits for the event loop")
        self._on_loop(self._context.send_initial_metadata(initial_metadata))

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._context.set_trailing_metadata(trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if self._on_this_loop():
            self._context.set_code(code)  # what _already_aborted sees, as after a real abort
            raise _AbortOnLoop(code, details)
        self._on_loop(self._context.abort(code, details))  # raises, as the sync server's abort does

    def abort_with_status(self, status: Any) -> None:
        if self._on_this_loop():
            raise WouldBlock("abort_with_status waits for the event loop")
        self._on_loop(self._context.abort(status.code, status.details, tuple(status.trailing_metadata or ())))

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def code(self) -> grpc.StatusCode | None:
        return self._context.code()

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def details(self) -> str:
        return self._context.details()

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()


class _LoopContext(_SyncContext):
    """The context of a call whose handler runs on the loop itself (``inline_methods``): while it
    runs the call cannot end, so nothing is registered for its end unless the handler asks
    (``add_callback``), and there is no lock (one thread). Most small requests take this one."""

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._context, self._loop = context, loop

    def is_active(self) -> bool:
        return not self._context.done()

    def add_callback(self, callback: Callable[[], object]) -> bool:
        self._context.add_done_callback(lambda _context: _run_callback(callback))
        return True


def _run_callback(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - one callback's failure must not skip the others
        log.exception("callback at the end of a call failed")


async def _quietly(abort: Coroutine[Any, Any, Any]) -> None:
    try:
        await abort
    except Exception:  # noqa: BLE001 - abort raises once it has ended the call; nothing waits on it here
        pass
