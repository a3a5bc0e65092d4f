"""How every process logs: plain text for people, or one JSON object a line for log pipelines.

``configure`` is called once by the CLI (``--log-format json|text``, ``--log-level``, or the
settings of those names). A text line reads ``TIME LEVEL COMPONENT [request_id=ID]: MESSAGE``,
the bracket only where there is a request id. A JSON line carries ``time`` (ISO 8601, UTC), ``level``,
``component`` (the logger: milepost.agent, milepost.coordinator, ...), ``message``, the
``request_id`` of the inference request being served when there is one (``request_id``
below, set by the data plane around each call), and ``error`` with the traceback when the
line reports an exception, so no traceback ever spreads over several lines of the log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s"

# The id of the request the current thread or task serves (OIP ModelInferRequest.id).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("milepost_request_id", default="")


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with `` [request_id=ID]`` after the component while a request is served."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A copy with the one attribute more: the record itself stays as other handlers see it.
        current = request_id.get()
        return super().formatMessage(logging.makeLogRecord(
            {**record.__dict__, "request": f" [request_id={current}]" if current else ""}))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current:
            line["request_id"] = current
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Log to standard error at ``level`` in ``fmt`` (replacing what was configured before)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
