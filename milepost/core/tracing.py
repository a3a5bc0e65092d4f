"""OpenTelemetry traces, an optional extra (``pip install 'milepost[otel]'``), free when off.

A server calls ``start(service_name)`` once; with the ``tracing`` setting (MILEPOST_TRACING)
``otlp`` (spans batched to the OTLP/gRPC collector the standard OTEL_EXPORTER_OTLP_* variables
name; default localhost:4317) or ``console`` (each span printed to standard output) it sets up
a TracerProvider whose resource is ``service.name`` = that name. ``off``, the default, leaves
tracing as it was: off, unless a program installed a provider itself (``use``, what tests do).

Everything on the hot path goes through this module, so that agent/ and engines/ never import
OpenTelemetry and pay nothing for it when it is off: a hot call site tests ``enabled()`` (one
module global, about 20 ns) and only then opens its span and sets its attributes; nothing is made
or read otherwise. Off, ``span`` itself returns one shared no-op span (``NO_SPAN``), and
``from_grpc``, ``outgoing`` and ``bind`` return at once.

Context crosses processes as W3C ``traceparent`` (and ``tracestate``): ``outgoing`` gives the
gRPC metadata a call to another agent carries, ``from_grpc`` and ``from_headers`` read it from a
caller (a client's, or another agent's), and the request's spans are its children. Work handed to
a thread pool keeps its parent through ``bind``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from milepost.core.errors import FailedPrecondition

MODES = ("off", "otlp", "console")
INSTALL_HINT = "pip install 'milepost[otel]'"
_CARRIED = ("traceparent", "tracestate")  # the W3C trace context headers a request may carry
T = TypeVar("T")


class _NoSpan:
    """What ``span`` gives when tracing is off: a context manager and span that do nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: object) -> None:
        return None


NO_SPAN = _NoSpan()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on; None: off
_provider: Any = None
_started: dict[str, Any] = {}  # service name -> the provider ``start`` made for it


def enabled() -> bool:
    """Whether spans are recorded now."""
    return _tracer is not None


def span(name: str, parent: object = None) -> Any:
    """A span named ``name`` as a context manager giving the span (current while it is open; an
    exception leaving it sets its status to ERROR and is recorded on it); its parent is
    ``parent`` (a context from ``from_grpc`` / ``from_headers``) or else the current span.
    ``NO_SPAN`` when tracing is off."""
    if _tracer is None:
        return NO_SPAN
    return _tracer.start_as_current_span(name, context=parent)


def from_grpc(context: Any) -> object:
    """The trace context a gRPC caller sent in its metadata (None when it sent none, or when off)."""
    if _tracer is None:
        return None
    return _extract({m.key: m.value for m in context.invocation_metadata() or () if m.key in _CARRIED})


def from_headers(headers: Mapping[bytes, bytes]) -> object:
    """The trace context an HTTP caller sent in its headers (None when it sent none, or when off)."""
    if _tracer is None:
        return None
    return _extract({k: headers[k.encode()].decode("latin-1") for k in _CARRIED if k.encode() in headers})


def _extract(carrier: dict[str, str]) -> object:
    if not carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def outgoing() -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata carrying the current span to the callee (``traceparent``); None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return tuple(carrier.items()) or None


def bind(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, run later on another thread as a child of the span current now (``fn`` itself when off)."""
    if _tracer is None:
        return fn
    from opentelemetry import context as otel_context

    captured = otel_context.get_current()

    def bound(*args: Any, **kwargs: Any) -> T:
        token = otel_context.attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return bound


def finished(name: str, duration_ns: int, attributes: Mapping[str, str | int | float | bool], error: str = "") -> None:
    """Record a span that ended just now after ``duration_ns`` (a wait measured as it happened),
    a child of the current span; ``error`` sets its status to ERROR with that message."""
    if _tracer is None:
        return
    from opentelemetry.trace import Status, StatusCode

    now = time.time_ns()
    done = _tracer.start_span(name, start_time=now - duration_ns, attributes=attributes)
    if error:
        done.set_status(Status(StatusCode.ERROR, error))
    done.end(end_time=now)


# ---- turning it on ----
def start(service_name: str, mode: str | None = None) -> None:
    """Set tracing up for this process as the ``tracing`` setting (or ``mode``) says; ``off``
    changes nothing. Servers of one name in one process share a provider; a server of another
    name started later names the spans from then on: ``milepost up`` starts the coordinator, then
    the agent, whose spans (the requests') are then the agent's."""
    if mode is None:
        from milepost.core.settings import get_settings

        mode = get_settings().tracing
    if mode == "off" or (_provider is not None and _provider is _started.get(service_name)):
        return
    if mode not in MODES:
        raise FailedPrecondition(f"tracing (MILEPOST_TRACING) must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError as err:
        raise FailedPrecondition(
            f"tracing={mode} (MILEPOST_TRACING) needs OpenTelemetry, which is not installed: {INSTALL_HINT}"
        ) from err
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))  # stdout now
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as err:
            raise FailedPrecondition(
                f"tracing=otlp (MILEPOST_TRACING) needs the OTLP exporter, which is not installed: {INSTALL_HINT}"
            ) from err
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _started[service_name] = provider
    use(provider)
    _make_global()


def use(provider: Any) -> None:
    """Record spans with ``provider`` (an opentelemetry TracerProvider), or stop recording (None)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("milepost") if provider is not None else None


def _make_global() -> None:
    """Let code that traces through OpenTelemetry's global provider (a python code bundle) join
    our traces, unless the program set a provider of its own already. OpenTelemetry's global is
    set once per process: it is set to one that follows ``use``."""
    from opentelemetry import trace

    class Current(trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return (_provider or trace.NoOpTracerProvider()).get_tracer(*args, **kwargs)

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(Current())


def shutdown() -> None:
    """Flush the spans still buffered (a server stopping)."""
    for provider in {id(p): p for p in (_provider, *_started.values()) if hasattr(p, "force_flush")}.values():
        with contextlib.suppress(Exception):  # an unreachable collector must not fail a stop
            provider.force_flush(2000)


@contextlib.contextmanager
def recorded(provider: Any) -> Iterator[None]:
    """Record spans with ``provider`` inside the block, and as before after it (tests)."""
    before = _provider
    use(provider)
    try:
        yield
    finally:
        use(before)
