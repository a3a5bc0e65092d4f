"""Serving a request on the event loop that received it, when that costs less than a thread hop.

A small request to a model hosted here takes ~15-30 us to score; handing it from a server's
event loop to a worker thread and back costs more than that (two GIL hand-offs, a futex
wake-up each, and under load ~half the agent's CPU). So a front end may first run a handler
on its event loop, inside ``on_event_loop()``: code that would have to block there (wait for
another request's batch, call another agent, score a large batch) calls ``refuse_blocking``
instead, which raises WouldBlock, and the front end runs the handler again on a worker, where
it may block. Nothing a handler did before refusing may be visible: refusals come before a
request is admitted or decoded, or from the model before it has scored anything.

WouldBlock derives from BaseException, not Exception, for the reason GeneratorExit does: it
is control flow, and the ``except Exception`` of error mapping and statistics must not take
it for a failure of the request.
"""

from __future__ import annotations

import contextvars

_on_loop = contextvars.ContextVar("milepost_on_event_loop", default=False)


class WouldBlock(BaseException):  # noqa: N818 - a control-flow signal (like GeneratorExit), not an error
    """The handler would have to block on the event loop; run it on a worker instead."""


def must_not_block() -> bool:
    """Whether the caller runs on an event loop (inside ``on_event_loop``) and must not block."""
    return _on_loop.get()


def refuse_blocking(why: str) -> None:
    """Raise WouldBlock (``why`` says what would block) when running on an event loop."""
    if _on_loop.get():
        raise WouldBlock(why)


class on_event_loop:  # noqa: N801 - used as a function: ``with on_event_loop():``
    """Mark the code inside as running on an event loop, where it must not block.

    A class rather than a generator context manager: every small request enters one, and
    this costs a third of what ``contextlib.contextmanager`` does."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _on_loop.set(True)

    def __exit__(self, *exc: object) -> None:
        _on_loop.reset(self._token)
